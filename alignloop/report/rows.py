"""One row per iteration (benchmark metrics + ranking, training, eva and CFN summaries), the headline columns, and
the terminal table: what the report stage, MLflow tracking, the flow and the CLI read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignloop.config import JUDGE_NAMES, Config
from alignloop.io import read_json
from alignloop.metric_keys import score_key
from alignloop.paths import Layout, eval_split_names


def table_columns(cfg: Config) -> tuple[str, ...]:
    """The headline metrics: the first evaluation set's greedy and sampled scores, every other set's greedy score,
    the first set's sampled entropy, and the overall win rate against SFT, raw and length-controlled; with the
    verifier, the accuracies of data.sharegpt's sets, retention and length."""
    first, *others = eval_split_names(cfg)
    if cfg.rank.ranker == "verifier":  # IFEval's prompt-level accuracy, retention and length (docs/real_model.md)
        return ("in_distribution/prompt_strict", "in_distribution/instruction_strict", "unseen_types/prompt_strict",
                "unseen_types/prompt_loose", "no_constraint/greedy_length", "retention_relative_change",
                "in_distribution/kl_to_sft")
    judge = JUDGE_NAMES[cfg.rank.ranker]
    return (score_key(first, "greedy", judge), score_key(first, "sampled", judge),
            *(score_key(split, "greedy", judge) for split in others),
            f"{first}/sampled_entropy", "win_rate_vs_sft", "lc_win_rate_vs_sft")


def eval_splits(rows: list[dict[str, Any]]) -> list[str]:
    """The evaluation sets of a run's rows, in the order the benchmark wrote them."""
    return list(dict.fromkeys(key.split("/")[0] for key in rows[0]["metrics"] if "/" in key))


def report_plot_names(cfg: Config) -> list[str]:
    """The figures the report stage draws for this config (alignloop/report/plots.py), one per report section."""
    trained = cfg.sft.enabled or cfg.iterations > 0
    return ["scores", "win_rate", *(["training"] if trained else []), *(["ranking"] if cfg.iterations else []),
            *(["eva"] if cfg.evolve.enabled and cfg.iterations > 1 else []),
            *(["copo"] if cfg.optimize.exploration == "copo" and cfg.iterations else []),
            *(["reward_model"] if cfg.reward.enabled else [])]


def _optional_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def iteration_row(layout: Layout, iteration: int) -> dict[str, Any]:
    """Benchmark metrics of one iteration, with its training and ranking summaries (none for SFT)."""
    train = _optional_json(layout.train_log(iteration)).get("final", {}) if iteration else {}
    rank = _optional_json(layout.rank_stats(iteration)) if iteration else {}
    evolve = _optional_json(layout.evolve_stats(iteration)) if iteration else {}
    cfn = _optional_json(layout.cfn_stats(iteration)) if iteration else {}
    return {"iteration": iteration, "metrics": read_json(layout.metrics(iteration)),
            "train": {f"train/{k}": v for k, v in train.items()},
            "rank": {f"rank/{k}": v for k, v in rank.items()},
            "evolve": {f"evolve/{k}": v for k, v in evolve.items() if isinstance(v, (int, float))},
            "cfn": {f"cfn/{k}": v for k, v in cfn.items() if isinstance(v, (int, float))}}


def iteration_rows(cfg: Config, layout: Layout) -> list[dict[str, Any]]:
    return [iteration_row(layout, iteration) for iteration in range(cfg.iterations + 1)]


def format_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    header = ["iter", *(column.replace("in_distribution", "in_dist").replace("unseen_composition", "unseen")
                        .replace("instruction_", "instr_").replace("retention_relative_change", "retention")
                        for column in columns)]
    lines = [" | ".join(header)]
    for row in rows:
        values = [row["metrics"].get(column) for column in columns]
        lines.append(" | ".join([str(row["iteration"]).rjust(len(header[0])),
                                 *(("-" if v is None else f"{v:.3f}").rjust(len(h))
                                   for v, h in zip(values, header[1:]))]))
    return "\n".join(lines)
