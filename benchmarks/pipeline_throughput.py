"""Throughput of a finished run, from its artifacts and reports/summary.json: responses/s and tokens/s of each
sample stage, pairs/s of each optimize stage (steps × batch size over the stage's seconds, launch included).

    python benchmarks/pipeline_throughput.py --project DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def throughput(project: Path) -> dict[str, dict[str, float]]:
    summary = json.loads((project / "reports" / "summary.json").read_text())
    rows = {}
    for key, step in summary["stages"].items():
        name, _, iteration = key.rpartition("-")
        if step["status"] != "ran" or not step["seconds"]:
            continue
        seconds = step["seconds"]
        if name == "sample":
            samples = _jsonl(project / f"artifacts/iter-{iteration}/samples.jsonl")
            rows[key] = {"seconds": seconds, "responses/s": len(samples) / seconds,
                         "tokens/s": sum(row["num_tokens"] for row in samples) / seconds}
        elif name == "optimize":
            log = json.loads((project / f"artifacts/iter-{iteration}/train_log.json").read_text())
            batch = (yaml.safe_load((project / "params.yaml").read_text()).get("optimize") or {}).get("batch_size", 64)
            rows[key] = {"seconds": seconds, "pairs/s": log.get("steps", 0) * batch / seconds}
        elif name == "sft":
            rows[key] = {"seconds": seconds}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = throughput(args.project)
    print(f"{'stage':<12} {'seconds':>9} {'responses/s':>12} {'tokens/s':>10} {'pairs/s':>9}")
    for key, row in rows.items():
        cells = [f"{row[name]:.1f}" if name in row else "" for name in ("responses/s", "tokens/s", "pairs/s")]
        print(f"{key:<12} {row['seconds']:>9.1f} {cells[0]:>12} {cells[1]:>10} {cells[2]:>9}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
