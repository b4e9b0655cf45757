"""The seed methods' claims on the real model: each arm against plain online DPO from the same start, the same
prompts and the same budget (presets/smollm2_ifeval.yaml shrunk to BUDGET), over several seeds. Per arm: the last
iteration's metrics, mean ± sd over seeds, and the paired difference to DPO per seed; a verdict on the paper's claim
(reproduced / not reproduced / inconclusive) from the paired differences. Prints tables, writes JSON.

    python benchmarks/seed_claims.py --arms dpo copo tdpo2 --seeds 0 1 2 --workdir /tmp/claims
    python benchmarks/seed_claims.py --arms dpo copo --seeds 0 1 2 --workdir /tmp/claims --report-only

Arms run one after another (one project per arm and seed under --workdir/<arm>/seed-<n>, reused when finished with
the same params; see benchmarks/real_model.py). `dpo` is the control: it runs first, and each other arm's project
starts as a copy of its finished project, so the stages an arm does not change (prepare, the start's benchmark,
iteration 1's samples and ranking) are shared, not recomputed, and its time is what the arm itself costs.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
from collections import Counter
from pathlib import Path

import yaml

from alignloop.io import read_json, read_jsonl
from alignloop.models.cfn_diagnostics import spearman
from alignloop.paths import Layout

from common import mean_sd
from real_model import PRESET, finished_with, read_project, run_seed, seed_params

# The budget of one arm and seed: two iterations, 48 prompts per iteration, 16 held-out prompts per evaluation set,
# 64-token benchmark answers. Measured for DPO, seed 0: 904 s of flow on 2 cores (benchmarks 390 s, optimize 294 s,
# sample 180 s, prepare 34 s), over the 12 minutes an arm should take; shorter answers are the next cut.
BUDGET = ("iterations=2", "sample.num_prompts=48", "data.sharegpt.eval_size=16",
          "data.sharegpt.reference_answers=16", "benchmark.max_new_tokens=64")
# A reward model trained once on policy 0's samples, labelled by the verifier with a share of labels flipped, ranks
# the loop instead of the verifier; the verifier still measures (over-optimisation). 96 + 32 prompts × 4 answers give
# about 40 training pairs (a pair where the answers' constraint scores differ); two epochs of batch 8 are ~10 steps
# per model (2 ensemble members for the preference strength, then the ranker).
REWARD_BUDGET = ("reward.enabled=true", "rank.ranker=reward_model", "reward.num_prompts=96", "reward.eval_prompts=32",
                 "reward.max_new_tokens=64", "reward.batch_size=8", "reward.epochs=2", "reward.learning_rate=3e-5",
                 "reward.ensemble_size=2")
ARMS: dict[str, tuple[str, ...]] = {
    "dpo": (),
    # The released recipe's α/β (1e-4 / 0.01) at this β (0.1). α = 1 (seed 0, 2026-12-07) made the exploration term
    # ~300 times DPO's loss on 135M-model sequences (loss 27 vs 0.09, gradient norm 77 vs 2.7).
    "copo": ("optimize.exploration=copo", "optimize.copo_alpha=0.001"),
    # eva's creator on the verifier task: one more or one other constraint type per evolved prompt, drawn toward the
    # types the policy breaks (evolve.evolver: constraints); iteration 2 trains on the evolved set.
    "eva": ("evolve.enabled=true", "evolve.evolver=constraints"),
    "tdpo2": ("optimize.loss=tdpo2",),
    "srdpo": ("optimize.loss=srdpo",),
    "ipo": ("optimize.loss=ipo",),
    "sripo": ("optimize.loss=sripo",),
    # IPO on sequence sums with target 1/(2β): Sr-IPO with the refinement term off, so "Sr-IPO vs IPO" compares
    # the term itself, not token means against sums
    "ipo_sum": ("optimize.loss=sripo", "optimize.sr_lambda=0"),
    "simpo": ("optimize.loss=simpo",),
    "nll": ("optimize.nll_weight=1.0",),
    # DPO with its training steps under bf16 autocast: the same arm, 1.8× faster optimize on this CPU
    # (docs/performance.md); is it also the same result?
    "dpo_bf16": ("optimize.autocast=bfloat16",),
    # Secrets of RLHF II on the verifier task: raw Bradley-Terry and the two denoising variants the testbed liked
    # best at 20 % noise (flip + margin, flip), at 20 % and 40 % flipped labels.
    **{f"rm_{method}_{noise}": (*REWARD_BUDGET, f"reward.label_noise=0.{noise // 10}", f"reward.denoising={method}")
       for method in ("none", "flip_margin", "flip") for noise in (20, 40)},
}
# Each arm's claim as (metric, direction, control arm): what its paper says it improves over the control.
CLAIMS: dict[str, tuple[str, int, str]] = {
    "copo": ("in_distribution/prompt_strict", +1, "dpo"),  # exploration finds what plain sampling misses
    "eva": ("unseen_types/prompt_strict", +1, "dpo"),  # harder prompts generalise to types never trained
    "tdpo2": ("in_distribution/sampled_entropy", +1, "dpo"),  # more diverse at equal accuracy
    "srdpo": ("in_distribution/prompt_strict", +1, "dpo"),
    "ipo": ("in_distribution/prompt_strict", 0, "dpo"),  # no accuracy claim: compared, no direction
    "sripo": ("in_distribution/prompt_strict", +1, "ipo_sum"),  # the refinement term, on the same IPO
    "simpo": ("in_distribution/prompt_strict", +1, "dpo"),
    "nll": ("retention_relative_change", +1, "dpo"),  # the anchor keeps the model's likelihood of real answers
    # denoising recovers what label noise costs the raw reward model, on the verifier's accuracy
    **{f"rm_{method}_{noise}": ("in_distribution/prompt_strict", +1, f"rm_none_{noise}")
       for method in ("flip_margin", "flip") for noise in (20, 40)},
}
# Compared, no claim in a direction, as (arm, metric, control): what a learned ranker costs against the verifier
# ranking the loop itself, Sr-IPO against IPO on token means (the usual IPO) with the two IPOs' difference, and DPO
# trained under bf16 autocast against DPO in fp32.
ALSO_COMPARED: list[tuple[str, str, str]] = [
    *((arm, "in_distribution/prompt_strict", "dpo") for arm in ARMS if arm.startswith("rm_")),
    ("sripo", "in_distribution/prompt_strict", "ipo"), ("ipo_sum", "in_distribution/prompt_strict", "ipo"),
    ("dpo_bf16", "in_distribution/prompt_strict", "dpo")]
METRICS = {  # key: column
    "in_distribution/prompt_strict": "in_dist greedy", "in_distribution/sampled_prompt_strict": "in_dist sampled",
    "unseen_types/prompt_strict": "unseen greedy", "in_distribution/sampled_entropy": "entropy",
    "in_distribution/distinct_2": "distinct-2", "retention_relative_change": "retention",
    "no_constraint/greedy_length": "length"}


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct n-grams of whitespace tokens over all texts, divided by all n-grams (1.0: no n-gram repeats)."""
    grams = [tuple(words[k:k + n]) for text in texts for words in [text.split()] for k in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def last_metrics(project: Path, seed: dict) -> dict[str, float]:
    """The last iteration's metrics of one finished project (`seed`: its read_project), with distinct-2 of its
    sampled in-distribution answers."""
    metrics = dict(seed["iterations"][-1]["metrics"])
    rows = read_jsonl(Layout(project).benchmark_outputs(len(seed["iterations"]) - 1))
    sampled = [text for row in rows if row["split"] == "in_distribution" for text in row["sampled"]]
    metrics["in_distribution/distinct_2"] = distinct_n(sampled)
    metrics["seconds"] = seed["flow_seconds"]
    return metrics


def cfn_repeat_counts(project: Path) -> list[dict]:
    """Per COPO iteration: does the CFN count what repeats on this data? Each pair's pseudo-count (cfn/bonuses.jsonl)
    against the true number of earlier-or-current visits (samples, the replay buffer's rows) whose prompt carries the
    same constraint types (a prompt is otherwise new each iteration), as Spearman's rank correlation."""
    layout, out = Layout(project), []
    visits: Counter[tuple[str, ...]] = Counter()
    kinds: dict[str, tuple[str, ...]] = {}
    for iteration in range(1, 1000):
        if not layout.cfn(iteration).is_dir():
            break
        for row in read_jsonl(layout.prompts(iteration)):
            kinds[row["prompt_id"]] = tuple(sorted(row.get("instruction_id_list") or ()))
        visits.update(kinds[row["prompt_id"]] for row in read_jsonl(layout.samples(iteration)))
        prompt_of = {row["pair_id"]: row["prompt_id"] for row in read_jsonl(layout.pairs(iteration))}
        bonuses = read_jsonl(layout.cfn(iteration) / "bonuses.jsonl")
        pseudo = [row["pseudo_count"] for row in bonuses]
        true = [float(visits[kinds[prompt_of[row["pair_id"]]]]) for row in bonuses]
        out.append({"iteration": iteration, "pairs": len(bonuses), "buffer_visits": sum(visits.values()),
                    "distinct_constraint_sets": len(visits),
                    "median_pseudo_count": statistics.median(pseudo) if pseudo else None,
                    "median_true_count": statistics.median(true) if true else None,
                    "spearman": spearman(pseudo, true) if len(set(true)) > 1 and len(set(pseudo)) > 1 else None})
    return out


def accuracy_by_iteration(seed: dict, key: str = "in_distribution/prompt_strict") -> list[float]:
    """One metric per iteration of a finished project (its read_project), 0 (the start) to the last."""
    return [iteration["metrics"][key] for iteration in seed["iterations"]]


def reward_model_record(project: Path, seed: dict) -> dict:
    """A reward-model arm's ranker and what optimising it did: the reward model's accuracy on held-out pairs labelled
    by the verifier and on its training pairs against the true and the given (noisy) labels, the noise detector's
    precision and recall, and per iteration (0 = the start) the learned reward of the policy's sampled in-distribution
    answers against the verifier's accuracy on the same answers: over-optimisation is the first rising while the
    second falls. `seed`: the project's read_project."""
    stats = read_json(Layout(project).reward_stats)
    trajectory = [{"iteration": i, "learned_reward": iteration["metrics"]["in_distribution/sampled_reward"],
                   "gold_sampled": iteration["metrics"]["in_distribution/sampled_prompt_strict"],
                   "gold_greedy": iteration["metrics"]["in_distribution/prompt_strict"]}
                  for i, iteration in enumerate(seed["iterations"])]
    return {"eval_accuracy": stats["eval_accuracy"], "train_accuracy_true_labels": stats["train_accuracy_true_labels"],
            "train_accuracy_given_labels": stats["train_accuracy_given_labels"],
            "detection_precision": stats["detection"]["precision"], "detection_recall": stats["detection"]["recall"],
            "trajectory": trajectory}


def paired(arm: dict[int, dict], control: dict[int, dict], key: str) -> tuple[float, float, int]:
    """Mean and sd of the per-seed differences arm − control, over the seeds both have."""
    diffs = [arm[s][key] - control[s][key] for s in sorted(arm.keys() & control.keys())
             if key in arm[s] and key in control[s]]
    if not diffs:
        return float("nan"), float("nan"), 0
    mean, sd = mean_sd(diffs)
    return mean, sd, len(diffs)


def verdict(mean: float, sd: float, n: int, direction: int) -> str:
    """`reproduced` when the paired mean lies beyond two standard errors in the claimed direction, `not reproduced`
    when beyond two in the other, `inconclusive` otherwise (or with fewer than 3 seeds)."""
    if n < 3 or direction == 0 or math.isnan(mean):
        return "inconclusive" if direction else "compared"
    se = sd / math.sqrt(n)
    if direction * mean > 2 * se:
        return "reproduced"
    return "not reproduced" if -direction * mean > 2 * se else "inconclusive"


def start_from_control(control: Path, project: Path) -> None:
    """A new arm's project begins as a copy of the control's finished one (same seed): what the arm does not change
    (prepare, the start's benchmark, iteration 1's samples and ranking) comes back cached, so every arm is compared
    on the same samples and pays only for what differs. MLflow's store is left behind (it names the control's
    folder)."""
    if project.exists() or project == control or not (control / "reports" / "summary.json").is_file():
        return
    shutil.copytree(control, project, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db", "mlruns", "run.log"))


def plot(verdicts: list[dict], curves: dict[str, dict[int, list[float]]], rankers: dict[str, dict[int, dict]],
         path: Path) -> None:
    """Left: each comparison's paired difference with two standard errors (the verdict's rule). Middle: held-out
    greedy accuracy per iteration, mean over seeds, per arm. Right (reward-model arms): the learned reward of sampled
    answers per iteration, next to the verifier's accuracy on them in the middle panel."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 3 if rankers else 2, figsize=(16 if rankers else 11, 4.2), squeeze=False)
    palette = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    colour = {arm: palette(k % palette.N) for k, arm in enumerate(curves)}  # one colour per arm in every panel
    axis = axes[0][0]
    shown = [v for v in verdicts if v["seeds"] > 1]
    for row, v in enumerate(shown):
        axis.errorbar(v["mean_diff"], row, xerr=2 * v["sd_diff"] / math.sqrt(v["seeds"]), fmt="o", capsize=3,
                      color=colour.get(v["arm"]))
    axis.axvline(0.0, color="grey", linewidth=0.8)
    axis.set_yticks(range(len(shown)), [f"{v['arm']} − {v['control']}: {METRICS.get(v['metric'], v['metric'])}"
                                        for v in shown], fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel("paired difference over seeds (± 2 standard errors)")
    axis.set_title("each arm against its control")
    _per_iteration(axes[0][1], curves, colour, "held-out greedy prompt_strict", "accuracy by the verifier")
    if rankers:
        learned = {arm: {seed: [step["learned_reward"] for step in record["trajectory"]]
                         for seed, record in seeds.items()} for arm, seeds in rankers.items()}
        _per_iteration(axes[0][2], learned, colour, "learned reward of sampled answers",
                       "what the reward-model arms optimised")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, metadata={"Software": None})  # no tag or date: same data, same bytes


def _per_iteration(axis, lines: dict[str, dict[int, list[float]]], colour: dict[str, str], ylabel: str,
                   title: str) -> None:
    """One line per arm: the mean over seeds at each iteration (reward-model arms dashed)."""
    for arm, seeds in lines.items():
        means = [statistics.mean(values) for values in zip(*seeds.values())]
        axis.plot(range(len(means)), means, marker="o", label=arm, color=colour.get(arm),
                  linestyle="--" if arm.startswith("rm_") else "-")
        axis.set_xticks(range(len(means)))
    axis.set_xlabel("iteration (0 = the start)")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["dpo", "copo"], choices=sorted(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, required=True, help="one folder per arm, one project per seed")
    parser.add_argument("--report-only", action="store_true", help="read finished projects; run nothing")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/seed_claims.json"))
    parser.add_argument("--plot", type=Path, help="also draw the verdicts and accuracy per iteration (PNG)")
    args = parser.parse_args()

    preset = yaml.safe_load(PRESET.read_text())
    results: dict[str, dict[int, dict]] = {}
    counts: dict[int, list[dict]] = {}  # COPO's pseudo-counts against true repeats, per seed
    rankers: dict[str, dict[int, dict]] = {}  # the reward-model arms' rankers and their over-optimisation
    curves: dict[str, dict[int, list[float]]] = {}  # held-out greedy accuracy per iteration
    for arm in sorted(args.arms, key=lambda name: name != "dpo"):  # the control first: the others start from it
        results[arm] = {}
        for seed in args.seeds:
            project = args.workdir / arm / f"seed-{seed}"
            params = seed_params(preset, seed, overrides=(*BUDGET, *ARMS[arm]))
            if not args.report_only:
                start_from_control(args.workdir / "dpo" / f"seed-{seed}", project)
                run_seed(project, params)
            # an arm's project copied from the control holds the control's summary until its own run finishes
            if finished_with(project, params):
                run = read_project(project)
                results[arm][seed] = last_metrics(project, run)
                curves.setdefault(arm, {})[seed] = accuracy_by_iteration(run)
                if arm == "copo":
                    counts[seed] = cfn_repeat_counts(project)
                if arm.startswith("rm_"):
                    rankers.setdefault(arm, {})[seed] = reward_model_record(project, run)

    print(f"\n{'arm':<20}" + "".join(f"{label:>18}" for label in METRICS.values()) + f"{'min/seed':>10}")
    for arm, seeds in results.items():
        cells = []
        for key in METRICS:
            values = [m[key] for m in seeds.values() if key in m]
            mean, sd = mean_sd(values) if values else (float("nan"), float("nan"))
            cells.append(f"{mean:>10.3f} ± {sd:<5.3f}")
        minutes = statistics.mean(m["seconds"] for m in seeds.values()) / 60 if seeds else float("nan")
        print(f"{arm:<20}" + "".join(cells) + f"{minutes:>10.1f}")

    verdicts = []
    print(f"\n{'arm':<20}{'claim metric':<34}{'vs':<12}{'paired diff':>20}{'seeds':>7}  verdict")
    comparisons = [*((arm, *claim) for arm, claim in CLAIMS.items()),
                   *((arm, key, 0, control) for arm, key, control in ALSO_COMPARED)]
    for arm, key, direction, control in comparisons:
        if arm not in results or control not in results:
            continue
        mean, sd, n = paired(results[arm], results[control], key)
        verdicts.append({"arm": arm, "metric": key, "control": control, "mean_diff": mean, "sd_diff": sd,
                         "seeds": n, "verdict": verdict(mean, sd, n, direction)})
        print(f"{arm:<20}{key:<34}{control:<12}{mean:>+12.3f} ± {sd:<5.3f}{n:>7}  {verdicts[-1]['verdict']}")

    if counts:
        print("\nCOPO's CFN against true repeat counts (visits with the same constraint types)")
        print(f"{'seed':>4}{'iter':>6}{'pairs':>7}{'visits':>8}{'sets':>6}{'med pseudo':>12}{'med true':>10}"
              f"{'spearman':>10}")
        for seed, rows in counts.items():
            for row in rows:
                rho = "n/a" if row["spearman"] is None else f"{row['spearman']:+.3f}"
                print(f"{seed:>4}{row['iteration']:>6}{row['pairs']:>7}{row['buffer_visits']:>8}"
                      f"{row['distinct_constraint_sets']:>6}{row['median_pseudo_count']:>12.2f}"
                      f"{row['median_true_count']:>10.1f}{rho:>10}")

    if rankers:
        print("\nReward-model arms: the ranker (accuracy against the verifier's labels) and, per iteration, the learned"
              " reward of sampled answers against the verifier's accuracy on them (mean over seeds)")
        print(f"{'arm':<20}{'eval acc':>9}{'train acc true':>15}{'detect P/R':>12}  learned reward → gold sampled")
        for arm, seeds in rankers.items():
            records = list(seeds.values())
            precision = [r["detection_precision"] for r in records if r["detection_precision"] is not None]
            recall = [r["detection_recall"] for r in records if r["detection_recall"] is not None]
            detect = f"{statistics.mean(precision):.2f}/{statistics.mean(recall):.2f}" if precision and recall else "–"
            path = "  ".join(
                f"{i}: {statistics.mean(r['trajectory'][i]['learned_reward'] for r in records):+.2f}"
                f" → {statistics.mean(r['trajectory'][i]['gold_sampled'] for r in records):.3f}"
                for i in range(len(records[0]["trajectory"])))
            eval_accuracy = statistics.mean(r["eval_accuracy"] for r in records)
            train_accuracy = statistics.mean(r["train_accuracy_true_labels"] for r in records)
            print(f"{arm:<20}{eval_accuracy:>9.3f}{train_accuracy:>15.3f}{detect:>12}  {path}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"budget": BUDGET, "arms": {arm: ARMS[arm] for arm in results},
                                    "results": {arm: {str(s): m for s, m in seeds.items()}
                                                for arm, seeds in results.items()},
                                    "verdicts": verdicts,
                                    "cfn_repeat_counts": {str(seed): rows for seed, rows in counts.items()},
                                    "reward_models": {arm: {str(s): r for s, r in seeds.items()}
                                                      for arm, seeds in rankers.items()},
                                    "accuracy_by_iteration": {arm: {str(s): c for s, c in seeds.items()}
                                                              for arm, seeds in curves.items()}},
                                   indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    if args.plot:
        plot(verdicts, curves, rankers, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
