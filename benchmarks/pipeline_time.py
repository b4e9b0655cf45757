"""Time per stage of the default pipeline, then the cost of a fully cached re-run.

Runs `alignloop run` in a fresh directory, then the same command again (every stage must come back Cached), prints
seconds per stage of the first run and a side-by-side table of both runs, and writes it all as JSON.

    python benchmarks/pipeline_time.py                       # ./params.yaml in a temporary directory
    python benchmarks/pipeline_time.py --summary reports/summary.json   # tabulate a finished run only
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def timed_run(workdir: Path) -> tuple[dict, float]:
    alignloop = Path(sys.executable).parent / "alignloop"
    start = time.perf_counter()
    subprocess.run([str(alignloop), "run"], cwd=workdir, check=True)
    elapsed = time.perf_counter() - start
    return json.loads((workdir / "reports" / "summary.json").read_text()), elapsed


def run_twice(params: Path, keep: Path | None) -> list[tuple[dict, float]]:
    workdir = keep or Path(tempfile.mkdtemp(prefix="alignloop-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / "params.yaml").resolve() != params:  # `--keep .` times the project in place
        shutil.copy(params, workdir / "params.yaml")
    runs = [timed_run(workdir), timed_run(workdir)]
    if keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs


def print_runs(runs: list[tuple[dict, float]]) -> list[dict]:
    rows = []
    for label, (summary, process) in zip(("first run", "re-run"), runs):
        statuses = [step["status"] for step in summary["stages"].values()]
        rows.append({"run": label, "process_seconds": round(process, 1), "flow_seconds": summary["wall_seconds"],
                     "orchestration_seconds": round(process - summary["wall_seconds"], 1),
                     "stages_ran": statuses.count("ran"), "stages_cached": statuses.count("cached")})
    print(f"\n{'run':<10}{'process s':>10}{'flow s':>8}{'Prefect s':>10}{'ran':>5}{'cached':>7}")
    for row in rows:
        print(f"{row['run']:<10}{row['process_seconds']:>10.1f}{row['flow_seconds']:>8.1f}"
              f"{row['orchestration_seconds'] or 0:>10.1f}{row['stages_ran']:>5}{row['stages_cached']:>7}")
    print(f"re-run / first run (process): {rows[1]['process_seconds'] / rows[0]['process_seconds']:.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--summary", type=Path, help="tabulate this summary.json instead of running")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (`.`: this project, in place)")
    parser.add_argument("--out", type=Path, default=Path("reports/pipeline_time.json"))
    args = parser.parse_args()

    runs = []
    if args.summary:
        summary, process_seconds = json.loads(args.summary.read_text()), None
    else:
        runs = run_twice(args.params.resolve(), args.keep)
        summary, process_seconds = runs[0]
    per_stage: dict[str, float] = defaultdict(float)
    for key, step in summary["stages"].items():
        per_stage[re.sub(r"-\d+$", "", key)] += step["seconds"]
    flow_seconds = summary["wall_seconds"]
    stages_total = sum(per_stage.values())
    print(f"{'stage':<12}{'seconds':>10}{'share':>8}")
    for name, seconds in sorted(per_stage.items(), key=lambda item: -item[1]):
        print(f"{name:<12}{seconds:>10.1f}{seconds / flow_seconds:>8.1%}")
    print(f"{'(flow)':<12}{flow_seconds - stages_total:>10.1f}{(flow_seconds - stages_total) / flow_seconds:>8.1%}"
          "   orchestration, MLflow, report")
    print(f"{'flow total':<12}{flow_seconds:>10.1f}")
    if process_seconds is not None:
        print(f"{'process':<12}{process_seconds:>10.1f}   incl. imports and Prefect start-up")
    result = {"per_stage_seconds": dict(per_stage), "per_step_seconds": {k: v["seconds"] for k, v in
                                                                         summary["stages"].items()},
              "flow_seconds": flow_seconds, "process_seconds": process_seconds,
              "runs": print_runs(runs) if runs else []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
