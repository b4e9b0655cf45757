"""Sampling throughput of the backends, same policy, same prompts, same settings (N samples per prompt, the
policy's stop tokens), alternating on the same machine: Hugging Face generate (`hf`), alignloop's own decode loop
(`native`) and vLLM's engine (`vllm`).

    python benchmarks/sampling.py                      # a testbed policy it trains first (head width 32)
    python benchmarks/sampling.py --policy DIR --prompts prompts.jsonl --max-new-tokens 128 --top-p 0.95
    python benchmarks/sampling.py --backends hf native  # without the vLLM environment

Reported per backend: responses/s and new tokens/s over the generation itself, and for vLLM also including its
engine start (a stage pays it once). vLLM needs its environment (scripts/setup_vllm.sh); on a CPU-only machine its
CPU build is measured.
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
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--backends", nargs="+", default=["hf", "native", "vllm"], choices=["hf", "native", "vllm"])
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
                                        num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
                                        seed=0)
        runs: dict[str, list[dict]] = {backend: [] for backend in args.backends}
        for repeat in range(args.repeats):
            for backend in args.backends:
                start = time.perf_counter()
                if backend == "vllm":
                    [out] = vllm_engine.vllm_generate(cfg, Path(tmp), policy, tokenizer, [job])
                    seconds, with_start = vllm_engine.last_timings["jobs"][0], time.perf_counter() - start
                else:
                    out = generate(model, tokenizer, prompts, num_samples=args.num_samples,
                                   temperature=args.temperature, top_p=args.top_p,
                                   max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=repeat,
                                   prompt_ids=ids, max_length=cfg.model.max_length, description=f"{backend}",
                                   engine=backend)
                    seconds = with_start = time.perf_counter() - start
                tokens = sum(g.num_tokens for gens in out for g in gens)
                runs[backend].append({"seconds": round(seconds, 2), "seconds_with_start": round(with_start, 2),
                                      "responses": len(prompts) * args.num_samples, "tokens": tokens})
                print(f"repeat {repeat}: {backend} {runs[backend][-1]}", flush=True)

    def rate(backend: str, unit: str, key: str = "seconds") -> float:
        return statistics.mean(run[unit] / run[key] for run in runs[backend])

    table = {}
    for backend in args.backends:
        table[f"{backend} responses/s"] = rate(backend, "responses")
        table[f"{backend} new tokens/s"] = rate(backend, "tokens")
        if backend == "vllm":
            table["vllm new tokens/s incl. engine start"] = rate(backend, "tokens", "seconds_with_start")
    for backend in args.backends:
        if backend != "hf" and "hf" in runs:
            table[f"ratio {backend} / hf (tokens/s)"] = table[f"{backend} new tokens/s"] / table["hf new tokens/s"]
    print()
    for name, value in table.items():
        print(f"{name:<40} {value:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"policy": str(args.policy or "testbed"), "num_prompts": len(prompts),
                                    "num_samples": args.num_samples, "max_new_tokens": args.max_new_tokens,
                                    "temperature": args.temperature, "top_p": args.top_p,
                                    "runs": runs, "table": {k: round(v, 3) for k, v in table.items()}}, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
