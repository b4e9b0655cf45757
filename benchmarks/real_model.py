"""The real preset (presets/smollm2_ifeval.yaml: SmolLM2-135M-Instruct, ShareGPT prompts with IFEval constraints,
ranked by the verifier) over several seeds: per iteration and evaluation set, mean ± sd over seeds; its targets,
each PASS or MISS with its figure; accuracy per constraint type; a plot. Prints tables, writes JSON and a PNG.

    python benchmarks/real_model.py --seeds 0 1 2 [--iterations 3] [--set optimize.beta=0.2 ...]
    python benchmarks/real_model.py --report-only /tmp/alignloop-real-model-x/seed-0 ...   # re-print, no run

One project per seed under --workdir (seed-<n>/, its `alignloop run` output in run.log), one after another. A
project whose finished run (reports/summary.json newer than params.yaml) has the same params is read, not run
again: a cached re-run would overwrite summary.json's stage seconds with zeros.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import yaml

from alignloop.io import read_json, read_jsonl
from alignloop.paths import Layout
from alignloop.verifiers.metrics import accuracy_by_type

from common import mean_sd, project_env

PRESET = Path(__file__).resolve().parents[1] / "presets" / "smollm2_ifeval.yaml"
STAGES = ("prepare", "sample", "rank", "optimize", "benchmark", "report")  # where a run's time goes, in order
RANK_KEYS = ("pairs",)  # read from rank_stats.json; every other row from metrics.json
ROWS = (  # (key, digits): the per-iteration table
    ("in_distribution/prompt_strict", 3), ("in_distribution/prompt_loose", 3),
    ("in_distribution/instruction_strict", 3), ("unseen_types/prompt_strict", 3), ("unseen_types/prompt_loose", 3),
    ("no_constraint/greedy_length", 1), ("retention_relative_change", 4), ("in_distribution/kl_to_sft", 4),
    ("pairs", 1))
MIN_GAIN, MAX_UNSEEN_DROP, MIN_RETENTION, MAX_LENGTH_RATIO, MAX_SECONDS = 0.15, 0.02, -0.05, 1.5, 30 * 60


def seed_params(preset: dict, seed: int, iterations: int | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """The preset with `a.b=value` overrides (value read as YAML), then `iterations` and `seed`, set."""
    params = json.loads(json.dumps(preset))  # a deep copy
    for override in overrides:
        path, sep, text = override.partition("=")
        if not sep or not path:
            raise ValueError(f"--set {override!r}: expected key.path=value")
        *parents, leaf = path.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {override!r}: {key} is not a section")
        node[leaf] = yaml.safe_load(text)
    if iterations is not None:
        params["iterations"] = iterations
    params["seed"] = seed
    return params


def finished_with(project: Path, params: dict) -> bool:
    """Whether the project holds a finished run of exactly these params."""
    layout = Layout(project)
    params_path = project / "params.yaml"
    return (params_path.is_file() and layout.summary.is_file() and yaml.safe_load(params_path.read_text()) == params
            and layout.summary.stat().st_mtime >= params_path.stat().st_mtime)


def run_seed(project: Path, params: dict) -> None:
    """`alignloop run` in the project (output appended to run.log); exits 1 with the log's tail when it fails."""
    if finished_with(project, params):
        print(f"{project}: finished run with these params, reused", flush=True)
        return
    project.mkdir(parents=True, exist_ok=True)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = project / "run.log"
    print(f"{project}: alignloop run (log: {log})", flush=True)
    with log.open("a") as handle:
        try:
            subprocess.run([str(Path(sys.executable).parent / "alignloop"), "run"], cwd=project, env=project_env(),
                           check=True, stdout=handle, stderr=subprocess.STDOUT)
        except subprocess.CalledProcessError as exc:
            print(f"{project}: alignloop run failed (exit {exc.returncode}); the end of {log}:", file=sys.stderr)
            print("\n".join(log.read_text().splitlines()[-40:]), file=sys.stderr)
            sys.exit(1)


def stage_seconds(stages: dict[str, dict]) -> dict[str, float]:
    """summary.json's `stages` ({"sample-1": {"status", "seconds"}, ...}) summed per stage over iterations."""
    totals = dict.fromkeys(STAGES, 0.0)
    for key, step in stages.items():
        name = re.sub(r"-\d+$", "", key)
        totals[name] = totals.get(name, 0.0) + step["seconds"]
    return {name: round(seconds, 2) for name, seconds in totals.items()}


