"""Generation with vLLM, run by the vLLM environment's Python (never imported by alignloop itself).

    <vllm python> vllm_worker.py <request.json> <result.json>

It imports nothing from alignloop (that environment does not have it): the request carries pre-tokenized prompts and
every sampling setting, the result carries token ids, finish reasons and log-probs, plus the content hash of the
weights the engine loaded, computed the way `alignloop.models.policy.policy_hash` does, so the stage can check the
engine ran the policy it depends on. One engine serves every job of the request, then the process exits and frees
its memory before any training starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path


def weights_hash(model_dir: str) -> str:
    """sha256 over (file name, sha256 of content) of every *.safetensors file, in name order; first 16 hex digits."""
    digest = hashlib.sha256()
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        content = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                content.update(block)
        digest.update(file.name.encode() + b"\0" + content.hexdigest().encode())
    return digest.hexdigest()[:16]


def engine(request: dict):
    # In-process engine: no extra worker process to leak, and a faster start than the multiprocess one on CPU;
    # chunked prefill stays off because seeded sampling fails with it on vLLM's CPU build.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM

    options = {"model": request["model"], "skip_tokenizer_init": True, "dtype": request["dtype"],
               "seed": 0, "max_model_len": request["max_model_len"], "enable_chunked_prefill": False,
               "tensor_parallel_size": request["tensor_parallel_size"], "enforce_eager": request["enforce_eager"],
               "max_num_seqs": request["max_num_seqs"], "trust_remote_code": False}
    if request["device"] == "cpu":
        options["kv_cache_memory_bytes"] = int(request["cpu_kv_cache_gib"] * (1 << 30))
    else:
        options["gpu_memory_utilization"] = request["gpu_memory_utilization"]
    return LLM(**options)


def run_job(llm, job: dict) -> list[list[dict]]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    greedy = job["greedy"]
    params = [SamplingParams(n=1 if greedy else job["n"], temperature=0.0 if greedy else job["temperature"],
                             top_p=1.0 if greedy else job["top_p"], seed=seed,
                             max_tokens=max_tokens, stop_token_ids=job["stop_token_ids"], logprobs=0,
                             detokenize=False, skip_special_tokens=False)
              for seed, max_tokens in zip(job["seeds"], job["max_tokens"])]
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in job["prompt_token_ids"]]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [[{"token_ids": list(completion.token_ids), "finish_reason": completion.finish_reason,
              "logprob": completion.cumulative_logprob}
             for completion in sorted(output.outputs, key=lambda completion: completion.index)]
            for output in outputs]


def main(request_path: str, result_path: str) -> int:
    started = time.perf_counter()
    request = json.loads(Path(request_path).read_text())
    llm = engine(request)
    seconds = {"engine_start": time.perf_counter() - started, "jobs": []}
    jobs = []
    for job in request["jobs"]:
        begun = time.perf_counter()
        jobs.append(run_job(llm, job))
        seconds["jobs"].append(time.perf_counter() - begun)
    result = {"weights": weights_hash(request["model"]), "jobs": jobs, "seconds": seconds}
    tmp = Path(result_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
