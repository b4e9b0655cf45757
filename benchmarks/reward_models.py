"""Reward models from noisy preferences on the testbed: which denoising helps, and does the loop drift when it
optimises a learned reward model instead of the truth? Prints tables, writes JSON and a plot.

Part 1 (accuracy), per seed and label noise (0 %, 20 %, 40 % of the training labels flipped): policy 0's samples on
prompts from the end of the pool, best vs worst by gold score (exactly what the `reward_model` stage builds); an
ensemble of M plain Bradley–Terry models gives each pair's strength μ; then one reward model per variant (raw BT,
flip, margin, flip + margin, soft label + margin, each with and without the SimCSE loss, and raw BT with MetaRM),
scored on held-out pairs whose labels are true. Also the precision and recall of "μ < 0" as a detector of the
flipped pairs.

Part 2 (the loop), one seed: the default loop ranked by gold, by the raw learned reward model, and by a denoised
one, at `--loop-noise`; the gold score of the policy per iteration.

    python benchmarks/reward_models.py                      # SFT once, then both parts (over an hour on 2 cores)
    python benchmarks/reward_models.py --seeds 0 --noise 0.2 --skip-loop
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

from common import mean_std, run_pipeline

VARIANTS = {  # name -> reward-section overrides
    "raw BT": {},
    "flip": {"denoising": "flip"},
    "margin": {"denoising": "margin"},
    "flip+margin": {"denoising": "flip_margin"},
    "soft+margin": {"denoising": "soft_label_margin"},
    "raw BT +CL": {"contrastive_weight": 1.0},
    "flip +CL": {"denoising": "flip", "contrastive_weight": 1.0},
    "margin +CL": {"denoising": "margin", "contrastive_weight": 1.0},
    "flip+margin +CL": {"denoising": "flip_margin", "contrastive_weight": 1.0},
    "soft+margin +CL": {"denoising": "soft_label_margin", "contrastive_weight": 1.0},
    "raw BT +MetaRM": {"metarm": True},
}


def sft_project(workdir: Path, params: dict) -> Path:
    """A project with prepare and SFT done (the loop's policy 0); every arm copies it."""
    project = workdir / "sft"
    marker = project / ".alignloop" / "stamps" / "sft.json"
    if not marker.is_file():
        import subprocess
        import sys

        project.mkdir(parents=True, exist_ok=True)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for stage in ("prepare", "sft"):
            subprocess.run([str(Path(sys.executable).parent / "alignloop"), "stage", stage], cwd=project,
                           check=True)
    return project


def accuracy_part(project: Path, params: dict, seeds: list[int], noises: list[float]) -> list[dict]:
    from alignloop.config import parse_config
    from alignloop.models.policy import load_tokenizer
    from alignloop.models.reward_training import pair_margins, train_reward_model
    from alignloop.paths import Layout
    from alignloop.seeds import derive_seed
    from alignloop.sources.models import reward_init_dir
    from alignloop.tasks.reward_model import (
        accuracy,
        detection,
        encode_pairs,
        ensemble_strength,
        flip_some,
        meta_batches,
        own_pairs,
    )

    layout, rows = Layout(project), []
    for seed in seeds:
        base = parse_config({**params, "seed": seed, "testbed": {**params.get("testbed", {}), "label_noise": 0.0}})
        init = reward_init_dir(base, layout)
        tokenizer = load_tokenizer(init, base.model)
        clean, samples = own_pairs(base, layout)  # samples drawn once per seed; noise only flips labels
        held = [row for row in clean if row["split"] == "eval"]
        eval_pairs = encode_pairs(tokenizer, held, base.model.max_length)
        groups = meta_batches(tokenizer, [row for row in clean if row["split"] == "train"], samples,
                              base.model.max_length)
        for noise in noises:
            start = time.perf_counter()
            train_rows = flip_some([row for row in clean if row["split"] == "train"], noise,
                                   derive_seed(seed, "label_noise"))
            train_pairs = encode_pairs(tokenizer, train_rows, base.model.max_length)
            rcfg, pad = base.reward, tokenizer.pad_token_id
            strength, _, _ = ensemble_strength(init, tokenizer, train_pairs, eval_pairs, rcfg, base.model, seed)
            flipped = [row["flipped"] for row in train_rows]
            found = detection((strength < 0).tolist(), flipped)
            row = {"seed": seed, "noise": noise, "train_pairs": len(train_rows), "eval_pairs": len(held),
                   "precision": found["precision"], "recall": found["recall"],
                   "negative_strength": sum((strength < 0).tolist()) / len(train_rows)}
            for name, overrides in VARIANTS.items():
                settings = rcfg.model_copy(update=overrides)
                trained = train_reward_model(init, tokenizer, train_pairs, settings, base.model,
                                             derive_seed(seed, "reward_model"), strength=strength,
                                             meta_groups=groups if settings.metarm else None, description=name)
                row[name] = accuracy(pair_margins(trained.model, eval_pairs, pad, 256, "held-out"))
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            print(f"seed {seed} noise {noise:.0%}: detection P {found['precision'] or 0:.3f} R "
                  f"{found['recall'] or 0:.3f}; " + ", ".join(f"{n} {row[n]:.3f}" for n in VARIANTS)
                  + f" ({row['seconds']:.0f} s)", flush=True)
    return rows


LOOP_ARMS = {"gold": None, "raw RM": {}, "denoised RM": {"denoising": "flip_margin"}}


def loop_part(project: Path, params: dict, workdir: Path, noise: float, denoised: dict) -> dict[str, list[float]]:
    """Gold score of the greedy policy per iteration (in_distribution), each arm from the same SFT model."""
    import shutil

    curves = {}
    for arm, overrides in {**LOOP_ARMS, "denoised RM": denoised}.items():
        arm_dir = workdir / f"loop-{arm.replace(' ', '-')}"
        if not arm_dir.exists():
            shutil.copytree(project, arm_dir, symlinks=True)
        arm_params = copy.deepcopy(params)
        arm_params["testbed"] = {**arm_params.get("testbed", {}), "label_noise": noise}
        if overrides is not None:
            arm_params["rank"] = {**arm_params.get("rank", {}), "ranker": "reward_model"}
            arm_params["reward"] = {**arm_params.get("reward", {}), "enabled": True, **overrides}
        summary, seconds = run_pipeline(arm_dir, arm_params)
        curves[arm] = [row["metrics"]["in_distribution/greedy_gold"] for row in summary["iterations"]]
        print(f"loop {arm:<12} gold per iteration: " + ", ".join(f"{v:.3f}" for v in curves[arm])
              + f" ({seconds:.0f} s)", flush=True)
    return curves


def plot(rows: list[dict], curves: dict[str, list[float]] | None, noise: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 2 if curves else 1, figsize=(11 if curves else 6, 3.6), squeeze=False)
    axis = axes[0][0]
    noises = sorted({row["noise"] for row in rows})
    for name in ("raw BT", "flip", "margin", "flip+margin", "soft+margin", "raw BT +CL", "raw BT +MetaRM"):
        means = [statistics.mean(r[name] for r in rows if r["noise"] == n) for n in noises]
        axis.plot([100 * n for n in noises], means, marker="o", label=name)
    axis.set_xlabel("training labels flipped (%)")
    axis.set_ylabel("held-out accuracy (true labels)")
    axis.set_title("reward model accuracy vs label noise")
    axis.legend(fontsize=7)
    if curves:
        axis = axes[0][1]
        for arm, values in curves.items():
            axis.plot(range(len(values)), values, marker="o", label=f"ranked by {arm}")
        axis.set_xticks(range(max(len(values) for values in curves.values())))
        axis.set_xlabel("iteration (0 = SFT)")
        axis.set_ylabel("greedy gold score, in_distribution")
        axis.set_title(f"the loop at {noise:.0%} label noise")
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--noise", default="0,0.2,0.4", help="label-noise levels of part 1")
    parser.add_argument("--loop-noise", type=float, default=0.2)
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--num-prompts", type=int, default=1000, help="reward.num_prompts (training prompts)")
    parser.add_argument("--replot", action="store_true", help="redraw the plot from --out, run nothing")
    parser.add_argument("--threads", type=int, help="torch threads for part 1 (1 is faster when the cores are shared)")
    parser.add_argument("--workdir", type=Path, default=Path("reports/reward-models-workdir"))
    parser.add_argument("--out", type=Path, default=Path("reports/reward_models.json"))
    parser.add_argument("--plot", type=Path, default=Path("reports/reward_models.png"))
    args = parser.parse_args()

    if args.replot:
        saved = json.loads(args.out.read_text())
        plot(saved["rows"], saved["loop"], saved["loop_noise"], args.plot)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    params = yaml.safe_load(args.params.read_text())
    params["reward"] = {**(params.get("reward") or {}), "num_prompts": args.num_prompts}
    project = sft_project(args.workdir, params)
    seeds, noises = [int(s) for s in args.seeds.split(",")], [float(n) for n in args.noise.split(",")]
    rows = accuracy_part(project, params, seeds, noises)

    print(f"\nheld-out accuracy on true labels, mean ± std over seeds {args.seeds}")
    print(f"{'variant':<17}" + "".join(f"{f'noise {n:.0%}':>17}" for n in noises))
    for name in VARIANTS:
        print(f"{name:<17}" + "".join(f"{mean_std([r[name] for r in rows if r['noise'] == n]):>17}" for n in noises))
    for measure in ("precision", "recall", "negative_strength"):
        cells = []
        for n in noises:
            values = [r[measure] for r in rows if r["noise"] == n and r[measure] is not None]
            cells.append(mean_std(values) if values else "n/a")
        print(f"{'μ<0 ' + measure:<17}" + "".join(f"{cell:>17}" for cell in cells))

    curves = None
    if not args.skip_loop:
        at_noise = [r for r in rows if r["noise"] == args.loop_noise] or rows
        best = max((name for name in VARIANTS if name not in ("raw BT", "raw BT +CL", "raw BT +MetaRM")),
                   key=lambda name: statistics.mean(r[name] for r in at_noise))
        print(f"\nthe loop at {args.loop_noise:.0%} noise; denoised arm: {best} (best at this noise in part 1)")
        curves = loop_part(project, params, args.workdir, args.loop_noise, VARIANTS[best])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "loop": curves, "loop_noise": args.loop_noise}, indent=2) + "\n")
    plot(rows, curves, args.loop_noise, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
