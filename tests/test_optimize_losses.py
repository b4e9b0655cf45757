"""The optimize stage with every loss of the registry, on a tiny model: finite, learning, and computing only what the
loss needs (no reference model for SimPO, the KL for TDPO, the prompted passes for Sr-*)."""

from __future__ import annotations

import pytest
import torch
from row_helpers import pair_row
from safetensors.torch import load_file

from alignloop.config import Config
from alignloop.io import read_json, read_jsonl, write_jsonl
from alignloop.models.losses import LOSSES
from alignloop.paths import Layout
from alignloop.tasks import optimize
from alignloop.testbed.model import create_base_model

from token_helpers import response_ids

TINY = {"model": {"n_layer": 1, "n_embd": 32, "n_head": 2, "max_length": 160},  # room for Sr's quality prompt
        "optimize": {"batch_size": 4, "epochs": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0}}


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "model"
    create_base_model(Config.model_validate(TINY).model, 0, path)
    return path


def _project(tmp_path, sft_dir, small_testbed_data) -> Layout:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    layout = Layout(tmp_path)
    layout.policy(0).parent.mkdir(parents=True)
    layout.policy(0).symlink_to(sft_dir, target_is_directory=True)
    rows = []
    for index, prompt in enumerate(small_testbed_data["train_prompts"][:8]):
        chosen, rejected = prompt["answer"], prompt["answer"][::-1] + "xyz"
        rows.append(pair_row(f"p{index}", prompt["prompt"], chosen, rejected,
                             chosen_ids=response_ids(tokenizer, chosen, True),
                             rejected_ids=response_ids(tokenizer, rejected, index % 2 == 0),
                             rejected_finished=index % 2 == 0, chosen_score=0.85, rejected_score=0.1))
    write_jsonl(layout.pairs(1), rows)
    return layout


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains_and_loads_only_what_it_needs(loss, tmp_path, sft_dir, small_testbed_data, monkeypatch):
    layout = _project(tmp_path, sft_dir, small_testbed_data)
    loaded = []
    real_load = optimize.load_policy

    def counting_load(path, *args, **kwargs):
        loaded.append(path)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(optimize, "load_policy", counting_load)
    cfg = Config.model_validate({**TINY, "optimize": {**TINY["optimize"], "loss": loss}})
    optimize.run_optimize(cfg, layout, 1)

    log = read_json(layout.train_log(1))
    assert log["loss"] == loss and log["pairs"] == 8 and log["steps"] == 4
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in log["history"])
    spec = LOSSES[loss]
    # The starting policy is the reference: only TDPO, which reads it per batch, loads a frozen copy.
    assert len(loaded) == (2 if spec.needs_kl else 1)
    metrics = log["final"]
    assert ("kl_chosen" in metrics) == spec.needs_kl
    assert ("refinement_margin" in metrics) == spec.needs_refinement
    if spec.needs_kl:
        assert log["history"][0]["kl_chosen"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at step 0
        assert metrics["kl_chosen"] > 0
    if spec.needs_refinement:
        assert log["history"][0]["refinement_margin"] == pytest.approx(0.0, abs=1e-5)
        assert abs(log["history"][-1]["refinement_margin"]) > 1e-4  # the prompted passes see the policy move
    before, after = load_file(str(sft_dir / "model.safetensors")), load_file(
        str(layout.policy(1) / "model.safetensors"))
    assert any(not torch.equal(before[name], after[name]) for name in before)
    # Four steps at lr 1e-3 move the chosen responses up against the rejected ones.
    first, last = log["history"][0], log["history"][-1]
    assert last["reward_margin"] > first["reward_margin"]


def _needs(layout: Layout, tokenizer) -> list[int]:
    """Prompt + longest response tokens of each pair, without the quality prompt."""
    from token_helpers import tokenize_text

    return [max(len(t.prompt_ids) + len(t.response_ids)
                for t in (tokenize_text(tokenizer, row["prompt"], row[side], row[f"{side}_finished"], 10_000)
                          for side in ("chosen", "rejected")))
            for row in read_jsonl(layout.pairs(1))]


def test_refinement_prompt_too_long_for_the_model_is_an_error(tmp_path, sft_dir, small_testbed_data):
    layout = _project(tmp_path, sft_dir, small_testbed_data)
    cfg = Config.model_validate({**TINY, "optimize": {**TINY["optimize"], "loss": "srdpo",
                                                      "refinement_prompt": "Please answer well. " * 8}})
    with pytest.raises(ValueError, match=r"optimize.refinement_prompt leaves too little room: \d+ of 8 pairs"):
        optimize.run_optimize(cfg, layout, 1)
    assert not layout.policy(1).exists()


def test_pairs_the_quality_prompt_would_cut_get_no_refinement(tmp_path, sft_dir, small_testbed_data):
    from transformers import AutoTokenizer

    layout = _project(tmp_path, sft_dir, small_testbed_data)
    needs = sorted(_needs(layout, AutoTokenizer.from_pretrained(sft_dir)))
    # A prompt of exactly the room the sixth-longest pair leaves ("\n\n" joins it to the query): longer pairs are cut.
    room = TINY["model"]["max_length"] - needs[5] - 2
    cfg = Config.model_validate({**TINY, "optimize": {**TINY["optimize"], "loss": "srdpo",
                                                      "refinement_prompt": "x" * room}})
    optimize.run_optimize(cfg, layout, 1)
    expected = sum(need > needs[5] for need in needs)
    assert 1 <= expected <= 2
    assert read_json(layout.train_log(1))["refinement_unfit_pairs"] == expected


def test_unfit_pairs_have_zero_prompted_margin():
    from alignloop.models.logprobs import Tokenized

    class Constant(torch.nn.Module):  # sequence_logps only needs a causal LM's logits (and a weight to locate)
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 5)})()

    from alignloop.models.objective import Forward, PromptedMargin, ReferenceSums

    pair = (Tokenized([1, 2], [3, 4]), Tokenized([1, 2], [3]))
    fits = torch.tensor([True, False])
    provider = PromptedMargin([pair, pair], ReferenceSums(torch.tensor([-1.0, -1.0]), torch.tensor([-3.0, -3.0])),
                              fits, 0)
    fwd = Forward(Constant(), [0, 1], {}, torch.zeros(4, 1), torch.zeros(4, 1), None)
    margin = provider.fields(fwd)["prompted_margin"]
    # log p = log(1/5) per token: chosen −2·log 5 + 1, rejected −log 5 + 3, so h = −log 5 − 2 where it fits.
    assert margin.tolist() == pytest.approx([-torch.log(torch.tensor(5.0)).item() - 2, 0.0])


def test_micro_batches_of_a_batch_larger_than_the_pairs_still_step(tmp_path, sft_dir, small_testbed_data):
    """8 pairs, batch_size 16: every batch is all 8 pairs. In micro-batches of 3 (3 + 3 + 2) the optimizer must step
    after the batch's last micro-batch, giving the update of one 8-pair batch."""
    weights = {}
    for micro in (None, 3):
        layout = _project(tmp_path / f"micro-{micro}", sft_dir, small_testbed_data)
        cfg = Config.model_validate({**TINY, "optimize": {**TINY["optimize"], "batch_size": 16,
                                                          "micro_batch_size": micro}})
        optimize.run_optimize(cfg, layout, 1)
        weights[micro] = load_file(layout.policy(1) / "model.safetensors")
    start = load_file(sft_dir / "model.safetensors")
    assert max((weights[None][name] - start[name]).abs().max() for name in start) > 1e-4  # it trained
    for name, tensor in weights[None].items():
        assert torch.allclose(weights[3][name], tensor, atol=1e-6), name
