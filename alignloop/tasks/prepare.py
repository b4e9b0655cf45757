"""Stage `prepare`: the testbed's data and untrained model into `data/`."""

from __future__ import annotations

import logging

from alignloop.config import Config
from alignloop.io import atomic_path, write_jsonl
from alignloop.paths import Layout
from alignloop.testbed.data import build_testbed_data
from alignloop.testbed.model import create_base_model

log = logging.getLogger(__name__)


def run_prepare(cfg: Config, layout: Layout) -> None:
    files = build_testbed_data(cfg.testbed, cfg.seed)
    # data/ is one DVC output: build it aside and swap it in whole.
    with atomic_path(layout.data) as staged_data:
        for name, rows in files.items():
            write_jsonl(staged_data / f"{name}.jsonl", rows)
        if cfg.model.name_or_path == "testbed":
            create_base_model(cfg.model, cfg.seed, staged_data / layout.base_model.relative_to(layout.data))
    log.info("prepare: %s", ", ".join(f"{name}={len(rows)}" for name, rows in files.items()))
