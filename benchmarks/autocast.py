"""Seconds of our optimize stage in fp32 against bf16 autocast (`optimize.autocast: bfloat16`) on the CPU: the same
policy, pairs and optimizer steps, timed alternately in one process, `--repeats` times each; the ratio of medians is
the figure. On the testbed's tiny model bf16 autocast made a CPU training step 2.2× slower (element-wise work
dominates there, docs/performance.md); a real model's larger matmuls may tip it the other way. Also reported: each
mode's loss over its last steps, so a faster mode that trains differently shows.

    python benchmarks/autocast.py --policy DIR --pairs-file PROJECT/artifacts/iter-1/pairs.jsonl --max-length 320 \\
        --batch-size 8 --micro-batch-size 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from dpo_throughput import make_pairs, run_ours

from alignloop.config import ModelConfig
from alignloop.io import read_json, read_jsonl
from alignloop.models.policy import load_tokenizer
from alignloop.paths import Layout
from alignloop.testbed.model import create_base_model

MODES = ("none", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, help="a saved policy (default: a testbed model)")
    parser.add_argument("--pairs-file", type=Path, help="a run's pairs.jsonl (default: made-up testbed pairs)")
    parser.add_argument("--pairs", type=int, default=64, help="at most this many pairs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--micro-batch-size", type=int, help="pairs per forward/backward")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=96, help="prompt + response tokens (model.max_length)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/autocast.json"))
    args = parser.parse_args()

    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    losses: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policy = args.policy or create_base_model(ModelConfig(), 0, root / "sft")
        pairs = (read_jsonl(args.pairs_file)[:args.pairs] if args.pairs_file
                 else make_pairs(args.pairs, 0, load_tokenizer(policy, ModelConfig())))
        for repeat in range(args.repeats):  # alternate, so slow spells of the machine hit both
            for mode in MODES:
                project = root / f"{mode}-{repeat}"
                times[mode].append(run_ours(project, policy, pairs, args.batch_size, args.epochs, args.max_length,
                                            args.micro_batch_size, autocast=mode))
                history = read_json(Layout(project).train_log(1))["history"]
                losses[mode].append(statistics.mean(step["loss"] for step in history[-max(1, len(history) // 4):]))
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"{'autocast':<10}{'median s':>10}{'last-quarter loss':>19}")
    for mode in MODES:
        print(f"{mode:<10}{median[mode]:>10.1f}{statistics.mean(losses[mode]):>19.4f}")
    speedup = median["none"] / median["bfloat16"]
    print(f"{len(pairs)} pairs, batch {args.batch_size}: bf16 autocast is {speedup:.2f}× the speed of fp32")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"policy": str(args.policy or "testbed"), "pairs": len(pairs),
                                    "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size,
                                    "max_length": args.max_length, "epochs": args.epochs, "seconds": times,
                                    "last_quarter_loss": losses, "speedup_bf16": speedup}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
