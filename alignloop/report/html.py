"""`reports/report.html`: one self-contained page (figures embedded as PNG data) for a person to read after a run.

Sections: the scores per evaluation set against the SFT baseline, win rates against SFT (raw and length-controlled),
training, ranking, eva, COPO, the reward model, and the run's facts (params, commit, wall time per stage). The
figures come from the report stage (`reports/plots/`); this page adds what is not a function of the artifacts
(wall times, the commit), so it is written after the run rather than as a cached stage output.
"""

from __future__ import annotations

import base64
import html
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from alignloop import __version__
from alignloop.config import JUDGE_NAMES, Config
from alignloop.io import read_json, write_text
from alignloop.metric_keys import judge_measure
from alignloop.paths import Layout
from alignloop.report.rows import eval_splits, iteration_rows

# (id, title, what a reader learns there, the params that switch it on when it can be absent)
SECTIONS = (
    ("scores", "Scores per evaluation set", "Mean judge score of greedy and sampled answers; iteration 0 is SFT.",
     None),
    ("win_rate", "Win rate against SFT", "Greedy answers judged against SFT's greedy answers (ties count half). "
     "LC is the length-controlled win rate: what the same judge would give at equal length, so a policy that "
     "only got longer stays near 0.5.", None),
    ("training", "Training", "SFT's loss, then each iteration's preference loss and reward accuracy by step.", None),
    ("ranking", "Ranking", "Pairs built per iteration, prompts dropped and why, and mean scores.", None),
    ("eva", "eva: evolving prompts", "How hard this iteration's prompts are against the evolved ones, and how "
     "informative the chosen seeds were.", "evolve.enabled: true"),
    ("copo", "COPO: count-based exploration", "The exploration bonus and the CFN's pseudo-counts of explored "
     "responses (a count falls as similar pairs are seen more often).", "optimize.exploration: copo"),
    ("reward_model", "Reward model", "Accuracy of the trained reward model on its training pairs and on held-out "
     "pairs, and its training loss.", "reward.enabled: true"),
)
STYLE = """body{font-family:system-ui,sans-serif;max-width:1320px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.up{color:#17803d}.down{color:#b42318}.note{color:#555}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}nav a{margin-right:1em}"""


