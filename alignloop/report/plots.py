"""The report's figures, drawn with matplotlib from a run's artifacts: scores per evaluation set against SFT, win
rates (raw and length-controlled), training curves, ranking, eva's prompt difficulty, COPO's bonuses and
pseudo-counts, and the reward model. Each function returns a figure, or None when its section is not in the run.
PNGs are written without a timestamp, so the same artifacts give the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402 - the backend is chosen first
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from alignloop.config import JUDGE_NAMES, Config  # noqa: E402
from alignloop.io import read_json, read_jsonl  # noqa: E402
from alignloop.metric_keys import score_key
from alignloop.paths import Layout  # noqa: E402
from alignloop.report.rows import eval_splits  # noqa: E402

Rows = list[dict[str, Any]]


def _iterations(rows: Rows) -> list[int]:
    return [row["iteration"] for row in rows]


def _series(rows: Rows, key: str, part: str = "metrics") -> list[float | None]:
    return [row[part].get(key) for row in rows]


def _grid(panels: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
    figure, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    return figure, list(axes[0])


def _finish(figure: Figure, axes: list, xlabel: str = "iteration") -> Figure:
    for axis in axes:
        axis.set_xlabel(xlabel)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def scores_figure(cfg: Config, rows: Rows) -> Figure:
    """Greedy and sampled scores per evaluation set by iteration; the dotted line is SFT's greedy score."""
    judge, x = JUDGE_NAMES[cfg.rank.ranker], _iterations(rows)
    splits = [split for split in eval_splits(rows) if score_key(split, "greedy", judge) in rows[0]["metrics"]]  # scored
    figure, axes = _grid(len(splits))
    for axis, split in zip(axes, splits):
        for mode, style in (("greedy", "-o"), ("sampled", "-s")):
            axis.plot(x, _series(rows, score_key(split, mode, judge)), style, label=f"{mode} ({judge})")
        if judge != "gold" and score_key(split, "greedy", "gold") in rows[0]["metrics"]:
            axis.plot(x, _series(rows, score_key(split, "greedy", "gold")), "--^", label="greedy (gold)")
        axis.axhline(rows[0]["metrics"][score_key(split, "greedy", judge)], color="grey", linestyle=":",
                     label="SFT greedy")
        axis.set_title(split)
        axis.set_ylabel("mean score")
    return _finish(figure, axes)


def win_rate_figure(rows: Rows) -> Figure:
    """Win rate against SFT's greedy answers, raw (solid) and length-controlled (dashed), per evaluation set."""
    figure, axes = _grid(1, width=6)
    x = _iterations(rows)
    scored = [split for split in eval_splits(rows) if f"{split}/win_rate_vs_sft" in rows[0]["metrics"]]
    for index, split in enumerate(["", *scored]):
        prefix, color = (f"{split}/" if split else ""), f"C{index}"
        axis_label = split or "all sets"
        axes[0].plot(x, _series(rows, f"{prefix}win_rate_vs_sft"), "-o", color=color, label=f"{axis_label} raw")
        axes[0].plot(x, _series(rows, f"{prefix}lc_win_rate_vs_sft"), "--", color=color, label=f"{axis_label} LC")
    axes[0].axhline(0.5, color="grey", linestyle=":")
    axes[0].set_ylabel("win rate vs SFT")
    return _finish(figure, axes)


def _history(path: Path) -> list[dict[str, Any]]:
    return [entry for entry in (read_json(path).get("history", []) if path.is_file() else []) if "loss" in entry]


def _marker(points: list) -> str | None:
    return "o" if len(points) < 20 else None  # a curve of a few steps stays visible


def training_figure(layout: Layout, iterations: list[int]) -> Figure | None:
    """SFT's loss, and each iteration's preference loss and reward accuracy, by step."""
    sft = _history(layout.train_log(0)) if 0 in iterations else []
    optimize = {i: _history(layout.train_log(i)) for i in iterations if i > 0}
    if not sft and not any(optimize.values()):
        return None
    figure, axes = _grid(3)
    if sft:
        axes[0].plot([e.get("step", k) for k, e in enumerate(sft)], [e["loss"] for e in sft], marker=_marker(sft),
                     label="SFT loss")
    axes[0].set_title("SFT")
    for i, history in optimize.items():
        steps = [e.get("step", k) for k, e in enumerate(history)]
        axes[1].plot(steps, [e["loss"] for e in history], marker=_marker(history), label=f"iteration {i}")
        if history and "reward_accuracy" in history[0]:
            axes[2].plot(steps, [e["reward_accuracy"] for e in history], marker=_marker(history),
                         label=f"iteration {i}")
    axes[1].set_title("preference loss")
    axes[2].set_title("reward accuracy (chosen above rejected)")
    return _finish(figure, axes, xlabel="step")


