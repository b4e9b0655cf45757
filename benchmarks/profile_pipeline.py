"""Where the default pipeline's time goes, stage by stage, against what the CPU can do.

Runs every stage of a params file in-process (no Prefect: `cache.run_stage` in plan order, in a fresh directory),
each under cProfile, and reports per stage:
- seconds (cProfile adds a few per cent; `benchmarks/pipeline_time.py` gives the unprofiled `alignloop run`);
- model tokens processed and tokens/s: SFT trains on every demonstration token each epoch; optimize trains on the
  prompt + chosen and prompt + rejected tokens of every pair each epoch, plus one reference pass; sampling and
  benchmarks count generated tokens (each forward of the decode loop) plus the prompt tokens of the prefill, and the
  benchmark's two scoring passes (policy and SFT) over its samples;
- the share of the matmul limit: useful FLOPs (6·N per trained token, 2·N per forward token, N the non-embedding
  parameters) over the stage's seconds, against the fp32 matmul peak measured here, in the same run;
- where the time goes, from cProfile's self time by the code it is spent in: forward (model code and the kernels it
  calls), backward (autograd), optimizer, KV cache, generation loop, tokenization, data collation, and the rest
  (Python and framework overhead: Trainer, Prefect-free orchestration, I/O).

    python benchmarks/profile_pipeline.py                      # ./params.yaml, a temporary directory
    python benchmarks/profile_pipeline.py --iterations 1 --out reports/profile.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import re
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

CATEGORIES = ("forward", "backward", "optimizer", "kv_cache", "generation", "tokenization", "collation", "other")
# (pattern in a function's file, category), first match wins; builtins take the category of their caller.
_FILE_RULES = (
    (r"torch/optim/", "optimizer"), (r"torch/autograd/", "backward"),
    (r"transformers/cache_utils", "kv_cache"), (r"transformers/generation/", "generation"),
    (r"tokenizers/|transformers/tokenization|jinja2/|chat_template", "tokenization"),
    (r"data_collator|torch/utils/data/|datasets/|trl/trainer/utils|alignloop/models/logprobs\.py", "collation"),
    (r"transformers/models/|transformers/modeling_|transformers/integrations/sdpa|transformers/masking_utils|"
     r"torch/nn/|transformers/activations|alignloop/testbed/model", "forward"),
)


def matmul_peak(seconds: float = 1.0) -> float:
    """fp32 matmul throughput in GFLOP/s, the best of several square sizes, on torch's default threads."""
    best = 0.0
    for n in (256, 512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 4:
            torch.mm(a, b)
            count += 1
        best = max(best, 2 * n**3 * count / (time.perf_counter() - start) / 1e9)
    return best


def _category(filename: str, name: str) -> str | None:
    if "run_backward" in name:
        return "backward"
    for pattern, category in _FILE_RULES:
        if re.search(pattern, filename.replace("\\", "/")):
            return category
    return None


def breakdown(profile: cProfile.Profile) -> dict[str, float]:
    """Self seconds per category; a builtin's self time goes to its callers' categories in proportion."""
    stats = pstats.Stats(profile).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    out: dict[str, float] = defaultdict(float)
    for (filename, _, name), (_, _, self_time, _, callers) in stats.items():
        own = _category(filename, name)
        if own is not None or filename != "~" or not callers:
            out[own or "other"] += self_time
            continue
        for (caller_file, _, caller_name), caller_stats in callers.items():
            out[_category(caller_file, caller_name) or "other"] += caller_stats[2]
    return {category: round(out.get(category, 0.0), 2) for category in CATEGORIES}


def non_embedding_parameters(policy_dir: Path) -> int:
    """N of the 6·N·D rule: every weight but the token and position embeddings and the output head."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(policy_dir / "model.safetensors"), "pt") as tensors:
        for key in tensors.keys():
            if not any(part in key for part in ("embed", "wte", "wpe", "lm_head")):
                total += tensors.get_tensor(key).numel()
    return total


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def token_work(cfg, layout, stage: str, iteration: int) -> tuple[int, int]:
    """(trained tokens, forward-only tokens) the stage pushed through the policy-sized model."""
    from alignloop.models.generation import prompt_token_ids
    from alignloop.models.policy import load_tokenizer

    if stage not in ("sft", "sample", "optimize", "benchmark"):
        return 0, 0
    tokenizer = load_tokenizer(layout.policy(0), cfg.model)
    prompt_length = {}

    def plen(prompt: str) -> int:
        if prompt not in prompt_length:
            prompt_length[prompt] = len(prompt_token_ids(tokenizer, prompt))
        return prompt_length[prompt]

    if stage == "sft":
        rows = _jsonl(layout.sft_data)
        per_epoch = sum(len(tokenizer.apply_chat_template(
            [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}],
            tokenize=True, return_dict=False)) for r in rows)
        return int(per_epoch * cfg.sft.epochs), 0
    if stage == "sample":
        samples = _jsonl(layout.samples(iteration))
        generated = sum(len(r["response_ids"]) for r in samples)
        prefill = sum(plen(r["prompt"]) for r in samples)
        return 0, generated + prefill
    if stage == "optimize":
        pairs = _jsonl(layout.pairs(iteration))
        tokens = sum(2 * plen(p["prompt"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
        return int(tokens * cfg.optimize.epochs), tokens  # + the reference's forward pass
    if stage == "benchmark":
        rows = _jsonl(layout.benchmark_outputs(iteration))
        greedy = sum(r.get("greedy_tokens", len(r["greedy"])) + plen(r["prompt"]) for r in rows)
        sampled = sum(len(s) + plen(r["prompt"]) for r in rows for s in r["sampled"])
        scoring = sampled * (2 if iteration else 1)  # entropy (and KL against SFT) passes over the samples
        return 0, greedy + sampled + scoring
    raise AssertionError(stage)


def profile_run(params: dict, workdir: Path) -> list[dict]:
    from alignloop.config import Config
    from alignloop.paths import Layout
    from alignloop.pipeline import cache
    from alignloop.pipeline.stages import plan

    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg, layout = Config.model_validate(params), Layout(workdir)
    rows = []
    for stage, iteration in plan(cfg):
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        cache.run_stage(stage.name, cfg, layout, iteration)
        profile.disable()
        seconds = time.perf_counter() - start
        trained, forward = token_work(cfg, layout, stage.name, iteration)
        rows.append({"stage": stage.name, "iteration": iteration, "seconds": round(seconds, 2),
                     "trained_tokens": trained, "forward_tokens": forward, "breakdown": breakdown(profile)})
        print(f"  {stage.key(iteration):<14}{seconds:8.1f} s", flush=True)
    return rows


def summarise(rows: list[dict], params_n: int, peak: float) -> list[dict]:
    by_stage: dict[str, dict] = {}
    for row in rows:
        entry = by_stage.setdefault(row["stage"], {"stage": row["stage"], "seconds": 0.0, "trained_tokens": 0,
                                                   "forward_tokens": 0, "breakdown": defaultdict(float)})
        entry["seconds"] += row["seconds"]
        entry["trained_tokens"] += row["trained_tokens"]
        entry["forward_tokens"] += row["forward_tokens"]
        for key, value in row["breakdown"].items():
            entry["breakdown"][key] += value
    out = []
    for entry in by_stage.values():
        tokens = entry["trained_tokens"] + entry["forward_tokens"]
        flops = 6 * params_n * entry["trained_tokens"] + 2 * params_n * entry["forward_tokens"]
        profiled = sum(entry["breakdown"].values()) or 1.0
        out.append({**entry, "seconds": round(entry["seconds"], 1),
                    "tokens_per_second": round(tokens / entry["seconds"]) if tokens else None,
                    "matmul_share": round(flops / entry["seconds"] / (peak * 1e9), 4) if tokens else None,
                    "breakdown": {k: round(v / profiled, 3) for k, v in entry["breakdown"].items()}})
    return sorted(out, key=lambda e: -e["seconds"])


def print_table(stages: list[dict], peak: float, params_n: int) -> None:
    print(f"\nmatmul peak {peak:.0f} GFLOP/s (fp32, {torch.get_num_threads()} threads); "
          f"N = {params_n:,} non-embedding parameters")
    short = {"forward": "fwd", "backward": "bwd", "optimizer": "optim", "kv_cache": "kv", "generation": "gen",
             "tokenization": "tok", "collation": "coll", "other": "other"}
    print(f"{'stage':<13}{'s':>7}{'tok/s':>9}{'of peak':>9}  " + "".join(f"{short[c]:>7}" for c in CATEGORIES))
    for entry in stages:
        tps = f"{entry['tokens_per_second']:,}" if entry["tokens_per_second"] else "-"
        share = f"{entry['matmul_share']:.1%}" if entry["matmul_share"] is not None else "-"
        print(f"{entry['stage']:<13}{entry['seconds']:>7.1f}{tps:>9}{share:>9}  "
              + "".join(f"{entry['breakdown'][c]:>7.0%}" for c in CATEGORIES))
    print(f"{'total':<13}{sum(e['seconds'] for e in stages):>7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iterations", type=int, help="override params' iterations (shorter profile)")
    parser.add_argument("--workdir", type=Path, help="run here and keep it (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=Path("reports/profile.json"))
    args = parser.parse_args()

    params = yaml.safe_load(args.params.read_text())
    if args.iterations is not None:
        params["iterations"] = args.iterations
    peak = matmul_peak()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="alignloop-profile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = profile_run(params, workdir)
        from alignloop.paths import Layout

        params_n = non_embedding_parameters(Layout(workdir).policy(0))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    peak_after = matmul_peak()
    stages = summarise(rows, params_n, max(peak, peak_after))
    print_table(stages, max(peak, peak_after), params_n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"matmul_peak_gflops": [round(peak, 1), round(peak_after, 1)],
                                    "non_embedding_parameters": params_n, "threads": torch.get_num_threads(),
                                    "stages": stages, "runs": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