def _number(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def _table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def _with_delta(value: float | None, baseline: float | None) -> str:
    if value is None or baseline is None or value == baseline:
        return _number(value)
    delta = value - baseline
    return f'{value:.3f} <span class="{"up" if delta > 0 else "down"}">({delta:+.3f})</span>'


def _scores_tables(cfg: Config, rows: list[dict]) -> str:
    """Per evaluation set, one row per iteration; scores show their change against SFT (iteration 0)."""
    judge = JUDGE_NAMES[cfg.rank.ranker]
    columns = [judge_measure("greedy", judge), judge_measure("sampled", judge),
               *([judge_measure("greedy", "gold"), judge_measure("sampled", "gold")] if judge != "gold" else []),
               *(f"{level}_{mode}" for level in ("prompt", "instruction") for mode in ("strict", "loose")),
               "sampled_prompt_strict", "greedy_exact_match", "win_rate_vs_sft", "lc_win_rate_vs_sft", "greedy_length",
               "kl_to_sft", "sampled_entropy"]
    parts = []
    for split in eval_splits(rows):
        present = [c for c in columns if f"{split}/{c}" in rows[0]["metrics"]]
        base = rows[0]["metrics"]
        body = [[("SFT (0)" if row["iteration"] == 0 else str(row["iteration"])),
                 *(_with_delta(row["metrics"].get(f"{split}/{c}"), base.get(f"{split}/{c}"))
                   if row["iteration"] and c.startswith(("greedy_", "sampled_", "prompt_", "instruction_"))
                   and "length" not in c and "entropy" not in c else _number(row["metrics"].get(f"{split}/{c}"))
                   for c in present)]
                for row in rows]
        parts.append(f"<h3>{html.escape(split)}</h3>" + _table(["iteration", *present], body))
    return "".join(parts)


def _retention_table(rows: list[dict]) -> str:
    """Mean per-token log-likelihood of held-out reference answers, against the starting policy's."""
    keys = ("retention_logprob_per_token", "retention_start_logprob_per_token", "retention_relative_change")
    if keys[0] not in rows[0]["metrics"]:
        return ""
    body = [[str(row["iteration"]), *(_number(row["metrics"].get(key)) for key in keys)] for row in rows]
    return ("<h3>Retention</h3>" + _table(["iteration", "log-likelihood per token", "at the start",
                                           "relative change"], body))


def _constraint_table(cfg: Config, layout: Layout) -> str:
    """Greedy strict accuracy per constraint type and evaluation set, at the start and after the last iteration."""
    if cfg.rank.ranker != "verifier":
        return ""
    from alignloop.io import read_jsonl
    from alignloop.verifiers.metrics import accuracy_by_type

    first, last = read_jsonl(layout.benchmark_outputs(0)), read_jsonl(layout.benchmark_outputs(cfg.iterations))
    body = []
    for split in dict.fromkeys(row["split"] for row in first):
        start = accuracy_by_type([row for row in first if row["split"] == split])
        end = accuracy_by_type([row for row in last if row["split"] == split])
        body += [[html.escape(split), html.escape(kind), str(total), _number(followed / total),
                  _with_delta(end.get(kind, (0, 1))[0] / max(1, end.get(kind, (0, 1))[1]), followed / total)]
                 for kind, (followed, total) in start.items()]
    return ("<h3>Constraint types</h3>" + _table(
        ["set", "constraint", "prompts", "start", f"iteration {cfg.iterations}"], body)) if body else ""


def _win_table(rows: list[dict]) -> str:
    body = [[str(row["iteration"]), _number(row["metrics"].get("win_rate_vs_sft")),
             _number(row["metrics"].get("lc_win_rate_vs_sft"))] for row in rows]
    return _table(["iteration", "win rate vs SFT", "length-controlled"], body)


def _stat_table(rows: list[dict], part: str) -> str:
    present = [row for row in rows if row[part]]
    if not present:
        return ""
    keys = list(dict.fromkeys(key for row in present for key in row[part]))
    body = [[str(row["iteration"]), *(_number(row[part].get(key)) for key in keys)] for row in present]
    return _table(["iteration", *(key.split("/", 1)[1].replace("_", " ") for key in keys)], body)


def _reward_table(layout: Layout) -> str:
    stats = read_json(layout.reward_stats) if layout.reward_stats.is_file() else {}
    detection = stats.get("detection") or {}
    facts = {"denoising": stats.get("denoising"), "train pairs": stats.get("train_pairs"),
             "held-out pairs": stats.get("eval_pairs"), "held-out accuracy": stats.get("eval_accuracy"),
             "label noise": stats.get("label_noise"), "μ < 0 fraction": stats.get("negative_strength_fraction"),
             "flip detection precision": detection.get("precision"), "flip detection recall": detection.get("recall")}
    return _table(["", "value"], [[html.escape(k), _number(v)] for k, v in facts.items() if v is not None])


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _facts(cfg: Config, layout: Layout, summary: dict[str, Any] | None) -> str:
    from alignloop.pipeline.tracking import git_commit

    facts = {"project": str(layout.root.resolve()), "commit": git_commit(layout.root) or "not a git checkout",
             "alignloop": __version__, "python": platform.python_version(), "iterations": cfg.iterations,
             "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if summary:
        facts["wall time of the flow"] = f"{summary['wall_seconds']:.1f} s"
    body = [[html.escape(k), html.escape(str(v))] for k, v in facts.items()]
    stages = ""
    if summary:
        stages = "<h3>Stages</h3>" + _table(["stage", "status", "seconds"], [
            [html.escape(key), html.escape(step["status"]), _number(float(step["seconds"]))]
            for key, step in summary["stages"].items()])
    params = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, width=120)
    return (_table(["", ""], body) + stages
            + f"<h3>Parameters</h3><pre>{html.escape(params)}</pre>")


def render_report_html(cfg: Config, layout: Layout, summary: dict[str, Any] | None = None) -> str:
    rows = iteration_rows(cfg, layout)
    tables = {"scores": _scores_tables(cfg, rows) + _retention_table(rows) + _constraint_table(cfg, layout),
              "win_rate": _win_table(rows),
              "training": _stat_table(rows, "train"), "ranking": _stat_table(rows, "rank"),
              "eva": _stat_table(rows, "evolve"), "copo": _stat_table(rows, "cfn"),
              "reward_model": _reward_table(layout) if layout.reward_stats.is_file() else ""}
    nav = " ".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title, _, _ in SECTIONS)
    body = []
    for key, title, about, switch in SECTIONS:
        plot = layout.report_plots / f"{key}.png"
        if plot.is_file():
            content = f'<p class="note">{html.escape(about)}</p>{_image(plot, title)}{tables[key]}'
        else:
            content = f'<p class="note">Not in this run ({html.escape(switch or "no data")}).</p>'
        body.append(f'<section id="{key}"><h2>{html.escape(title)}</h2>{content}</section>')
    body.append(f'<section id="run"><h2>Run</h2>{_facts(cfg, layout, summary)}</section>')
    title = f"alignloop report: {cfg.iterations} iteration(s)"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}</style></head><body><h1>{title}</h1><nav>{nav} <a href=\"#run\">Run</a></nav>"
            + "".join(body) + "</body></html>\n")


def write_report_html(cfg: Config, layout: Layout, summary: dict[str, Any] | None = None) -> Path:
    """Write the page (atomically); `summary` adds wall times per stage, read from summary.json when not given."""
    if summary is None and layout.summary.is_file():
        summary = read_json(layout.summary)
    write_text(layout.report_html, render_report_html(cfg, layout, summary))
    return layout.report_html
