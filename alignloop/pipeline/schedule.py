"""Scheduled runs grow the pipeline: each adds `schedule.iterations_per_run` iterations after the last completed one.

The new iteration count is written back to params.yaml (only the `iterations:` line changes), so `alignloop run`,
`dvc repro` and the next scheduled run all describe the same pipeline.
"""

from __future__ import annotations

import re
from pathlib import Path

from alignloop.config import Config
from alignloop.io import write_text
from alignloop.paths import Layout
from alignloop.pipeline.cache import outputs_intact
from alignloop.pipeline.stages import STAGES

_ITERATIONS_VALUE = re.compile(r"^(iterations:[ \t]*)\d+", re.MULTILINE)


def completed_iterations(cfg: Config, layout: Layout) -> int:
    """The last iteration benchmarked with its outputs intact, counting up from SFT (0); -1 before SFT's benchmark."""
    benchmark = STAGES["benchmark"]
    done = -1
    while outputs_intact(benchmark, cfg, layout, done + 1):
        done += 1
    return done


def set_iterations(params_path: Path, iterations: int) -> None:
    """Rewrite the `iterations:` line of params.yaml, keeping every comment and other key as it is."""
    text = params_path.read_text(encoding="utf-8")
    if _ITERATIONS_VALUE.search(text):
        text = _ITERATIONS_VALUE.sub(rf"\g<1>{iterations}", text, count=1)
    else:
        text = text + ("" if text.endswith("\n") or not text else "\n") + f"iterations: {iterations}\n"
    write_text(params_path, text)


def scheduled_iterations(cfg: Config, layout: Layout) -> int:
    return max(completed_iterations(cfg, layout), 0) + cfg.schedule.iterations_per_run
