"""The reward-model stage's parts: label flipping, detection scores, preference data, and the training loop on a tiny
random llama learning a rule it can see (chosen responses end with a check mark)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from alignloop.config import ConfigError, ModelConfig, parse_config
from alignloop.config.reward import PreferenceSetConfig, RewardConfig
from alignloop.models.policy import load_tokenizer
from alignloop.models.reward_losses import preference_strength
from alignloop.models.reward_model import encode_pair
from alignloop.models.reward_training import load_classifier, pair_margins, train_reward_model
from alignloop.sources.preferences import held_out, read_preference_pairs
from alignloop.sources.prompts import DataError
from alignloop.tasks.reward_model import accuracy, detection, flip_some
from alignloop.testbed.model import create_base_model

MODEL = ModelConfig(n_layer=1, n_embd=32, n_head=2, max_length=64)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return create_base_model(MODEL, 0, tmp_path_factory.mktemp("rm") / "base")


@pytest.fixture(scope="module")
def tokenizer(base_dir):
    return load_tokenizer(base_dir, MODEL)


def _pairs(tokenizer, count: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Chosen = the same random text as rejected plus a check mark: a rule a one-layer model learns in a few
    dozen steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        prompt = "".join(rng.choice("abcdef") for _ in range(6))
        text = "".join(rng.choice("uvwxyz") for _ in range(rng.randint(3, 8)))
        rows.append((encode_pair(tokenizer, prompt, text + "✓"), encode_pair(tokenizer, prompt, text + "x")))
    return rows


def _flip(pairs, indices):
    return [(r, c) if k in indices else (c, r) for k, (c, r) in enumerate(pairs)]


SETTINGS = RewardConfig(enabled=True, epochs=6, batch_size=16, learning_rate=3e-3, warmup_ratio=0.0)


def test_flip_some_flips_an_exact_share_and_records_it():
    pairs = [{"chosen": f"c{k}", "rejected": f"r{k}", "chosen_score": 1.0, "rejected_score": 0.0} for k in range(50)]
    out = flip_some(pairs, 0.2, seed=3)
    flipped = [row for row in out if row["flipped"]]
    assert len(flipped) == 10
    for row in flipped:
        assert row["chosen"].startswith("r") and row["rejected"].startswith("c") and row["chosen_score"] == 0.0
    assert all(row["chosen"].startswith("c") for row in out if not row["flipped"])
    assert flip_some(pairs, 0.2, seed=3) == out  # the seed alone decides
    assert flip_some(pairs, 0.0, seed=3) == [{**row, "flipped": False} for row in pairs]


def test_detection_precision_and_recall_by_hand():
    flagged = [True, True, False, True, False, False]
    flipped = [True, False, False, True, True, False]
    # 2 hits; 3 flagged; 3 flipped
    assert detection(flagged, flipped) == {"flipped": 3, "flagged": 3, "flagged_and_flipped": 2,
                                           "precision": 2 / 3, "recall": 2 / 3}
    assert detection([False] * 3, [False] * 3)["precision"] is None


def test_accuracy_counts_ties_half():
    assert accuracy(torch.tensor([1.0, -1.0, 0.0, 2.0])) == pytest.approx(0.625)


def test_training_learns_a_visible_rule(base_dir, tokenizer):
    train, held = _pairs(tokenizer, 96, seed=0), _pairs(tokenizer, 48, seed=1)
    untrained = load_classifier(base_dir, MODEL, tokenizer.pad_token_id, seed=5)
    before = accuracy(pair_margins(untrained, held, tokenizer.pad_token_id, 64, "before"))
    trained = train_reward_model(base_dir, tokenizer, train, SETTINGS, MODEL, seed=5)
    after = accuracy(pair_margins(trained.model, held, tokenizer.pad_token_id, 64, "after"))
    assert after >= 0.9 > before + 0.2
    assert trained.history[-1]["bt"] < trained.history[0]["bt"]
    again = train_reward_model(base_dir, tokenizer, train, SETTINGS, MODEL, seed=5)
    assert [h["loss"] for h in again.history] == [h["loss"] for h in trained.history]  # deterministic


def test_ensemble_strength_finds_flipped_labels_above_the_base_rate(base_dir, tokenizer):
    clean = _pairs(tokenizer, 120, seed=2)
    flipped = set(random.Random(0).sample(range(len(clean)), 24))  # 20 % label noise
    noisy = _flip(clean, flipped)
    margins = torch.stack([pair_margins(train_reward_model(base_dir, tokenizer, noisy, SETTINGS.model_copy(
        update={"epochs": 3}), MODEL, seed=seed).model, noisy, tokenizer.pad_token_id, 64, "m") for seed in (1, 2, 3)])
    strength, spread = preference_strength(margins)
    scores = detection((strength < 0).tolist(), [k in flipped for k in range(len(noisy))])
    assert scores["precision"] > 0.5 > 0.2  # far above the 20 % a random flag would get
    assert scores["recall"] > 0.5
    assert (spread >= 0).all()


@pytest.fixture(scope="module")
def noisy_40(base_dir, tokenizer):
    """100 pairs with 40 of their labels flipped, the ensemble's μ on them, and clean held-out pairs."""
    clean, held = _pairs(tokenizer, 100, seed=4), _pairs(tokenizer, 48, seed=5)
    noisy = _flip(clean, set(random.Random(1).sample(range(len(clean)), 40)))
    short = SETTINGS.model_copy(update={"epochs": 3})
    margins = torch.stack([pair_margins(train_reward_model(base_dir, tokenizer, noisy, short, MODEL, seed=s).model,
                                        noisy, tokenizer.pad_token_id, 64, "m") for s in (1, 2, 3)])
    raw = train_reward_model(base_dir, tokenizer, noisy, SETTINGS, MODEL, seed=9)
    return noisy, held, preference_strength(margins)[0], accuracy(pair_margins(raw.model, held, tokenizer.pad_token_id,
                                                                                64, "raw"))


