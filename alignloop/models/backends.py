"""Generation behind one interface for the stages that generate (sample, benchmark): a list of `GenerationJob`s in,
each job's responses (per prompt, per sample) out, from `hf` (transformers' generate), `native` (alignloop's decode
loop, models/decoding.py) or `vllm` (one engine for all the jobs, in the vLLM environment; models/vllm_engine.py)."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignloop.config import Config
from alignloop.models.generation import Generation, GenerationJob, generate
from alignloop.models.policy import load_policy, load_tokenizer


def generate_jobs(cfg: Config, root: Path, source: Path, jobs: list[GenerationJob], backend: str, batch_size: int,
                  loaded: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None
                  ) -> list[list[list[Generation]]]:
    """Every job's generations from the policy at `source`. vLLM runs in its own process and loads the weights
    itself; hf and native use `loaded` (model, tokenizer) when the caller has the policy in memory already."""
    if backend == "vllm":
        from alignloop.models.vllm_engine import vllm_generate

        return vllm_generate(cfg, root, source, load_tokenizer(source, cfg.model), jobs)
    model, tokenizer = loaded if loaded is not None else load_policy(source, cfg.model)
    return [generate(model, tokenizer, job.prompts, num_samples=job.num_samples, greedy=job.greedy,
                     temperature=job.temperature, top_p=job.top_p, max_new_tokens=job.max_new_tokens,
                     batch_size=batch_size, seed=job.seed, prompt_ids=job.prompt_ids, max_length=cfg.model.max_length,
                     description=job.description, kv_cache=cfg.model.kv_cache, engine=backend)
            for job in jobs]
