"""The local "bring your own model" fixture: loadable like a hub checkpoint, with the quirks real checkpoints have."""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import pytest
import torch
from datasets import load_dataset
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from alignloop.testbed.fixture import IM_END, REWARD_KEYWORDS, Fixture, build_fixture, main

UF_COLUMNS = {"prompt", "prompt_id", "messages", "chosen", "rejected", "score_chosen", "score_rejected"}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> Fixture:
    start = time.perf_counter()
    built = build_fixture(tmp_path_factory.mktemp("fixture"), seed=0)
    print(f"build_fixture: {time.perf_counter() - start:.2f}s")
    return built


@pytest.fixture(scope="module")
def policy_tokenizer(fixture):
    return AutoTokenizer.from_pretrained(fixture.policy)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _chat_length(tokenizer, prompt: str) -> int:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def test_layout_and_build_time(fixture, tmp_path):
    assert fixture.policy == fixture.root / "policy" and fixture.sft_data == fixture.root / "prompts" / "sft.parquet"
    for directory in (fixture.policy, fixture.reward_model):
        names = {p.name for p in directory.iterdir()}
        assert "model.safetensors" in names and not any(n.endswith((".bin", ".pt")) for n in names)
    start = time.perf_counter()
    build_fixture(tmp_path, seed=3)
    seconds = time.perf_counter() - start
    print(f"second build (warm imports): {seconds:.2f}s")
    assert seconds < 30  # budget is ~10 s; generous for a loaded 2-core machine


def test_policy_loads_like_a_hub_chat_model(fixture, policy_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(fixture.policy, use_safetensors=True)
    config = model.config
    assert config.model_type == "qwen2" and config.tie_word_embeddings
    assert config.hidden_size // config.num_attention_heads in (32, 64)
    assert (config.num_hidden_layers, config.num_key_value_heads, config.max_position_embeddings) == (2, 1, 512)
    assert config.vocab_size == len(policy_tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"policy parameters: {n_params}")
    assert 50_000 < n_params < 1_000_000
    ids = policy_tokenizer("List three facts about owls.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(policy_tokenizer)) and torch.isfinite(logits).all()


def test_end_of_turn_is_not_eos(fixture, policy_tokenizer):
    tok = policy_tokenizer
    im_end = tok.convert_tokens_to_ids(IM_END)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id == tok.eos_token_id != im_end
    assert tok.model_max_length == 512
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    model = AutoModelForCausalLM.from_pretrained(fixture.policy, use_safetensors=True)
    assert set(model.generation_config.eos_token_id) == {im_end, tok.eos_token_id}
    assert model.generation_config.pad_token_id == tok.pad_token_id == model.config.pad_token_id
    assert model.config.eos_token_id == tok.eos_token_id
    # {% generation %} marks exactly the reply and its <|im_end|> for TRL's assistant-only loss.
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello there."}]
    out = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(masked) == "Hello there.<|im_end|>"


def test_bpe_merges_and_ids_do_not_round_trip(fixture, policy_tokenizer):
    tok = policy_tokenizer
    merged = tok(" photosynthesis", add_special_tokens=False)["input_ids"]
    assert len(merged) == 1 < len(" photosynthesis")  # one token for 15 characters
    by_char = tok.convert_tokens_to_ids(list("Ġphotosynthesis"))  # byte-level: "Ġ" is the space
    assert tok.unk_token_id not in by_char and len(by_char) == 15
    assert tok.decode(by_char) == " photosynthesis"
    assert tok(tok.decode(by_char), add_special_tokens=False)["input_ids"] == merged != by_char
    # AutoTokenizer rebuilds a qwen2 tokenizer from vocab + merges; it must still match the saved tokenizer.json.
    raw = Tokenizer.from_file(str(fixture.policy / "tokenizer.json"))
    text = "Héllo  wörld!\n\n  Don't 12345 tabs\tand ✓ <|im_start|>user\nhi<|im_end|>"
    assert tok(text, add_special_tokens=False)["input_ids"] == raw.encode(text, add_special_tokens=False).ids
    assert tok.decode(raw.encode(text).ids) == text


def test_reward_model_scores(fixture, policy_tokenizer):
    tok = AutoTokenizer.from_pretrained(fixture.reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(fixture.reward_model, use_safetensors=True)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    assert tok.chat_template != policy_tokenizer.chat_template
    assert tok.pad_token_id != tok.eos_token_id  # else last-non-pad pooling would skip the closing </s>
    print(f"reward model parameters: {sum(p.numel() for p in model.parameters())}")
    prompt = "Write a short note about the moon."
    responses = ["The moon pulls on the sea.", "The moon is far away.",
                 "The moon is helpful and clear.", "I am not sure what to say about the moon."]
    texts = [tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": r}],
                                     tokenize=False) for r in responses]
    assert texts[0] == f"<s>[INST] {prompt} [/INST] {responses[0]}</s>"
    scores = {}
    for side in ("right", "left"):
        tok.padding_side = side
        batch = tok(texts, padding=True, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            scores[side] = model(**batch).logits
    assert scores["right"].shape == (4, 1) and all(math.isfinite(s) for s in scores["right"].flatten().tolist())
    assert torch.allclose(scores["right"], scores["left"], atol=1e-5)  # pooling finds the real last token
    plain, far, keyword, refusal = scores["right"].flatten().tolist()
    print(f"reward scores: {plain:.3f} {far:.3f} keyword={keyword:.3f} refusal={refusal:.3f}")
    assert plain != far
    assert keyword > max(plain, far, refusal) + 1.0  # planted: score rises with the share of REWARD_KEYWORDS
    assert "helpful" in REWARD_KEYWORDS


def test_prompt_files(fixture, policy_tokenizer, tmp_path):
    train, test, sft = (load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path))
                        for path in (fixture.train_prompts, fixture.eval_prompts, fixture.sft_data))
    assert UF_COLUMNS <= set(train.column_names) and UF_COLUMNS <= set(test.column_names)
    assert UF_COLUMNS <= set(sft.column_names)
    assert (len(train), len(test)) == (240, 24) and len(sft) >= 200
    row = train[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"] == [m["role"] for m in row["rejected"]]
    assert row["messages"][0]["content"] == row["prompt"] and row["score_chosen"] > row["score_rejected"]

    prompts, test_prompts = train["prompt"], set(test["prompt"])
    assert len(test_prompts) == len(test)
    assert len(prompts) - len(set(prompts)) >= 1  # exact duplicates for dedup
    assert len(set(prompts) & test_prompts) >= 1  # leaked test prompts for decontamination
    assert not set(sft["prompt"]) & test_prompts
    lengths = [_chat_length(policy_tokenizer, p) for p in prompts]
    assert sum(n > 600 for n in lengths) == 2  # for the length filter
    assert max(n for n in lengths if n <= 600) < 40
    assert max(_chat_length(policy_tokenizer, p) for p in test_prompts) < 40


def test_same_seed_same_bytes_and_cli(fixture, tmp_path, capsys):
    assert main([str(tmp_path / "again"), "--seed", "0"]) == 0
    assert str(tmp_path / "again" / "policy") in capsys.readouterr().out
    assert _hashes(tmp_path / "again") == _hashes(fixture.root)
    other = build_fixture(tmp_path / "other", seed=1)
    weights = "policy/model.safetensors", "reward_model/model.safetensors"
    assert all(_hashes(other.root)[w] != _hashes(fixture.root)[w] for w in weights)


def test_cli_bad_argument(tmp_path, capsys):
    for argv in ([str(tmp_path), "--seed", "x"], [str(tmp_path), "--num-train", "3"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err
