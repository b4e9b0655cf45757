"""Stage `report`: `reports/iterations.json`, one flat row of benchmark metrics per iteration for DVC's metrics and
plots (the rows themselves come from alignloop/report/rows.py), and the report's figures in `reports/plots/`
(alignloop/report/plots.py). The HTML page around them holds run facts (wall times, commit) and is written after
the run by alignloop/report/html.py, outside the cached stage."""

from __future__ import annotations

from typing import Any

from alignloop.config import Config
from alignloop.io import atomic_path, write_json
from alignloop.paths import Layout
from alignloop.report.plots import report_figures, save_png
from alignloop.report.rows import iteration_rows


def run_report(cfg: Config, layout: Layout) -> list[dict[str, Any]]:
    rows = iteration_rows(cfg, layout)
    # Flat rows for `dvc plots` (x: iteration); DVC needs the same keys in every row, so benchmark metrics only.
    write_json(layout.iterations_table, [{"iteration": row["iteration"], **row["metrics"]} for row in rows])
    with atomic_path(layout.report_plots) as tmp:
        tmp.mkdir()
        for name, figure in report_figures(cfg, layout, rows).items():
            if figure is not None:
                save_png(figure, tmp / f"{name}.png")
    return rows
