"""Sampling throughput: vLLM's engine against Hugging Face generate, same policy, same prompts, same settings
(N samples per prompt, temperature 1, the policy's stop tokens), alternating on the same machine.

    python benchmarks/sampling.py                      # a testbed policy it trains first (head width 32)
    python benchmarks/sampling.py --policy DIR --prompts prompts.jsonl --max-new-tokens 256   # your model

Reported per backend: responses/s over the generation itself, and for vLLM also including its engine start (a
stage pays it once). Needs the vLLM environment (scripts/setup_vllm.sh). On a CPU-only machine vLLM's CPU build is
measured; its advantage is on GPUs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import project_env

REPO = Path(__file__).resolve().parents[1]
ALIGNLOOP = str(Path(sys.executable).parent / "alignloop")
TESTBED = {"iterations": 0, "testbed": {"sft_examples": 3000, "prompt_pool_size": 2000, "eval_size": 24},
           "model": {"n_layer": 2, "n_embd": 64, "n_head": 2}, "sft": {"epochs": 2, "batch_size": 32},
           "benchmark": {"num_samples": 1}}


def testbed_policy(workdir: Path) -> tuple[Path, Path]:
    (workdir / "params.yaml").write_text(yaml.safe_dump(TESTBED, sort_keys=False))
    subprocess.run([ALIGNLOOP, "run"], cwd=workdir, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=project_env())
    return workdir / "artifacts" / "sft" / "model", workdir / "data" / "train_prompts.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, help="a saved policy directory (default: train a testbed one)")
    parser.add_argument("--prompts", type=Path, help="JSONL with `prompt` (and `prompt_id`) per line")
    parser.add_argument("--num-prompts", type=int, default=512)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=256, help="prompts per HF generate call")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/sampling.json"))
    args = parser.parse_args()

    from alignloop.config import Config
    from alignloop.models import vllm_engine
    from alignloop.models.generation import generate
    from alignloop.models.policy import load_policy

    with tempfile.TemporaryDirectory(prefix="alignloop-sampling-") as tmp:
        policy, prompts_file = (args.policy, args.prompts) if args.policy else testbed_policy(Path(tmp))
        rows = [json.loads(line) for line in prompts_file.read_text().splitlines()][: args.num_prompts]
        prompts = [row["prompt"] for row in rows]
        ids = [str(row.get("prompt_id", k)) for k, row in enumerate(rows)]
        # Only `model` (dtype, length cap) and `vllm` are read; the model's own position limit applies.
        cfg = Config.model_validate({"model": {"dtype": args.dtype, "max_length": 1 << 20}})
        model, tokenizer = load_policy(policy, cfg.model)
        job = vllm_engine.GenerationJob(prompts, ids, greedy=False, max_new_tokens=args.max_new_tokens,
                                        num_samples=args.num_samples, seed=0)
        runs: dict[str, list[dict]] = {"hf": [], "vllm": []}
        for repeat in range(args.repeats):
            start = time.perf_counter()
            out = generate(model, tokenizer, prompts, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                           batch_size=args.batch_size, seed=repeat, prompt_ids=ids, max_length=cfg.model.max_length,
                           description="hf generate")
            seconds = time.perf_counter() - start
            tokens = sum(g.num_tokens for gens in out for g in gens)
            runs["hf"].append({"seconds": round(seconds, 2), "responses": len(prompts) * args.num_samples,
                               "tokens": tokens})
            start = time.perf_counter()
            [out] = vllm_engine.vllm_generate(cfg, Path(tmp), policy, tokenizer, [job])
            total = time.perf_counter() - start
            tokens = sum(g.num_tokens for gens in out for g in gens)
            runs["vllm"].append({"seconds": round(vllm_engine.last_timings["jobs"][0], 2),
                                 "seconds_with_start": round(total, 2), "responses": len(prompts) * args.num_samples,
                                 "tokens": tokens})
            print(f"repeat {repeat}: hf {runs['hf'][-1]}, vllm {runs['vllm'][-1]}", flush=True)

    def rate(label: str, key: str = "seconds") -> float:
        return statistics.mean(run["responses"] / run[key] for run in runs[label])

    table = {"hf responses/s": rate("hf"), "vllm responses/s": rate("vllm"),
             "vllm responses/s incl. engine start": rate("vllm", "seconds_with_start")}
    table["ratio vllm / hf"] = table["vllm responses/s"] / table["hf responses/s"]
    table["ratio incl. engine start"] = table["vllm responses/s incl. engine start"] / table["hf responses/s"]
    print()
    for name, value in table.items():
        print(f"{name:<40} {value:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"policy": str(args.policy or "testbed"), "num_prompts": len(prompts),
                                    "num_samples": args.num_samples, "max_new_tokens": args.max_new_tokens,
                                    "runs": runs, "table": {k: round(v, 3) for k, v in table.items()}}, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