def read_project(project: Path) -> dict:
    """One seed's finished run: per iteration (0 = the starting model) its metrics, rank stats and per-type counts."""
    layout = Layout(project)
    if not layout.summary.is_file():
        raise FileNotFoundError(f"{project}: no reports/summary.json (no finished `alignloop run` there)")
    params, summary = yaml.safe_load((project / "params.yaml").read_text()), read_json(layout.summary)
    iterations = []
    for i in range(params["iterations"] + 1):
        rows = read_jsonl(layout.benchmark_outputs(i))
        iterations.append({
            "metrics": read_json(layout.metrics(i)), "rank_stats": read_json(layout.rank_stats(i)) if i else None,
            "by_type": {split: accuracy_by_type([r for r in rows if r["split"] == split])
                        for split in sorted({r["split"] for r in rows})}})
    return {"project": str(project), "seed": params["seed"], "flow_seconds": summary["wall_seconds"],
            "stage_seconds": stage_seconds(summary["stages"]),
            "not_ran": sorted(key for key, step in summary["stages"].items() if step["status"] != "ran"),
            "iterations": iterations}


def value(iteration: dict, key: str) -> float | None:
    source = iteration["rank_stats"] if key in RANK_KEYS else iteration["metrics"]
    return (source or {}).get(key)


def last_iteration(seeds: list[dict]) -> int:
    return min(len(seed["iterations"]) for seed in seeds) - 1


def per_iteration(seeds: list[dict]) -> list[dict]:
    """Per iteration, each ROWS key as {"mean", "sd", "values" (one per seed)}; None where no seed has it."""
    table = []
    for i in range(last_iteration(seeds) + 1):
        row: dict = {"iteration": i}
        for key, _ in ROWS:
            values = [v for seed in seeds if (v := value(seed["iterations"][i], key)) is not None]
            row[key] = dict(zip(("mean", "sd"), mean_sd(values)), values=values) if values else None
        table.append(row)
    return table


def evaluate_targets(seeds: list[dict]) -> list[dict]:
    """Each target as {"target", "verdict" (PASS, MISS, or n/a for a time measured on a resumed run), "value",
    "figure"}: (a)-(d) on the mean over seeds of each seed's figure at the last iteration against iteration 0,
    (e) on the slowest seed."""
    last = last_iteration(seeds)

    def at(i: int, key: str) -> list[float]:
        return [seed["iterations"][i]["metrics"][key] for seed in seeds]

    def change(key: str) -> list[float]:
        return [end - start for start, end in zip(at(0, key), at(last, key))]

    def target(name: str, per_seed: list[float], passes: Callable[[float], bool], spec: str = "+.3f", note: str = "",
               aggregate: Callable[[list[float]], float] = statistics.mean) -> dict:
        value, values = aggregate(per_seed), ", ".join(f"{v:{spec}}" for v in per_seed)
        return {"target": name, "verdict": "PASS" if passes(value) else "MISS", "value": value,
                "figure": f"{value:{spec}} ({values}{note})"}

    gain, unseen = change("in_distribution/prompt_strict"), change("unseen_types/prompt_strict")
    loose = f"; prompt_loose {statistics.mean(change('unseen_types/prompt_loose')):+.3f}"
    length = [end / start if start else math.inf
              for start, end in zip(at(0, "no_constraint/greedy_length"), at(last, "no_constraint/greedy_length"))]
    seconds, cached = [seed["flow_seconds"] for seed in seeds], sum(len(seed["not_ran"]) for seed in seeds)
    timing = target(f"(e) slowest seed's flow seconds <= {MAX_SECONDS}", seconds,
                    lambda slowest: slowest <= MAX_SECONDS, ".0f", aggregate=max,
                    note=f"; {cached} stages cached: timing incomplete" if cached else "")
    if cached and timing["verdict"] == "PASS":  # a lower bound under the limit says nothing
        timing["verdict"] = "n/a"
    return [
        target(f"(a) in_distribution prompt_strict change >= +{MIN_GAIN}, every seed > 0", gain,
               lambda mean: mean >= MIN_GAIN and min(gain) > 0),
        target(f"(b) unseen_types prompt_strict change >= -{MAX_UNSEEN_DROP}", unseen,
               lambda mean: mean >= -MAX_UNSEEN_DROP, note=loose),
        target(f"(c) retention_relative_change at the end >= {MIN_RETENTION}", at(last, "retention_relative_change"),
               lambda mean: mean >= MIN_RETENTION, "+.4f"),
        target(f"(d) no_constraint greedy_length end/start within 1/{MAX_LENGTH_RATIO}..{MAX_LENGTH_RATIO}", length,
               lambda mean: 1 / MAX_LENGTH_RATIO <= mean <= MAX_LENGTH_RATIO, ".2f"),
        timing,
    ]


def pooled_by_type(seeds: list[dict], iteration: int) -> dict[tuple[str, str], tuple[int, int]]:
    """(set, instruction id) → (followed, total) summed over seeds."""
    pooled: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for seed in seeds:
        for split, counts in seed["iterations"][iteration]["by_type"].items():
            for instruction_id, (followed, total) in counts.items():
                pooled[split, instruction_id][0] += followed
                pooled[split, instruction_id][1] += total
    return {key: (followed, total) for key, (followed, total) in pooled.items()}


