"""The `cfn` stage on testbed features: counts accumulate across iterations through the saved replay buffer, and
COPO with α = 0 trains exactly like the base loss."""

from __future__ import annotations

import pytest
import torch
from row_helpers import sample_row
from safetensors.torch import load_file
from transformers import AutoTokenizer

from alignloop.config import Config
from alignloop.io import read_json, read_jsonl, write_jsonl
from alignloop.paths import Layout
from alignloop.tasks import optimize
from alignloop.tasks.cfn import load_visits, replay_buffer, run_cfn
from alignloop.testbed.model import create_base_model

from token_helpers import response_ids

TINY = {"model": {"n_layer": 1, "n_embd": 32, "n_head": 2},
        "cfn": {"steps": 1500, "batch_size": 32},
        "optimize": {"batch_size": 4, "epochs": 1, "learning_rate": 1e-3, "warmup_ratio": 0.0}}
FREQUENT, RARE = ("reverse: k3fa", "af3k"), ("sort: q1zb", "1bqz")


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "model"
    create_base_model(Config.model_validate(TINY).model, 0, path)
    return path


def _iteration(layout: Layout, iteration: int, small_testbed_data, frequent_visits: int) -> None:
    """Samples: FREQUENT `frequent_visits` times, RARE once, and 12 other prompts' answers once each."""
    others = [(row["prompt"], row["answer"]) for row in small_testbed_data["train_prompts"][12 * iteration:][:12]]
    visits = [FREQUENT] * frequent_visits + [RARE] + others
    tokenizer = AutoTokenizer.from_pretrained(layout.policy(0))
    write_jsonl(layout.samples(iteration), [sample_row(f"p{k}", 0, r, prompt=p, response_ids=response_ids(tokenizer, r,
                                                                                                          True))
                                            for k, (p, r) in enumerate(visits)])
    # each pair's chosen response is the first sample row holding it, as the rank stage records it
    first_row = {"frequent": 0, "rare": frequent_visits, **{f"o{k}": frequent_visits + 1 + k for k in range(12)}}
    write_jsonl(layout.pairs(iteration), [
        {"pair_id": name, "prompt_id": f"p{first_row[name]}", "prompt": p, "chosen": r, "rejected": r[::-1] + "x",
         "chosen_ids": response_ids(tokenizer, r, True), "rejected_ids": response_ids(tokenizer, r[::-1] + "x", True),
         "chosen_finished": True, "rejected_finished": True, "chosen_score": 0.85, "rejected_score": 0.2,
         "chosen_index": 0, "rejected_index": 1}
        for name, (p, r) in (("frequent", FREQUENT), ("rare", RARE), *((f"o{k}", o) for k, o in enumerate(others)))])


def _bonuses(layout: Layout, iteration: int) -> dict[str, float]:
    return {row["pair_id"]: row["bonus"] for row in read_jsonl(layout.cfn_bonuses(iteration))}


def _layout(tmp_path, sft_dir) -> Layout:
    layout = Layout(tmp_path)
    layout.policy(0).parent.mkdir(parents=True)
    layout.policy(0).symlink_to(sft_dir, target_is_directory=True)
    return layout


