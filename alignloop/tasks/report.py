"""Stage `report`: `reports/iterations.json`, one flat row of benchmark metrics per iteration for DVC's metrics
and plots (the rows themselves come from alignloop/iteration_rows.py)."""

from __future__ import annotations

from typing import Any

from alignloop.config import Config
from alignloop.io import write_json
from alignloop.iteration_rows import iteration_rows
from alignloop.paths import Layout


def run_report(cfg: Config, layout: Layout) -> list[dict[str, Any]]:
    rows = iteration_rows(cfg, layout)
    # Flat rows for `dvc plots` (x: iteration); DVC needs the same keys in every row, so benchmark metrics only.
    write_json(layout.iterations_table, [{"iteration": row["iteration"], **row["metrics"]} for row in rows])
    return rows
