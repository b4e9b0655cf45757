"""The default run of this checkout against another checkout (e.g. an earlier commit), alternating on the same
machine: process wall time, seconds per stage, and the final in-distribution greedy and sampled scores per seed.

    git worktree add /tmp/base <commit>
    python benchmarks/side_by_side.py --baseline /tmp/base --seeds 0 1 2

The baseline runs its own package and params.yaml (PYTHONPATH puts its tree first); only `seed` is overridden.
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
from collections import defaultdict
from pathlib import Path

import yaml

from common import project_env

REPO = Path(__file__).resolve().parents[1]


def timed_run(tree: Path, seed: int, workdir: Path) -> dict:
    params = yaml.safe_load((tree / "params.yaml").read_text())
    params["seed"] = seed
    workdir.mkdir(parents=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = project_env(PYTHONPATH=str(tree))
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "alignloop"), "run"], cwd=workdir, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    summary = json.loads((workdir / "reports" / "summary.json").read_text())
    per_stage: dict[str, float] = defaultdict(float)
    for key, step in summary["stages"].items():
        per_stage[re.sub(r"-\d+$", "", key)] += step["seconds"]
    final = summary["iterations"][-1]["metrics"]
    return {"seed": seed, "process_seconds": round(seconds, 1), "flow_seconds": summary["wall_seconds"],
            "stages": {k: round(v, 1) for k, v in per_stage.items()},
            "greedy": final["in_distribution/greedy_gold"], "sampled": final["in_distribution/sampled_gold"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the commit to compare with")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("reports/side_by_side.json"))
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="alignloop-side-by-side-"))
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    for seed in args.seeds:  # alternate, so both see the same machine conditions
        for label, tree in (("baseline", args.baseline.resolve()), ("current", REPO)):
            runs[label].append(timed_run(tree, seed, root / f"{label}-{seed}"))
            print(f"{label:<9} seed {seed}: {json.dumps(runs[label][-1])}", flush=True)

    def mean(label: str, key: str) -> float:
        return statistics.mean(run[key] for run in runs[label])

    stages = sorted({s for label in runs for run in runs[label] for s in run["stages"]},
                    key=lambda s: -runs["baseline"][0]["stages"].get(s, 0))
    print(f"\n{'':<16}{'baseline':>10}{'current':>10}{'ratio':>8}")
    for key in ("process_seconds", "flow_seconds"):
        print(f"{key:<16}{mean('baseline', key):>10.1f}{mean('current', key):>10.1f}"
              f"{mean('current', key) / mean('baseline', key):>8.2f}")
    for stage in stages:
        base = statistics.mean(run["stages"].get(stage, 0.0) for run in runs["baseline"])
        cur = statistics.mean(run["stages"].get(stage, 0.0) for run in runs["current"])
        print(f"  {stage:<14}{base:>10.1f}{cur:>10.1f}{(cur / base if base else float('nan')):>8.2f}")
    for key in ("greedy", "sampled"):
        values = {label: [run[key] for run in runs[label]] for label in runs}
        print(f"{'final ' + key:<16}" + "".join(
            f"{statistics.mean(v):>10.3f}" for v in values.values()) + "   per seed: "
            + "; ".join(f"{label} {', '.join(f'{x:.3f}' for x in v)}" for label, v in values.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"baseline": str(args.baseline), "runs": runs}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