@pytest.mark.parametrize("variant", ["flip", "flip_margin", "soft_label_margin"])
def test_denoising_is_no_worse_than_raw_bt_on_held_out_pairs_at_40_percent_noise(base_dir, tokenizer, noisy_40,
                                                                                  variant):
    """With 40 % of labels flipped, denoising by the ensemble's μ gives clean-label accuracy at least as high as raw
    BT's (on this easy rule the ensemble finds most flipped pairs)."""
    noisy, held, strength, raw_accuracy = noisy_40
    denoised = train_reward_model(base_dir, tokenizer, noisy, SETTINGS.model_copy(update={"denoising": variant}),
                                  MODEL, seed=9, strength=strength)
    assert accuracy(pair_margins(denoised.model, held, tokenizer.pad_token_id, 64, "denoised")) >= raw_accuracy


def test_contrastive_and_metarm_terms_are_logged_and_change_training(base_dir, tokenizer):
    train = _pairs(tokenizer, 32, seed=6)
    groups = [[ids for pair in train[k:k + 2] for ids in pair] for k in range(0, 32, 2)]  # 16 groups of 4
    short = SETTINGS.model_copy(update={"epochs": 1})
    plain = train_reward_model(base_dir, tokenizer, train, short, MODEL, seed=1)
    both = train_reward_model(base_dir, tokenizer, train, short.model_copy(update={
        "contrastive_weight": 1.0, "metarm": True, "metarm_groups": 4}), MODEL, seed=1, meta_groups=groups)
    first = both.history[0]
    assert {"contrastive", "difference_score", "bt"} <= set(first)
    k = 4  # J ∈ [(k−1)/(2k), (k−1)/k)
    assert (k - 1) / (2 * k) <= first["difference_score"] < (k - 1) / k
    assert first["loss"] == pytest.approx(first["bt"] + first["contrastive"], rel=1e-5)
    assert [h["loss"] for h in both.history] != [h["loss"] for h in plain.history]
    with pytest.raises(ValueError, match="MetaRM needs"):
        train_reward_model(base_dir, tokenizer, train, short.model_copy(update={"metarm": True}), MODEL, seed=1)
    with pytest.raises(ValueError, match="preference strength"):
        train_reward_model(base_dir, tokenizer, train, short.model_copy(update={"denoising": "flip"}), MODEL, seed=1)


