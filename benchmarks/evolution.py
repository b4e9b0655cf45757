"""Fixed prompts vs eva on the testbed: several seeds, params.yaml's budget; prints a table, writes JSON and a plot.

For each seed one project directory runs the fixed distribution (`evolve.enabled: false`), then eva. Everything up
to iteration 1's benchmark is the same in both arms, so eva's run takes it from the cache.

    python benchmarks/evolution.py                          # seeds 0,1,2
    python benchmarks/evolution.py --seeds 0 --iterations 2

Columns: final greedy gold score on each evaluation split and sampled gold on in_distribution, as mean ± std over
seeds; per iteration, the mean input length, composition depth and answer distance of the training prompts.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import load_params, mean_std, run_pipeline

METRICS = {"in_dist greedy": "in_distribution/greedy_gold", "in_dist sampled": "in_distribution/sampled_gold",
           "harder greedy": "harder/greedy_gold", "unseen greedy": "unseen_composition/greedy_gold"}
ARMS = {"fixed": False, "eva": True}


def prompt_difficulty(workdir: Path, iterations: int) -> list[dict[str, float]]:
    from alignloop.io import read_jsonl
    from alignloop.paths import Layout
    from alignloop.tasks.evolve import mean_difficulty

    layout = Layout(workdir)
    return [mean_difficulty(read_jsonl(layout.prompts(i))) for i in range(1, iterations + 1)]


def run_arm(workdir: Path, params: dict, seed: int, evolve: bool) -> dict:
    params = {**params, "seed": seed, "evolve": {**params.get("evolve", {}), "enabled": evolve}}
    summary, seconds = run_pipeline(workdir, params)
    final = summary["iterations"][-1]["metrics"]
    return {"seed": seed, "evolve": evolve, "seconds": seconds,
            **{name: final[key] for name, key in METRICS.items()},
            "per_iteration": [row["metrics"][METRICS["in_dist greedy"]] for row in summary["iterations"]],
            "difficulty": prompt_difficulty(workdir, params["iterations"])}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    measures = ("input_length", "depth", "answer_distance")
    figure, axes = plt.subplots(1, len(measures), figsize=(4 * len(measures), 3.2))
    for axis, measure in zip(axes, measures):
        for arm, style in (("fixed", "--"), ("eva", "-")):
            for row in (r for r in rows if r["evolve"] == ARMS[arm]):
                values = [d[measure] for d in row["difficulty"]]
                axis.plot(range(1, len(values) + 1), values, style, marker="o",
                          label=f"{arm} seed {row['seed']}", alpha=0.8)
        axis.set_title(f"training prompts: {measure.replace('_', ' ')}")
        axis.set_xlabel("iteration")
        axis.set_xticks(range(1, len(rows[0]["difficulty"]) + 1))
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, help="override params.yaml's iterations")
    parser.add_argument("--workdir", type=Path, default=Path("reports/evolution-workdir"))
    parser.add_argument("--out", type=Path, default=Path("reports/evolution.json"))
    parser.add_argument("--plot", type=Path, default=Path("reports/evolution_difficulty.png"))
    args = parser.parse_args()

    params = load_params(args.params, args.iterations)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm, evolve in ARMS.items():
            row = run_arm(args.workdir / f"seed-{seed}", params, seed, evolve)
            rows.append(row)
            print(f"seed {seed} {arm:<5} " + "  ".join(f"{name} {row[name]:.3f}" for name in METRICS)
                  + f"  ({row['seconds']:.0f} s)", flush=True)

    print(f"\n{'arm':<6}" + "".join(f"{name:>17}" for name in METRICS))
    for arm, evolve in ARMS.items():
        arm_rows = [row for row in rows if row["evolve"] == evolve]
        print(f"{arm:<6}" + "".join(f"{mean_std([row[name] for row in arm_rows]):>17}" for name in METRICS))
    print("\ntraining-prompt difficulty per iteration (mean over seeds: input length / depth / answer distance)")
    for arm, evolve in ARMS.items():
        arm_rows = [row for row in rows if row["evolve"] == evolve]
        cells = []
        for i in range(params["iterations"]):
            d = {m: statistics.mean(row["difficulty"][i][m] for row in arm_rows)
                 for m in ("input_length", "depth", "answer_distance")}
            cells.append(f"{d['input_length']:.2f} / {d['depth']:.2f} / {d['answer_distance']:.2f}")
        print(f"{arm:<6}" + "   ".join(f"it{i + 1} {cell}" for i, cell in enumerate(cells)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"iterations": params["iterations"], "rows": rows}, indent=2) + "\n")
    plot(rows, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
