"""Generation with vLLM (`sample.backend: vllm`, `benchmark.backend: vllm`), in vLLM's own environment.

The stage tokenizes here, with the policy's chat template, exactly as the Hugging Face path does; the vLLM
environment's Python runs `alignloop/models/vllm_worker.py` on the saved policy directory with one engine for every
job of the stage, and exits (its memory is free before anything trains). What comes back is token ids, cut at the first
stop token as on the HF path, and the hash of the weights the engine loaded, which must be the policy's.

Seeds: each sampled request (one prompt, `n` responses) draws from its own seed, derived from the job's seed and the
prompt's id, so a response does not depend on which other prompts were in the batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from transformers import AutoConfig, GenerationConfig, PreTrainedTokenizerBase

from alignloop.config import Config
from alignloop.errors import InputError
from alignloop.models import vllm_worker  # imported only to be part of the stages' code version: it runs in vLLM's env
from alignloop.models.device import resolve_device
from alignloop.models.generation import (
    Generation,
    GenerationJob,
    check_prompt_lengths,
    config_positions,
    cut_at_stop,
    prompt_token_ids,
)
from alignloop.models.policy import policy_hash, stop_ids
from alignloop.models.vllm_env import vllm_python
from alignloop.paths import Layout
from alignloop.seeds import derive_seed

WORKER = Path(vllm_worker.__file__)
# The last run's seconds (engine start, each job), for benchmarks/sampling.py; never written to an artifact.
last_timings: dict = {}


class VllmError(RuntimeError):
    """vLLM could not run the stage's generation (its log names why)."""


class StalePolicyError(InputError):
    """The engine generated from other weights than the policy the stage depends on."""


def stop_ids_of(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The same stop tokens as the HF path: the generation config's EOS (one or several), then the tokenizer's."""
    try:
        configured = GenerationConfig.from_pretrained(model_dir).eos_token_id
    except OSError:  # no generation_config.json: the model config's EOS
        configured = AutoConfig.from_pretrained(model_dir).eos_token_id
    return stop_ids(configured, tokenizer)


def _job_request(job: GenerationJob, tokenizer, stop_ids: list[int], max_positions: int) -> dict:
    encoded = [prompt_token_ids(tokenizer, prompt) for prompt in job.prompts]
    check_prompt_lengths([len(ids) for ids in encoded], job.prompt_ids, max_positions)
    seeds = [-1 if job.greedy else derive_seed(job.seed, prompt_id) for prompt_id in job.prompt_ids]
    return {"prompt_token_ids": encoded, "greedy": job.greedy, "n": job.num_samples,
            "temperature": job.temperature, "top_p": job.top_p, "stop_token_ids": stop_ids,
            "seeds": [None if seed < 0 else seed for seed in seeds],
            "max_tokens": [min(job.max_new_tokens, max_positions - len(ids)) for ids in encoded]}


def vllm_generate(cfg: Config, root: Path, model_dir: Path, tokenizer: PreTrainedTokenizerBase,
                  jobs: list[GenerationJob]) -> list[list[list[Generation]]]:
    """Every job's generations (per prompt, per sample), from one vLLM engine on `model_dir`; the engine's log goes
    to the project's `.alignloop/logs/`."""
    python, model_dir, log_dir = vllm_python(cfg, root), Path(model_dir).resolve(), Layout(root).logs
    stop_ids = stop_ids_of(model_dir, tokenizer)
    max_positions = config_positions(AutoConfig.from_pretrained(model_dir), cfg.model.max_length)
    requests = [_job_request(job, tokenizer, stop_ids, max_positions) for job in jobs]
    device = resolve_device(cfg.model.device).type
    request = {"model": str(model_dir), "dtype": cfg.model.dtype, "max_model_len": max_positions,
               "device": device, "tensor_parallel_size": cfg.vllm.tensor_parallel_size,
               "gpu_memory_utilization": cfg.vllm.gpu_memory_utilization,
               "cpu_kv_cache_gib": cfg.vllm.cpu_kv_cache_gib, "max_num_seqs": cfg.vllm.max_num_seqs,
               "enforce_eager": device == "cpu" if cfg.vllm.enforce_eager is None else cfg.vllm.enforce_eager,
               "jobs": requests}
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-vllm-{model_dir.name}.log"
    with tempfile.TemporaryDirectory(prefix="alignloop-vllm-") as tmp:
        request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request_path.write_text(json.dumps(request))
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        with open(log_path, "w") as log:
            code = subprocess.run([str(python), str(WORKER), str(request_path), str(result_path)],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=_worker_env(env)).returncode
        if code != 0 or not result_path.is_file():
            raise VllmError(f"vLLM exited with code {code}: {_last_line(log_path)} (full log: {log_path})")
        result = json.loads(result_path.read_text())
    last_timings.clear()
    last_timings.update(result["seconds"])
    expected = policy_hash(model_dir)
    if result["weights"] != expected:
        raise StalePolicyError(f"vLLM generated from weights {result['weights']}, but the policy at {model_dir} is "
                               f"{expected}; nothing was written")
    return [_generations(request, outputs, tokenizer, set(stop_ids))
            for request, outputs in zip(requests, result["jobs"])]


def _worker_env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **{key: value for key, value in extra.items() if value}}


def _last_line(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _generations(request: dict, outputs: list[list[dict]], tokenizer, stop_ids: set[int]
                 ) -> list[list[Generation]]:
    results = []
    for seed, completions in zip(request["seeds"], outputs):
        gens = []
        for completion in completions:
            tokens, finished = cut_at_stop(completion["token_ids"], stop_ids)
            whole = len(tokens) == len(completion["token_ids"])  # the engine's log-prob covers exactly these tokens
            gens.append(Generation(tokenizer.decode(tokens, skip_special_tokens=True), tuple(tokens), finished,
                                   -1 if seed is None else seed, completion["logprob"] if whole else None))
        results.append(gens)
    return results
