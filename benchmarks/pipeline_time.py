"""Time per stage of the default pipeline: runs `alignloop run` in a fresh directory (or reads a finished run's
reports/summary.json), prints a table of seconds per stage and writes it as JSON.

    python benchmarks/pipeline_time.py                       # fresh run of ./params.yaml in a temporary directory
    python benchmarks/pipeline_time.py --summary reports/summary.json   # tabulate a finished run
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


def run_fresh(params: Path, keep: Path | None) -> tuple[dict, float]:
    workdir = keep or Path(tempfile.mkdtemp(prefix="alignloop-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(params, workdir / "params.yaml")
    alignloop = Path(sys.executable).parent / "alignloop"
    start = time.perf_counter()
    subprocess.run([str(alignloop), "run"], cwd=workdir, check=True)
    elapsed = time.perf_counter() - start
    summary = json.loads((workdir / "reports" / "summary.json").read_text())
    if keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return summary, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--summary", type=Path, help="tabulate this summary.json instead of running")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    parser.add_argument("--out", type=Path, default=Path("reports/pipeline_time.json"))
    args = parser.parse_args()

    if args.summary:
        summary, process_seconds = json.loads(args.summary.read_text()), None
    else:
        summary, process_seconds = run_fresh(args.params.resolve(), args.keep)
    per_stage: dict[str, float] = defaultdict(float)
    for key, seconds in summary["stage_seconds"].items():
        per_stage[re.sub(r"-\d+$", "", key)] += seconds
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
    result = {"per_stage_seconds": dict(per_stage), "per_step_seconds": summary["stage_seconds"],
              "flow_seconds": flow_seconds, "process_seconds": process_seconds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
