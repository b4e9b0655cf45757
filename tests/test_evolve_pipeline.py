"""eva in the pipeline: where `evolve` sits in the plan and in dvc.yaml, and a tiny run that samples iteration 2
from the creator's output, then grows by one iteration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alignloop.config import Config
from alignloop.io import read_jsonl
from alignloop.paths import Layout
from alignloop.pipeline.dvcfile import render_dvc_yaml
from alignloop.pipeline.stages import plan

from pipeline_helpers import ALIGNLOOP, continue_run, run, set_params, statuses


def _keys(cfg: Config) -> list[str]:
    return [stage.key(i) for stage, i in plan(cfg)]


def test_evolve_runs_after_rank_in_every_iteration_but_the_last():
    cfg = Config.model_validate({"iterations": 3, "evolve": {"enabled": True}})
    keys = _keys(cfg)
    assert [k for k in keys if k.startswith("evolve")] == ["evolve-1", "evolve-2"]
    for i in (1, 2):
        assert keys.index(f"rank-{i}") < keys.index(f"evolve-{i}") < keys.index(f"sample-{i + 1}")
    assert not any(k.startswith("evolve") for k in _keys(Config.model_validate({"iterations": 3})))


def test_dvc_yaml_wires_the_creator_output_into_the_next_sample(tmp_path):
    (tmp_path / "params.yaml").write_text("iterations: 2\nevolve:\n  enabled: true\n")
    cfg = Config.model_validate({"iterations": 2, "evolve": {"enabled": True}})
    stages = yaml.safe_load(render_dvc_yaml(cfg, tmp_path))["stages"]
    assert "artifacts/iter-1/next_prompts.jsonl" in stages["evolve-1"]["outs"]
    assert {"artifacts/iter-1/prompts.jsonl", "artifacts/iter-1/scores.jsonl"} <= set(stages["evolve-1"]["deps"])
    assert "artifacts/iter-1/next_prompts.jsonl" in stages["sample-2"]["deps"]
    assert "data/train_prompts.jsonl" in stages["sample-1"]["deps"]
    assert "data/train_prompts.jsonl" not in stages["sample-2"]["deps"]


@pytest.mark.slow
def test_tiny_run_trains_on_evolved_prompts_and_grows(tiny_run: Path, tmp_path: Path) -> None:
    project = continue_run(tiny_run, tmp_path / "eva", {"iterations": 2, "evolve": {"enabled": True}},
                           cached=("prepare", "sft", "benchmark-0", "sample-1"))
    layout = Layout(project)
    assert statuses(project)["evolve-1"] == "ran" and "evolve-2" not in statuses(project)
    next_prompts = read_jsonl(layout.next_prompts(1))
    sampled = read_jsonl(layout.prompts(2))
    assert [row["prompt"] for row in sampled] == [row["prompt"] for row in next_prompts]
    assert sum(row["operator"] != "pool" for row in sampled) == round(0.8 * 48)
    graded = {row["prompt_id"] for row in read_jsonl(layout.scores(2))}
    assert graded == {row["prompt_id"] for row in sampled}  # the gold ranker graded every evolved prompt

    set_params(project, {"iterations": 3})
    run([ALIGNLOOP, "run"], project)
    ran = {key for key, status in statuses(project).items() if status == "ran"}
    assert ran == {"evolve-2", "sample-3", "rank-3", "optimize-3", "benchmark-3", "report"}
    assert len(read_jsonl(layout.prompts(3))) == 48
