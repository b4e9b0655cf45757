"""benchmarks/real_model.py's aggregation on two hand-written seed projects (no pipeline run): means and sds over
seeds, the targets' verdicts with their figures, per-type accuracy pooled over seeds, and the --report-only mode."""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # benchmarks import `common` top-level

import real_model  # noqa: E402

KEYS = ("in_distribution/prompt_strict", "in_distribution/prompt_loose", "in_distribution/instruction_strict",
        "unseen_types/prompt_strict", "unseen_types/prompt_loose", "no_constraint/greedy_length",
        "retention_relative_change", "in_distribution/kl_to_sft")
# Per seed, (iteration 0, iteration 1) of each KEYS entry.
METRICS = {
    0: ((0.50, 0.60, 0.55, 0.30, 0.40, 40, 0.0, 0.0), (0.75, 0.80, 0.70, 0.20, 0.45, 80, -0.02, 0.10)),
    1: ((0.40, 0.50, 0.45, 0.20, 0.30, 50, 0.0, 0.0), (0.55, 0.70, 0.60, 0.22, 0.28, 60, -0.04, 0.30)),
}
PAIRS, FLOW_SECONDS = {0: 10, 1: 14}, {0: 1000.0, 1: 2000.0}
STAGES = {"prepare": 100.0, "benchmark-0": 150.0, "sample-1": 200.0, "rank-1": 1.0, "optimize-1": 300.0,
          "benchmark-1": 160.0, "report": 2.0}


def row(split: str, ids: list[str], checks: list[list[bool]]) -> dict:
    return {"split": split, "instruction_id_list": ids, "greedy_checks": checks, "prompt_id": "p"}


NO_COMMA, LOWER, TITLE = "punctuation:no_comma", "change_case:english_lowercase", "detectable_format:title"
EMOJI, NUMBERS = "format:emoji", "count:numbers"
OUTPUTS = {  # (seed, iteration) → benchmark_outputs.jsonl rows; only the strict verdict (first) counts
    (0, 0): [row("in_distribution", [NO_COMMA], [[True, True]]),
             row("in_distribution", [LOWER, NO_COMMA], [[False, True], [False, False]]),
             row("unseen_types", [EMOJI], [[False, False]]), row("no_constraint", [], [])],
    (1, 0): [row("in_distribution", [NO_COMMA], [[False, True]]), row("unseen_types", [NUMBERS], [[True, True]])],
    (0, 1): [row("in_distribution", [NO_COMMA], [[True, True]]),
             row("in_distribution", [LOWER, NO_COMMA], [[True, True], [True, True]]),
             row("unseen_types", [EMOJI], [[False, False]]), row("no_constraint", [], [])],
    (1, 1): [row("in_distribution", [NO_COMMA], [[True, True]]), row("in_distribution", [TITLE], [[True, True]]),
             row("unseen_types", [NUMBERS, EMOJI], [[False, False], [True, True]])],
}