def test_counts_accumulate_across_iterations(tmp_path, sft_dir, small_testbed_data):
    layout = _layout(tmp_path, sft_dir)
    cfg = Config.model_validate({**TINY, "iterations": 2})
    _iteration(layout, 1, small_testbed_data, frequent_visits=20)
    run_cfn(cfg, layout, 1)
    first = _bonuses(layout, 1)
    assert first["frequent"] < 0.5 * first["rare"]

    # iteration 2 (the same start model stands in for policy 1): one more visit each, the buffer reloaded from disk
    layout.policy(1).symlink_to(sft_dir, target_is_directory=True)
    _iteration(layout, 2, small_testbed_data, frequent_visits=1)
    run_cfn(cfg, layout, 2)
    second = _bonuses(layout, 2)
    assert second["frequent"] < 0.5 * second["rare"]
    old, added = load_visits(layout, 1), load_visits(layout, 2)  # each iteration stores only its own visits
    assert len(old) == 33 and len(added) == 14
    new = replay_buffer(layout, range(1, 3), old.features.shape[1], old.flips.shape[1])
    assert torch.equal(new.flips[:len(old)], old.flips) and torch.equal(new.features[len(old):], added.features)
    stats = read_json(layout.cfn(2) / "stats.json")
    assert stats["buffer_visits"] == 33 + 14 and stats["final_loss"] < stats["first_loss"]

    # replay: current forgets iteration 1, so the frequent response looks rare again
    current = Config.model_validate({**TINY, "iterations": 2, "cfn": {**TINY["cfn"], "replay": "current"}})
    run_cfn(current, layout, 2)
    forgetful = _bonuses(layout, 2)
    assert forgetful["frequent"] > 0.5 * forgetful["rare"]
    assert read_json(layout.cfn_stats(2))["buffer_visits"] == 14


def test_copo_with_alpha_zero_trains_exactly_like_the_base_loss(tmp_path, sft_dir, small_testbed_data):
    weights = {}
    for name, exploration in (("base", {}), ("copo0", {"exploration": "copo", "copo_alpha": 0.0}),
                              ("copo", {"exploration": "copo", "copo_alpha": 5.0})):
        layout = _layout(tmp_path / name, sft_dir)
        _iteration(layout, 1, small_testbed_data, frequent_visits=3)
        cfg = Config.model_validate({**TINY, "optimize": {**TINY["optimize"], **exploration}})
        if exploration:
            run_cfn(cfg, layout, 1)
        optimize.run_optimize(cfg, layout, 1)
        weights[name] = load_file(str(layout.policy(1) / "model.safetensors"))
        log = read_json(layout.train_log(1))
        if name == "copo":
            assert log["final"]["copo_term"] > 0 and log["final"]["copo_bonus"] > 0
    assert all(torch.equal(weights["base"][key], weights["copo0"][key]) for key in weights["base"])
    assert any(not torch.equal(weights["base"][key], weights["copo"][key]) for key in weights["base"])


def test_missing_bonuses_are_a_clear_error(tmp_path, sft_dir, small_testbed_data):
    layout = _layout(tmp_path, sft_dir)
    _iteration(layout, 1, small_testbed_data, frequent_visits=2)
    layout.cfn(1).mkdir(parents=True)
    write_jsonl(layout.cfn_bonuses(1), [])
    cfg = Config.model_validate({**TINY, "optimize": {**TINY["optimize"], "exploration": "copo"}})
    with pytest.raises(ValueError, match="have no bonus.*re-run the cfn stage"):
        optimize.run_optimize(cfg, layout, 1)
    assert not layout.policy(1).exists()


def test_cfn_runs_before_optimize_only_with_copo_and_chains_its_buffer(tmp_path):
    import yaml

    from alignloop.pipeline.dvcfile import render_dvc_yaml
    from alignloop.pipeline.stages import plan

    cfg = Config.model_validate({"iterations": 2, "optimize": {"exploration": "copo"}})
    keys = [stage.key(i) for stage, i in plan(cfg)]
    assert keys.index("rank-1") < keys.index("cfn-1") < keys.index("optimize-1")
    assert not any(k.startswith("cfn") for k in [s.key(i) for s, i in plan(Config.model_validate({}))])
    (tmp_path / "params.yaml").write_text("iterations: 2\noptimize:\n  exploration: copo\n")
    stages = yaml.safe_load(render_dvc_yaml(cfg, tmp_path))["stages"]
    assert stages["cfn-2"]["outs"] == ["artifacts/iter-2/cfn"]
    assert "artifacts/iter-1/cfn/visits.safetensors" in stages["cfn-2"]["deps"]  # replay: all
    assert "artifacts/iter-2/cfn/bonuses.jsonl" in stages["optimize-2"]["deps"]
