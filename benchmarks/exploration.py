"""Online DPO vs COPO on the testbed: several seeds, params.yaml's budget; prints a table and writes JSON.

For each seed one project directory runs online DPO (`optimize.exploration: none`, the default, whose NLL anchor is
the constant-weight control COPO's ablation needs), then COPO (`exploration: copo`) at each α on top of it.
Everything up to iteration 1's ranking is shared through the cache.

    python benchmarks/exploration.py                         # seeds 0,1,2, params.yaml's α
    python benchmarks/exploration.py --seeds 0 --alphas 0.3,3,10

Columns: final greedy and sampled gold score per split (mean ± std over seeds), distinct (prompt, response) pairs
sampled over the run, in_distribution token entropy, and the cfn stage's share of each iteration's stage time.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from alignloop.config import Config, load_config
from alignloop.pipeline.stages import iteration_stages

from common import load_params, mean_std, run_pipeline

SPLITS = {"in_dist": "in_distribution", "harder": "harder", "unseen": "unseen_composition"}


def distinct_samples(workdir: Path, iterations: int) -> int:
    seen = set()
    for i in range(1, iterations + 1):
        for line in (workdir / "artifacts" / f"iter-{i}" / "samples.jsonl").read_text().splitlines():
            row = json.loads(line)
            seen.add((row["prompt"], row["response"]))
    return len(seen)


def cfn_share(summary: dict, cfg: Config) -> float | None:
    """cfn seconds / all stage seconds, over the iterations whose every stage ran in this run (iteration 1's
    sampling and ranking come from the DPO arm's cache, so it is left out)."""
    stages = summary["stages"]
    names = {i: iteration_stages(cfg, i) for i in range(1, cfg.iterations + 1)}
    full = [i for i, stage_names in names.items()
            if all(stages.get(f"{name}-{i}", {}).get("status") == "ran" for name in stage_names)]
    cfn = sum(stages[f"cfn-{i}"]["seconds"] for i in full)
    total = sum(stages[f"{name}-{i}"]["seconds"] for i in full for name in names[i])
    return cfn / total if total else None


def run_arm(workdir: Path, params: dict, seed: int, alpha: float | None) -> dict:
    """One arm on one seed: online DPO when `alpha` is None, else COPO at that α."""
    copo = alpha is not None
    optimize = {**params["optimize"], "exploration": "copo" if copo else "none",
                "copo_alpha": alpha if copo else 0.0}
    params = {**params, "seed": seed, "optimize": optimize}
    summary, seconds = run_pipeline(workdir, params)
    final = summary["iterations"][-1]["metrics"]
    iterations = params["iterations"]
    row = {"seed": seed, "copo": copo, "alpha": alpha, "seconds": seconds,
           "distinct_pairs": distinct_samples(workdir, iterations),
           "entropy": final["in_distribution/sampled_entropy"],
           "cfn_share": cfn_share(summary, load_config(workdir / "params.yaml")) if copo else None}
    for short, split in SPLITS.items():
        row[f"{short} greedy"] = final[f"{split}/greedy_gold"]
        row[f"{short} sampled"] = final[f"{split}/sampled_gold"]
    if copo:
        logs = [json.loads((workdir / "artifacts" / f"iter-{i}" / "train_log.json").read_text())["final"]
                for i in range(1, iterations + 1)]
        row["copo_term"] = [log["copo_term"] for log in logs]
        row["copo_bonus"] = [log["copo_bonus"] for log in logs]
    return row


def arm_name(alpha: float | None) -> str:
    return "dpo" if alpha is None else f"copo α={alpha:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--alphas", help="COPO's α values, comma-separated (default: params.yaml's copo_alpha)")
    parser.add_argument("--iterations", type=int, help="override params.yaml's iterations")
    parser.add_argument("--workdir", type=Path, default=Path("reports/exploration-workdir"))
    parser.add_argument("--out", type=Path, default=Path("reports/exploration.json"))
    args = parser.parse_args()

    params = load_params(args.params, args.iterations)
    alphas = ([float(a) for a in args.alphas.split(",")] if args.alphas
              else [float(params["optimize"].get("copo_alpha", 1.0))])
    arms = [None, *alphas]  # None: online DPO
    columns = [f"{short} {kind}" for short in SPLITS for kind in ("greedy", "sampled")]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for alpha in arms:
            row = run_arm(args.workdir / f"seed-{seed}", params, seed, alpha)
            rows.append(row)
            share = f"  cfn share {row['cfn_share']:.1%}" if row.get("cfn_share") is not None else ""
            print(f"seed {seed} {arm_name(alpha):<13} " + "  ".join(f"{c} {row[c]:.3f}" for c in columns)
                  + f"  distinct {row['distinct_pairs']}  entropy {row['entropy']:.3f}{share}"
                  + f"  ({row['seconds']:.0f} s)", flush=True)

    print(f"\n{'arm':<13}" + "".join(f"{c:>17}" for c in columns) + f"{'distinct pairs':>18}{'entropy':>16}")
    for alpha in arms:
        arm = [row for row in rows if row["alpha"] == alpha]
        print(f"{arm_name(alpha):<13}" + "".join(f"{mean_std([r[c] for r in arm]):>17}" for c in columns)
              + f"{statistics.mean(r['distinct_pairs'] for r in arm):>18.0f}"
              + f"{mean_std([r['entropy'] for r in arm]):>16}")
    shares = [row["cfn_share"] for row in rows if row.get("cfn_share") is not None]
    if shares:
        print(f"cfn stage: {statistics.mean(shares):.1%} of the iterations' stage time "
              f"(range {min(shares):.1%}–{max(shares):.1%})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"iterations": params["iterations"], "alphas": alphas, "rows": rows}, indent=2)
                        + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