def write_project(root: Path, seed: int) -> Path:
    project = root / f"seed-{seed}"
    for i, directory in enumerate(("sft", "iter-1")):
        folder = project / "artifacts" / directory
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(dict(zip(KEYS, METRICS[seed][i]))))
        (folder / "benchmark_outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in OUTPUTS[seed, i]))
    (project / "artifacts" / "iter-1" / "rank_stats.json").write_text(json.dumps(
        {"pairs": PAIRS[seed], "prompts": 16, "dropped_all_tied": 2, "mean_sample_score": 0.4}))
    (project / "params.yaml").write_text(yaml.safe_dump({"seed": seed, "iterations": 1}))
    (project / "reports").mkdir()
    stages = {key: {"status": "ran", "seconds": seconds} for key, seconds in STAGES.items()}
    (project / "reports" / "summary.json").write_text(json.dumps(
        {"iterations": [], "stages": stages, "wall_seconds": FLOW_SECONDS[seed]}))
    return project


@pytest.fixture
def seeds(tmp_path) -> list[dict]:
    return [real_model.read_project(write_project(tmp_path, seed)) for seed in (0, 1)]


def test_read_project_takes_iteration_zero_from_sft_and_sums_stage_seconds(seeds):
    first = seeds[0]
    assert first["seed"] == 0 and first["flow_seconds"] == 1000.0 and first["not_ran"] == []
    assert first["iterations"][0]["rank_stats"] is None and first["iterations"][1]["rank_stats"]["pairs"] == 10
    assert first["iterations"][0]["metrics"]["no_constraint/greedy_length"] == 40
    # benchmark-0 + benchmark-1 = 150 + 160; the keys in the order a run goes
    assert first["stage_seconds"] == {"prepare": 100.0, "sample": 200.0, "rank": 1.0, "optimize": 300.0,
                                      "benchmark": 310.0, "report": 2.0}
    assert first["iterations"][0]["by_type"]["in_distribution"] == {LOWER: (0, 1), NO_COMMA: (1, 2)}
    assert first["iterations"][0]["by_type"]["no_constraint"] == {}


def test_per_iteration_means_and_sample_sds_over_seeds(seeds):
    table = real_model.per_iteration(seeds)
    assert [row["iteration"] for row in table] == [0, 1]
    strict = table[1]["in_distribution/prompt_strict"]  # seeds 0.75 and 0.55
    assert strict["values"] == [0.75, 0.55]
    assert strict["mean"] == pytest.approx(0.65) and strict["sd"] == pytest.approx(math.sqrt(2 * 0.1**2))
    assert table[0]["in_distribution/prompt_strict"]["mean"] == pytest.approx(0.45)
    assert table[1]["retention_relative_change"]["mean"] == pytest.approx(-0.03)
    assert table[1]["retention_relative_change"]["sd"] == pytest.approx(0.01 * math.sqrt(2))
    assert table[1]["in_distribution/kl_to_sft"]["mean"] == pytest.approx(0.2)
    assert table[1]["no_constraint/greedy_length"]["mean"] == pytest.approx(70.0)
    assert table[0]["pairs"] is None  # the starting model was not trained on pairs
    assert table[1]["pairs"]["mean"] == 12 and table[1]["pairs"]["sd"] == pytest.approx(2 * math.sqrt(2))


def test_targets_verdicts_and_figures(seeds):
    targets = {t["target"][:3]: t for t in real_model.evaluate_targets(seeds)}
    # (a) changes +0.25, +0.15: mean +0.20 >= +0.15 and both up
    assert (targets["(a)"]["verdict"], targets["(a)"]["figure"]) == ("PASS", "+0.200 (+0.250, +0.150)")
    # (b) changes -0.10, +0.02: mean -0.04 < -0.02; loose +0.05, -0.02 → +0.015
    assert (targets["(b)"]["verdict"], targets["(b)"]["figure"]) == ("MISS",
                                                                   "-0.040 (-0.100, +0.020; prompt_loose +0.015)")
    assert targets["(b)"]["value"] == pytest.approx(-0.04)
    # (c) -0.02, -0.04: mean -0.03 >= -0.05
    assert (targets["(c)"]["verdict"], targets["(c)"]["figure"]) == ("PASS", "-0.0300 (-0.0200, -0.0400)")
    # (d) 80/40 = 2.0, 60/50 = 1.2: mean 1.6 > 1.5
    assert (targets["(d)"]["verdict"], targets["(d)"]["figure"]) == ("MISS", "1.60 (2.00, 1.20)")
    # (e) the slowest seed, 2000 s > 1800 s
    assert (targets["(e)"]["verdict"], targets["(e)"]["figure"]) == ("MISS", "2000 (1000, 2000)")


def test_gain_misses_when_one_seed_falls_and_time_is_na_on_a_resumed_run(seeds):
    changed = copy.deepcopy(seeds)
    changed[0]["iterations"][1]["metrics"]["in_distribution/prompt_strict"] = 1.0   # +0.50
    changed[1]["iterations"][1]["metrics"]["in_distribution/prompt_strict"] = 0.35  # -0.05: mean +0.225 still
    changed[1]["flow_seconds"] = 1200.0
    targets = {t["target"][:3]: t for t in real_model.evaluate_targets(changed)}
    assert (targets["(a)"]["verdict"], targets["(a)"]["figure"]) == ("MISS", "+0.225 (+0.500, -0.050)")
    assert (targets["(e)"]["verdict"], targets["(e)"]["figure"]) == ("PASS", "1200 (1000, 1200)")
    changed[1]["not_ran"] = ["prepare", "sample-1"]  # cached: 0 s in summary.json, so 1200 s is a lower bound
    timing = real_model.evaluate_targets(changed)[-1]
    assert (timing["verdict"], timing["figure"]) == ("n/a", "1200 (1000, 1200; 2 stages cached: timing incomplete)")


def test_type_table_pools_seeds_sorted_by_set_then_id(seeds):
    table = [(r["set"], r["instruction_id"], tuple(r["start"]), tuple(r["end"]))
             for r in real_model.type_table(seeds)]
    assert table == [
        ("in_distribution", LOWER, (0, 1), (1, 1)),
        ("in_distribution", TITLE, (0, 0), (1, 1)),  # only in iteration 1's outputs
        ("in_distribution", NO_COMMA, (1, 3), (3, 3)),  # seed 1's loose-only pass does not count
        ("unseen_types", NUMBERS, (1, 1), (0, 1)),
        ("unseen_types", EMOJI, (0, 1), (1, 2)),
    ]


def test_seed_params_applies_overrides_as_yaml_then_iterations_and_seed():
    preset = {"seed": 0, "iterations": 3, "optimize": {"beta": 0.1}}
    params = real_model.seed_params(preset, 2, 1, ("optimize.beta=0.2", "evolve.enabled=true", "seed=9"))
    assert params == {"seed": 2, "iterations": 1, "optimize": {"beta": 0.2}, "evolve": {"enabled": True}}
    assert preset["optimize"]["beta"] == 0.1  # the preset is not changed
    assert real_model.seed_params(preset, 1)["iterations"] == 3
    with pytest.raises(ValueError, match="expected key.path=value"):
        real_model.seed_params(preset, 0, overrides=("optimize.beta",))
    with pytest.raises(ValueError, match="seed is not a section"):
        real_model.seed_params(preset, 0, overrides=("seed.x=1",))


def test_finished_with_needs_the_same_params_and_a_summary_written_after_them(tmp_path):
    project = write_project(tmp_path, 0)
    assert real_model.finished_with(project, {"seed": 0, "iterations": 1})
    assert not real_model.finished_with(project, {"seed": 0, "iterations": 2})
    summary = project / "reports" / "summary.json"
    os.utime(project / "params.yaml", (summary.stat().st_mtime + 10,) * 2)  # params rewritten, run not finished
    assert not real_model.finished_with(project, {"seed": 0, "iterations": 1})


def test_report_only_prints_tables_and_writes_json_and_a_deterministic_plot(tmp_path, monkeypatch, capsys):
    projects = [str(write_project(tmp_path, seed)) for seed in (0, 1)]
    out = tmp_path / "results" / "real_model.json"
    monkeypatch.setattr(sys, "argv", ["real_model.py", "--report-only", *projects, "--out", str(out)])
    real_model.main()
    printed = capsys.readouterr().out
    assert "| in_distribution/prompt_strict | 0.450 ± 0.071 | 0.650 ± 0.141 |" in printed
    assert "| (a) in_distribution prompt_strict change >= +0.15, every seed > 0 | PASS | +0.200 (+0.250, +0.150) |" \
        in printed
    assert "| 1 | 2000 | 100 | 200 | 1 | 300 | 310 | 2 |" in printed
    assert "| in_distribution | punctuation:no_comma | 1/3 (0.33) | 3/3 (1.00) |" in printed
    written = json.loads(out.read_text())
    assert [t["verdict"] for t in written["targets"]] == ["PASS", "MISS", "PASS", "MISS", "MISS"]
    assert [seed["seed"] for seed in written["seeds"]] == [0, 1]
    first = out.with_suffix(".png").read_bytes()
    real_model.plot(real_model.per_iteration([real_model.read_project(Path(p)) for p in projects]),
                    tmp_path / "again.png")
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "again.png").read_bytes() == first


def test_run_seed_logs_the_run_reuses_a_finished_one_and_exits_with_the_logs_tail(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run(command, cwd, env, check, stdout, stderr):  # what `alignloop run` leaves behind, or its failure
        calls.append(cwd)
        stdout.write("".join(f"line {n}\n" for n in range(50)))
        stdout.flush()
        if "fails" in str(cwd):
            raise real_model.subprocess.CalledProcessError(3, command)
        (cwd / "reports").mkdir()
        (cwd / "reports" / "summary.json").write_text("{}")

    monkeypatch.setattr(real_model.subprocess, "run", fake_run)
    params = {"seed": 1, "iterations": 2}
    real_model.run_seed(tmp_path / "ok", params)
    assert yaml.safe_load((tmp_path / "ok" / "params.yaml").read_text()) == params
    assert (tmp_path / "ok" / "run.log").read_text().endswith("line 49\n")
    real_model.run_seed(tmp_path / "ok", params)  # finished with these params: not run again
    assert calls == [tmp_path / "ok"]
    with pytest.raises(SystemExit) as exit_info:
        real_model.run_seed(tmp_path / "fails", params)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "exit 3" in err and "line 49" in err and "line 9\n" not in err  # last 40
