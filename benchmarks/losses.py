"""Every preference loss on the testbed pipeline, same seed and budget; prints a table and writes JSON.

One project directory is reused: prepare, SFT and iteration 1's sampling come from the cache after the first loss,
so each further loss costs only its optimize stages and what follows them.

    python benchmarks/losses.py                              # all losses, params.yaml's iterations
    python benchmarks/losses.py --iterations 1 --losses dpo,simpo,tdpo2

Columns (policy after the last iteration, in_distribution split unless named): greedy and sampled gold score,
harder / unseen greedy gold, token entropy of samples, distinct-2 of sampled responses (distinct character bigrams /
all bigrams; the testbed tokenizer is character-level), KL to the SFT model estimated on the policy's own samples
(mean of log π(y|x) − log π_SFT(y|x) per response, on the sampled token ids: the benchmark stage's
`<split>/kl_to_sft`), and the optimize stages' seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from common import load_params, run_pipeline

ALL_LOSSES = ("dpo", "cdpo", "ipo", "simpo", "tdpo1", "tdpo2", "srdpo", "sripo")


def distinct_2(responses: list[str]) -> float:
    bigrams = [text[k:k + 2] for text in responses for k in range(len(text) - 1)]
    return len(set(bigrams)) / max(1, len(bigrams))


def run_loss(workdir: Path, params: dict, loss: str) -> dict:
    summary, process_seconds = run_pipeline(workdir, {**params, "optimize": {**params["optimize"], "loss": loss}})
    last = summary["iterations"][-1]
    iteration, metrics = last["iteration"], last["metrics"]
    outputs = [json.loads(line) for line in (workdir / "artifacts" / f"iter-{iteration}" /
                                              "benchmark_outputs.jsonl").read_text().splitlines()]
    sampled = [text for row in outputs if row["split"] == "in_distribution" for text in row["sampled"]]
    return {
        "loss": loss, "iteration": iteration,
        "greedy": metrics["in_distribution/greedy_gold"], "sampled": metrics["in_distribution/sampled_gold"],
        "harder": metrics["harder/greedy_gold"], "unseen": metrics["unseen_composition/greedy_gold"],
        "entropy": metrics["in_distribution/sampled_entropy"], "distinct_2": distinct_2(sampled),
        "kl_to_sft": metrics["in_distribution/kl_to_sft"],
        "optimize_seconds": sum(step["seconds"] for key, step in summary["stages"].items()
                                if key.startswith("optimize-")),
        "process_seconds": process_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--losses", default=",".join(ALL_LOSSES))
    parser.add_argument("--iterations", type=int, help="override params.yaml's iterations")
    parser.add_argument("--workdir", type=Path, default=Path("reports/losses-workdir"))
    parser.add_argument("--out", type=Path, default=Path("reports/losses.json"))
    args = parser.parse_args()

    params = load_params(args.params, args.iterations)
    shutil.rmtree(args.workdir / "reports", ignore_errors=True)

    rows = []
    header = (f"{'loss':<7}{'greedy':>8}{'sampled':>9}{'harder':>8}{'unseen':>8}{'entropy':>9}{'dist-2':>8}"
              f"{'KL-SFT':>8}{'opt s':>7}")
    print(header)
    for loss in args.losses.split(","):
        row = run_loss(args.workdir, params, loss)
        rows.append(row)
        print(f"{loss:<7}{row['greedy']:>8.3f}{row['sampled']:>9.3f}{row['harder']:>8.3f}{row['unseen']:>8.3f}"
              f"{row['entropy']:>9.3f}{row['distinct_2']:>8.3f}{row['kl_to_sft']:>8.2f}{row['optimize_seconds']:>7.0f}",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"iterations": params["iterations"], "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
