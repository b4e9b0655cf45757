"""What the CFN counts at the default scale: for one iteration of a finished COPO run, its pseudo-counts of that
iteration's distinct visits against how often each was sampled (exact repeats) and against how many buffer visits
lie near it (similar pairs); prints a table and writes JSON.

    python benchmarks/cfn_counts.py reports/exploration-workdir/seed-0 --iteration 1

Distances are in the head's own standardised feature space. A CFN that counts similar pairs at the resolution of a
radius r shows a high positive rank correlation between its pseudo-count and the neighbour count at r. The control
is the same head untrained (same input standardisation, random weights): geometry alone already ranks crowded
states apart from outlying ones, and training should add to that.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from safetensors.torch import load_file

from alignloop.models.cfn_diagnostics import neighbour_counts, spearman
from alignloop.models.coin_flipping import CFNHead, pseudo_counts


def load_head(path: Path) -> tuple[CFNHead, CFNHead]:
    """The trained head, and an untrained one of the same shape and input standardisation (the control)."""
    state = load_file(str(path))
    hidden, width = state["net.1.weight"].shape[1], state["net.1.weight"].shape[0]
    head, untrained = (CFNHead(hidden, state["net.3.weight"].shape[0], width, seed=seed) for seed in (0, 1))
    head.load_state_dict(state)
    untrained.input_mean.copy_(head.input_mean)
    untrained.input_std.copy_(head.input_std)
    return head.eval(), untrained.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path, help="a project directory whose run used optimize.exploration: copo")
    parser.add_argument("--iteration", type=int, default=1)
    parser.add_argument("--radii", default="2,4,6,8", help="neighbourhood radii, in standardised feature units")
    parser.add_argument("--out", type=Path, help="JSON output (default: reports/cfn_counts-iter-<i>.json)")
    args = parser.parse_args()

    cfn_dir = args.workdir / "artifacts" / f"iter-{args.iteration}" / "cfn"
    samples_path = args.workdir / "artifacts" / f"iter-{args.iteration}" / "samples.jsonl"
    if not (cfn_dir / "head.safetensors").exists():
        raise SystemExit(f"error: {cfn_dir} has no CFN; run the pipeline with optimize.exploration: copo first")
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
    # the replay buffer: every iteration's visits up to this one (each cfn stage stores only its own), in order
    features = torch.cat([load_file(str(cfn_dir.parent.parent / f"iter-{k}" / "cfn" / "visits.safetensors"))
                          ["features"] for k in range(1, args.iteration + 1)])
    current = features[len(features) - len(samples):]  # this iteration's visits come last, in sample order
    head, untrained = load_head(cfn_dir / "head.safetensors")

    first: dict[tuple[str, tuple[int, ...]], int] = {}
    repeats: dict[tuple[str, tuple[int, ...]], int] = {}
    for k, row in enumerate(samples):
        key = (row["prompt"], tuple(row["response_ids"]))  # the ids are the visit: its features come from them
        first.setdefault(key, k)
        repeats[key] = repeats.get(key, 0) + 1
    index = torch.tensor(list(first.values()))
    sampled = [float(repeats[key]) for key in first]
    counted = pseudo_counts(head, current[index]).tolist()
    control = pseudo_counts(untrained, current[index]).tolist()

    radii = [float(r) for r in args.radii.split(",")]
    standardised = (features - head.input_mean) / head.input_std  # the head's own scale
    queries = (current[index] - head.input_mean) / head.input_std
    near = neighbour_counts(queries, standardised, radii)
    # visits of earlier iterations (featurised by earlier models) only
    near_earlier = neighbour_counts(queries, standardised[:len(features) - len(samples)], radii)
    result = {"workdir": str(args.workdir), "iteration": args.iteration, "buffer_visits": len(features),
              "iteration_visits": len(samples), "distinct_visits": len(first),
              "median_pseudo_count": statistics.median(counted),
              "median_pseudo_count_untrained": statistics.median(control),
              "spearman_exact_repeats": spearman(counted, sampled),
              "spearman_exact_repeats_untrained": spearman(control, sampled),
              "radii": {str(r): {"median_neighbours": float(near[:, j].median()),
                                 "median_neighbours_from_earlier_iterations": float(near_earlier[:, j].median()),
                                 "spearman": spearman(counted, near[:, j].double().tolist()),
                                 "spearman_untrained": spearman(control, near[:, j].double().tolist())}
                        for j, r in enumerate(radii)},
              "by_repeats": {}}
    for n in sorted(set(sampled)):
        rows = [k for k, s in enumerate(sampled) if s == n]
        result["by_repeats"][int(n)] = {"distinct_visits": len(rows),
                                        "median_pseudo_count": statistics.median(counted[k] for k in rows),
                                        "median_neighbours": {str(r): float(near[rows, j].median())
                                                              for j, r in enumerate(radii)}}

    print(f"iteration {args.iteration}: {len(samples)} visits ({len(first)} distinct), buffer {len(features)}, "
          f"median pseudo-count {result['median_pseudo_count']:.1f} "
          f"(untrained {result['median_pseudo_count_untrained']:.1f})")
    print(f"\n{'counted against':<28}{'median neighbours':>18}{'from earlier iterations':>25}{'Spearman':>10}"
          f"{'untrained':>11}")
    print(f"{'times sampled (1-4)':<28}{statistics.median(sampled):>18.0f}{'':>25}"
          f"{result['spearman_exact_repeats']:>10.3f}{result['spearman_exact_repeats_untrained']:>11.3f}")
    for r, row in result["radii"].items():
        print(f"{f'buffer visits within r={r}':<28}{row['median_neighbours']:>18.0f}"
              f"{row['median_neighbours_from_earlier_iterations']:>25.0f}{row['spearman']:>10.3f}"
              f"{row['spearman_untrained']:>11.3f}")
    print(f"\n{'times sampled':<15}{'distinct':>10}{'median pseudo-count':>21}"
          + "".join(f"{f'near r={r}':>12}" for r in result["radii"]))
    for n, row in result["by_repeats"].items():
        print(f"{n:<15}{row['distinct_visits']:>10}{row['median_pseudo_count']:>21.1f}"
              + "".join(f"{v:>12.0f}" for v in row["median_neighbours"].values()))
    out = args.out or Path("reports") / f"cfn_counts-iter-{args.iteration}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
