"""Optimize throughput in one process against two (`accelerate launch`, DDP over gloo), on the same pairs, alternating
runs on the same machine: pairs/s of the training loop (what the stage logs) and the stage's wall time (with the
launch and the reference pass).

    python benchmarks/optimize_processes.py --repeats 3

On a CPU machine the two processes share the same cores that one process would use, so this measures the cost of
the launch and of gradient synchronization, not a speed-up; on GPUs each process has its own device.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import project_env

REPO = Path(__file__).resolve().parents[1]
ALIGNLOOP = str(Path(sys.executable).parent / "alignloop")
# The default testbed model on enough pairs for full batches of 64; SFT kept short (only the pairs matter).
PARAMS = {"iterations": 1, "testbed": {"sft_examples": 2000, "prompt_pool_size": 2000, "eval_size": 24},
          "sft": {"epochs": 1}, "sample": {"num_prompts": 1000},
          "benchmark": {"num_samples": 1}, "optimize": {"epochs": 2}}
LAUNCHERS = {"1 process": {"launcher": "python"},
             "2 processes (DDP)": {"launcher": "accelerate",
                                   "accelerate_config": str(REPO / "configs/accelerate/cpu_ddp_2proc.yaml")}}


def timed_optimize(project: Path, pipeline: dict) -> dict:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pipeline"] = {**params.get("pipeline", {}), **pipeline}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    result = subprocess.run([ALIGNLOOP, "stage", "optimize", "--iteration", "1"], cwd=project, env=project_env(),
                            capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    found = re.search(r"optimize: (\d+) pairs, (\d+) steps in ([\d.]+) s \(([\d.]+) pairs/s\)",
                      result.stdout + result.stderr)
    assert found, (result.stdout + result.stderr)[-2000:]
    return {"pairs": int(found[1]), "steps": int(found[2]), "loop_seconds": float(found[3]),
            "pairs_per_second": float(found[4]), "stage_seconds": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("reports/optimize_processes.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alignloop-processes-") as tmp:
        project = Path(tmp)
        (project / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
        subprocess.run([ALIGNLOOP, "run"], cwd=project, env=project_env(), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        runs: dict[str, list[dict]] = {label: [] for label in LAUNCHERS}
        for repeat in range(args.repeats):
            for label, pipeline in LAUNCHERS.items():
                runs[label].append(timed_optimize(project, pipeline))
                print(f"repeat {repeat}, {label}: {runs[label][-1]}", flush=True)
    base = statistics.mean(run["pairs_per_second"] for run in runs["1 process"])
    print(f"\n{'launcher':<20} {'pairs/s':>10} {'ratio':>7} {'stage s':>9}")
    table = {}
    for label, values in runs.items():
        rate = statistics.mean(run["pairs_per_second"] for run in values)
        stage = statistics.mean(run["stage_seconds"] for run in values)
        table[label] = {"pairs_per_second": round(rate, 1), "ratio": round(rate / base, 3),
                        "stage_seconds": round(stage, 1)}
        print(f"{label:<20} {rate:>10.1f} {rate / base:>7.2f} {stage:>9.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"params": PARAMS, "runs": runs, "table": table}, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