def ranking_figure(rows: Rows) -> Figure | None:
    """Pairs built and prompts dropped (all responses tied, gap too small, unfinished) by iteration, and the mean
    scores of chosen, rejected and all responses."""
    ranked = [row for row in rows if row["rank"]]
    if not ranked:
        return None
    figure, axes = _grid(2)
    x = _iterations(ranked)
    bottom = [0.0] * len(ranked)
    for key, label in (("pairs", "pairs"), ("dropped_all_tied", "all tied"), ("dropped_below_gap", "gap too small"),
                       ("dropped_unfinished", "unfinished")):
        values = [row["rank"].get(f"rank/{key}", 0) or 0 for row in ranked]
        axes[0].bar(x, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    axes[0].set_ylabel("prompts")
    axes[0].set_title("pairs and dropped prompts")
    for key in ("mean_chosen_score", "mean_rejected_score", "mean_sample_score"):
        axes[1].plot(x, _series(ranked, f"rank/{key}", "rank"), "-o", label=key.replace("mean_", "").replace("_", " "))
    axes[1].set_title("mean scores")
    return _finish(figure, axes)


def eva_figure(rows: Rows) -> Figure | None:
    """eva's prompt difficulty: each measure of this iteration's prompts against the next iteration's, and the
    informativeness of the chosen seeds against all prompts."""
    evolved = [row for row in rows if row["evolve"]]
    if not evolved:
        return None
    measures = [key[len("evolve/current_"):] for key in evolved[0]["evolve"] if key.startswith("evolve/current_")]
    figure, axes = _grid(len(measures) + 1)
    x = _iterations(evolved)
    for axis, measure in zip(axes, measures):
        axis.plot(x, _series(evolved, f"evolve/current_{measure}", "evolve"), "-o", label="this iteration's prompts")
        axis.plot(x, _series(evolved, f"evolve/next_{measure}", "evolve"), "-s", label="evolved (next) prompts")
        axis.set_title(measure.replace("_", " "))
    axes[-1].plot(x, _series(evolved, "evolve/seed_informativeness", "evolve"), "-o", label="seeds")
    axes[-1].plot(x, _series(evolved, "evolve/mean_informativeness", "evolve"), "-s", label="all prompts")
    axes[-1].set_title("informativeness")
    return _finish(figure, axes)


def copo_figure(layout: Layout, rows: Rows) -> Figure | None:
    """COPO's mean exploration bonus and median pseudo-count by iteration, and each iteration's pseudo-counts."""
    explored = [row for row in rows if row["cfn"]]
    if not explored:
        return None
    figure, axes = _grid(3)
    x = _iterations(explored)
    axes[0].plot(x, _series(explored, "cfn/mean_bonus", "cfn"), "-o")
    axes[0].set_title("mean bonus")
    axes[1].plot(x, _series(explored, "cfn/median_pseudo_count", "cfn"), "-o")
    axes[1].set_title("median pseudo-count")
    for i in x:
        counts = [row["pseudo_count"] for row in read_jsonl(layout.cfn_bonuses(i))]
        axes[2].hist(counts, bins=30, alpha=0.5, label=f"iteration {i}")
    axes[2].set_title("pseudo-counts of explored responses")
    figure = _finish(figure, axes)
    axes[2].set_xlabel("pseudo-count")
    return figure


def reward_model_figure(layout: Layout) -> Figure | None:
    """The trained reward model: accuracy on its training pairs and on held-out pairs, and its training loss."""
    if not layout.reward_stats.is_file():
        return None
    stats = read_json(layout.reward_stats)
    bars = {"train (given labels)": stats.get("train_accuracy_given_labels"),
            "train (true labels)": stats.get("train_accuracy_true_labels"), "held-out": stats.get("eval_accuracy")}
    bars |= {f"ensemble {k}": value for k, value in enumerate(stats.get("ensemble_eval_accuracy") or [])}
    bars = {name: value for name, value in bars.items() if value is not None}
    figure, axes = _grid(2)
    axes[0].bar(list(bars), list(bars.values()))
    axes[0].axhline(0.5, color="grey", linestyle=":")
    axes[0].set_title("accuracy")
    axes[0].tick_params(axis="x", labelrotation=30)
    history = _history(layout.reward_train_log)
    axes[1].plot([e.get("step", k) for k, e in enumerate(history)], [e["loss"] for e in history])
    axes[1].set_title("training loss")
    figure = _finish(figure, axes[1:], xlabel="step")
    return figure


def report_figures(cfg: Config, layout: Layout, rows: Rows) -> dict[str, Figure | None]:
    """Every figure of the report by name; None for a section this run does not have."""
    return {"scores": scores_figure(cfg, rows), "win_rate": win_rate_figure(rows),
            "training": training_figure(layout, _iterations(rows)), "ranking": ranking_figure(rows),
            "eva": eva_figure(rows), "copo": copo_figure(layout, rows), "reward_model": reward_model_figure(layout)}


def save_png(figure: Figure, path: Path) -> None:
    """Without matplotlib's Software tag or any date, so identical data give identical bytes."""
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)
