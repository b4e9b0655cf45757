"""RewardModelRanker against a tiny Llama reward model whose pad id is its own end-of-turn token.

That pad id is deliberate: every formatted pair ends with `<|end|>`, so transformers' rightmost-non-pad search would
read the wrong position; the ranker's own last-token pooling must not.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from alignloop.config import ConfigError
from alignloop.errors import NonFiniteError
from alignloop.models.policy import ModelLoadError
from alignloop.models.reward_model import RewardModelRanker, check_reward_model
from alignloop.testbed.tokenizer import build_tokenizer

# Not the testbed's template: the ranker must use the reward model's own.
RM_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ '<|user|>Q: ' + m['content'] }}"
               "{% else %}{{ '<|assistant|>A: ' + m['content'] + '<|end|>' }}{% endif %}{% endfor %}")
PAIRS = [("2+2?", "4"), ("name a long river", "the Amazon, probably"), ("hi", "hello there, friend"),
         ("x", "y"), ("what is seven times six", "42")]


def tiny_config(tokenizer, num_labels: int = 1, **overrides) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                       intermediate_size=64, num_labels=num_labels, initializer_range=0.5,  # spread-out scores
                       pad_token_id=tokenizer.convert_tokens_to_ids("<|end|>"), **overrides)


def save_classifier(path, num_labels: int = 1, template: str | None = RM_TEMPLATE):
    tokenizer = build_tokenizer(128)
    tokenizer.chat_template = template
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_config(tokenizer, num_labels))
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    return save_classifier(tmp_path_factory.mktemp("reward_model"))


@pytest.fixture(scope="module")
def ranker(rm_dir) -> RewardModelRanker:
    return RewardModelRanker(rm_dir, device="cpu", batch_size=2)


def reference(ranker: RewardModelRanker, prompt: str, response: str) -> float:
    """The model's own forward on one unpadded sequence; inputs_embeds makes it read the last position."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    text = ranker.tokenizer.apply_chat_template(messages, tokenize=False)
    ids = torch.tensor([ranker.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        embeds = ranker.model.get_input_embeddings()(ids)
        return float(ranker.model(inputs_embeds=embeds).logits[0, 0])


def test_scores_equal_an_unbatched_forward_with_the_rm_template(ranker):
    text = ranker.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tokenize=False)
    assert text == "<|user|>Q: hi<|assistant|>A: yo<|end|>"
    scores = ranker.score_pairs(PAIRS)
    expected = [reference(ranker, *pair) for pair in PAIRS]
    assert max(abs(a - b) for a, b in zip(scores, expected)) < 1e-5
    assert all(type(value) is float for value in scores)
    assert max(scores) - min(scores) > 1e-2  # distinct values: a permuted output would fail the check above
    # transformers' pad-id search would stop before the trailing <|end|> (the pad id here) and get another number
    with torch.no_grad():
        builtin = float(ranker.model(torch.tensor([ranker.encode(*PAIRS[0])])).logits[0, 0])
    assert abs(builtin - scores[0]) > 1e-3


def test_a_sequence_scores_the_same_alone_and_padded_in_either_batch_position(ranker):
    short, long = ranker.encode("x", "y"), ranker.encode("name a long river", "the Amazon, probably")
    alone = ranker.forward_batch([short])[0]
    first, _ = ranker.forward_batch([short, long])
    _, second = ranker.forward_batch([long, short])
    assert abs(first - alone) < 1e-5 and abs(second - alone) < 1e-5
    assert abs(ranker.forward_batch([long])[0] - ranker.forward_batch([short, long])[1]) < 1e-5


def test_output_order_follows_input_order_for_mixed_lengths(ranker):
    singles = [ranker.score_pairs([pair])[0] for pair in PAIRS]
    for order in (PAIRS, PAIRS[::-1]):
        scores = ranker.score_pairs(order)
        wanted = singles if order is PAIRS else singles[::-1]
        assert max(abs(a - b) for a, b in zip(scores, wanted)) < 1e-5


def test_score_returns_one_list_per_prompt(ranker):
    prompts = [{"prompt_id": "p0", "prompt": "2+2?"}, {"prompt_id": "p1", "prompt": "hi"}]
    responses = [["4", "5", "four"], ["hello there, friend"]]
    scores = ranker.score(prompts, responses)
    assert [len(row) for row in scores] == [3, 1]
    flat = ranker.score_pairs([("2+2?", "4"), ("2+2?", "5"), ("2+2?", "four"), ("hi", "hello there, friend")])
    assert max(abs(a - b) for a, b in zip(scores[0] + scores[1], flat)) < 1e-5


def test_long_inputs_are_cut_with_one_warning(rm_dir, caplog):
    short_ranker = RewardModelRanker(rm_dir, device="cpu", max_length=12)
    with caplog.at_level(logging.WARNING, logger="alignloop.models.reward_model"):
        scores = short_ranker.score_pairs([("a prompt", "a long response"), ("x", "y")])
    assert [record.getMessage() for record in caplog.records] == [  # "x","y" formats to 11 tokens
        "reward model: 1 of 2 inputs exceed 12 tokens and were cut to their first 12"]
    head = short_ranker.encode("a prompt", "a long response")[:12]  # prompt start kept, response tail cut
    assert abs(scores[0] - short_ranker.forward_batch([head])[0]) < 1e-5 and math.isfinite(scores[1])


def test_non_finite_scores_are_refused(rm_dir):
    broken = RewardModelRanker(rm_dir, device="cpu")
    with torch.no_grad():
        broken.model.score.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"non-finite scores for 2 responses \(e.g. prompt p0\)"):
        broken.score([{"prompt_id": "p0", "prompt": "hi"}], [["a", "b"]])


def one_line_error(path, match: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_reward_model(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("rank.reward_model: ") and match in message, message


def test_check_reward_model(rm_dir, tmp_path):
    check_reward_model(rm_dir)
    one_line_error(tmp_path / "missing", "no such directory")
    tokenizer = build_tokenizer(128)
    tokenizer.chat_template = RM_TEMPLATE
    two = tmp_path / "two_labels"
    tiny_config(tokenizer, 2, architectures=["LlamaForSequenceClassification"]).save_pretrained(two)
    tokenizer.save_pretrained(two)
    one_line_error(two, "has 2 labels")
    causal = tmp_path / "causal"
    tiny_config(tokenizer, architectures=["LlamaForCausalLM"]).save_pretrained(causal)
    tokenizer.save_pretrained(causal)
    one_line_error(causal, "is a LlamaForCausalLM, not a sequence classifier")
    untemplated = tmp_path / "untemplated"
    tiny_config(tokenizer, architectures=["LlamaForSequenceClassification"]).save_pretrained(untemplated)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(untemplated)
    one_line_error(untemplated, "has no chat template")


def test_ranker_refuses_a_two_label_classifier(tmp_path):
    with pytest.raises(ModelLoadError, match="has 2 labels"):
        RewardModelRanker(save_classifier(tmp_path / "two", num_labels=2), device="cpu")