def type_table(seeds: list[dict]) -> list[dict]:
    """Per set and constraint type, sorted: (followed, total) at iteration 0 and at the last iteration."""
    start, end = pooled_by_type(seeds, 0), pooled_by_type(seeds, last_iteration(seeds))
    return [{"set": split, "instruction_id": instruction_id, "start": start.get((split, instruction_id), (0, 0)),
             "end": end.get((split, instruction_id), (0, 0))} for split, instruction_id in sorted({*start, *end})]


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    x = [row["iteration"] for row in table]
    panels = ((("in_distribution/prompt_strict", "unseen_types/prompt_strict"), "prompt-level strict accuracy"),
              (("retention_relative_change",), "retention: relative change of log-likelihood"))
    for axis, (keys, title) in zip(axes, panels):
        for key in keys:
            axis.errorbar(x, [row[key]["mean"] for row in table], yerr=[row[key]["sd"] for row in table],
                          marker="o", capsize=3, label=key)
        axis.set(xlabel="iteration", xticks=x, title=f"{title} (mean ± sd)")
        axis.legend()
    axes[0].set_ylim(0, 1)
    axes[1].axhline(MIN_RETENTION, linestyle="--", color="grey")  # target (c)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, metadata={"Software": None})  # no tag or date: same data, same bytes
    plt.close(figure)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}\n| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def print_report(seeds: list[dict], table: list[dict], targets: list[dict], types: list[dict]) -> None:
    def cell(summary: dict | None, digits: int) -> str:
        return f"{summary['mean']:.{digits}f} ± {summary['sd']:.{digits}f}" if summary else "—"

    def accuracy(counts: tuple[int, int]) -> str:
        return f"{counts[0]}/{counts[1]} ({counts[0] / counts[1]:.2f})" if counts[1] else "—"

    print_table(f"seeds {', '.join(str(seed['seed']) for seed in seeds)}: mean ± sd per iteration (0 = start)",
                ["metric", *(f"iter {row['iteration']}" for row in table)],
                [[key, *(cell(row[key], digits) for row in table)] for key, digits in ROWS])
    print_table("targets", ["target", "verdict", "figure (per seed)"],
                [[target["target"], target["verdict"], target["figure"]] for target in targets])
    stages = list(seeds[0]["stage_seconds"])
    print_table("seconds per seed (each stage summed over iterations)", ["seed", "flow", *stages],
                [[seed["seed"], f"{seed['flow_seconds']:.0f}", *(f"{seed['stage_seconds'].get(s, 0.0):.0f}"
                                                                  for s in stages)] for seed in seeds])
    print_table("accuracy per constraint type (greedy, strict), pooled over seeds",
                ["set", "instruction", "iter 0", f"iter {len(table) - 1}"],
                [[row["set"], row["instruction_id"], accuracy(row["start"]), accuracy(row["end"])] for row in types])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, help="override the preset's iterations")
    parser.add_argument("--params", type=Path, default=PRESET, help="the preset to run")
    parser.add_argument("--workdir", type=Path, help="where the seed projects go (default: a new dir under /tmp)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="params overrides, e.g. optimize.beta=0.2 (value read as YAML)")
    parser.add_argument("--report-only", type=Path, nargs="+", metavar="PROJECT",
                        help="aggregate these finished projects; run nothing")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real_model.json"))
    parser.add_argument("--plot", type=Path, help="the PNG (default: --out with .png)")
    args = parser.parse_args()

    projects = args.report_only
    if not projects:
        preset = yaml.safe_load(args.params.read_text())
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="alignloop-real-model-"))
        print(f"projects under {workdir}", flush=True)
        projects = [workdir / f"seed-{seed}" for seed in args.seeds]
        for seed, project in zip(args.seeds, projects):  # one after another: the runs share the CPUs
            try:
                params = seed_params(preset, seed, args.iterations, tuple(args.overrides))
            except ValueError as exc:
                parser.error(str(exc))
            run_seed(project, params)
    seeds = [read_project(project) for project in projects]
    table, targets, types = per_iteration(seeds), evaluate_targets(seeds), type_table(seeds)
    print_report(seeds, table, targets, types)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run = {"params": None if args.report_only else str(args.params), "overrides": args.overrides}
    args.out.write_text(json.dumps({**run, "seeds": seeds, "per_iteration": table, "targets": targets,
                                    "by_type": types}, indent=2) + "\n")
    plot_path = args.plot or args.out.with_suffix(".png")
    plot(table, plot_path)
    print(f"wrote {args.out} and {plot_path}")


if __name__ == "__main__":
    main()