def test_bf16_autocast_trains_close_to_fp32_and_is_really_applied(base_dir, tokenizer):
    """reward.autocast: the steps run in bf16 (their losses differ from fp32's in the low digits), learn the rule as
    well, and MetaRM's meta step runs under it too."""
    train, held = _pairs(tokenizer, 96, seed=0), _pairs(tokenizer, 48, seed=1)
    short = SETTINGS.model_copy(update={"epochs": 2})
    fp32 = train_reward_model(base_dir, tokenizer, train, short, MODEL, seed=5)
    bf16 = train_reward_model(base_dir, tokenizer, train, short.model_copy(update={"autocast": "bfloat16"}), MODEL,
                              seed=5)
    fp32_losses, bf16_losses = [h["loss"] for h in fp32.history], [h["loss"] for h in bf16.history]
    assert bf16_losses != fp32_losses
    assert bf16_losses == pytest.approx(fp32_losses, abs=0.05)
    assert bf16_losses[-1] < bf16_losses[0]
    assert accuracy(pair_margins(bf16.model, held, tokenizer.pad_token_id, 64, "bf16")) == pytest.approx(
        accuracy(pair_margins(fp32.model, held, tokenizer.pad_token_id, 64, "fp32")), abs=0.1)
    assert next(bf16.model.parameters()).dtype == torch.float32  # autocast, not bf16 weights
    groups = [[ids for pair in train[k:k + 2] for ids in pair] for k in range(0, 32, 2)]
    meta = short.model_copy(update={"epochs": 1, "metarm": True, "metarm_groups": 4})
    meta_fp32 = train_reward_model(base_dir, tokenizer, train[:32], meta, MODEL, seed=1, meta_groups=groups)
    meta_bf16 = train_reward_model(base_dir, tokenizer, train[:32], meta.model_copy(update={"autocast": "bfloat16"}),
                                   MODEL, seed=1, meta_groups=groups)
    assert [h["difference_score"] for h in meta_bf16.history] != [h["difference_score"] for h in meta_fp32.history]
    assert [h["loss"] for h in meta_bf16.history] == pytest.approx([h["loss"] for h in meta_fp32.history], abs=0.05)


# ---------------------------------------------------------------- preference data

def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_preference_pairs_from_text_and_messages(tmp_path):
    rows = [{"prompt": f"question {k}", "chosen": f"good {k}", "rejected": f"bad {k}"} for k in range(40)]
    rows.append({"prompt": "same", "chosen": "x", "rejected": "x"})  # identical: skipped
    rows.append({"prompt": "", "chosen": "x", "rejected": "y"})  # no prompt: skipped
    pairs = read_preference_pairs(PreferenceSetConfig(path=str(_write_jsonl(tmp_path / "p.jsonl", rows))), tmp_path,
                                  eval_fraction=0.25)
    assert len(pairs) == 40
    assert {row["split"] for row in pairs} == {"train", "eval"}
    assert all(row["split"] == ("eval" if held_out(row["prompt"], 0.25) else "train") for row in pairs)
    chats = [{"chosen": [{"role": "user", "content": f"q{k}"}, {"role": "assistant", "content": f"yes {k}"}],
              "rejected": [{"role": "user", "content": f"q{k}"}, {"role": "assistant", "content": f"no {k}"}]}
             for k in range(40)]
    spec = PreferenceSetConfig(path=str(_write_jsonl(tmp_path / "c.jsonl", chats)), prompt_column=None)
    first = read_preference_pairs(spec, tmp_path, eval_fraction=0.25)[0]
    assert (first["prompt"], first["chosen"], first["rejected"]) == ("q0", "yes 0", "no 0")


def test_preference_data_without_chosen_is_one_line_naming_the_key(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "better": "a", "rejected": "b"}])
    with pytest.raises(DataError, match=r"^reward\.data\.chosen_column: no column 'chosen'") as info:
        read_preference_pairs(PreferenceSetConfig(path=str(path)), tmp_path, eval_fraction=0.1)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- params

def test_reward_params_are_checked_together():
    with pytest.raises(ConfigError, match="rank.reward_model: required"):
        parse_config({"rank": {"ranker": "reward_model"}})
    assert parse_config({"rank": {"ranker": "reward_model"}, "reward": {"enabled": True}}).reward.enabled
    with pytest.raises(ConfigError, match="rank.reward_model: leave it empty"):
        parse_config({"rank": {"ranker": "reward_model", "reward_model": "rm"}, "reward": {"enabled": True}})
    with pytest.raises(ConfigError, match="ensemble_size"):
        parse_config({"reward": {"denoising": "flip", "ensemble_size": 0}})
    with pytest.raises(ConfigError, match="reward.data: required"):
        parse_config({"data": {"train": {"path": "t.jsonl"}, "eval": {"test": {"path": "e.jsonl"}}},
                      "sft": {"enabled": False}, "rank": {"ranker": "reward_model"}, "reward": {"enabled": True}})
    with pytest.raises(ConfigError, match="testbed.label_noise"):
        parse_config({"testbed": {"label_noise": 0.7}})
