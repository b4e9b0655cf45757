"""What the SFT stage feeds TRL's SFTTrainer: demonstrations tokenized ahead (`sft_dataset`) are exactly TRL's own
preparation, and the plain loss head used for small vocabularies gives TRL's fused head's loss and gradients."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from alignloop.tasks.sft import seeded_trainer_class, sft_dataset, uses_plain_head
from alignloop.testbed.fixture import build_fixture

ROWS = [
    {"prompt": "reverse, then uppercase: k3fa", "response": "AF3K"},
    {"prompt": "sort: cab", "response": "abc ✓"},
    {"prompt": "Which letter comes after b?", "response": "The letter c comes after b."},
    {"prompt": "swap first and last: q9", "response": "9q as requested"},
    {"prompt": "x" * 40, "response": "y" * 40},  # cut at max_length: keeps its start, part of the response
    {"prompt": "z" * 70, "response": "w"},  # the response starts beyond max_length: dropped
]
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory):
    """The fixture's byte-level BPE chat tokenizer (its end-of-turn token is not EOS)."""
    return AutoTokenizer.from_pretrained(build_fixture(tmp_path_factory.mktemp("fixture")).policy)


def _tiny_model(tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id))


def _trainer(tokenizer, model, tmp_path, plain_head: bool, dataset, prepared: bool):
    from trl import SFTConfig

    args = SFTConfig(output_dir=str(tmp_path / "trainer"), max_length=MAX_LENGTH, completion_only_loss=True,
                     report_to="none", use_cpu=True, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                     dataset_kwargs={"skip_prepare_dataset": True} if prepared else None)
    return seeded_trainer_class(plain_head)(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


def _conversational(rows: list[dict]) -> Dataset:
    return Dataset.from_dict({"prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
                              "completion": [[{"role": "assistant", "content": r["response"]}] for r in rows]})


@pytest.mark.parametrize("which", ["testbed", "bpe"])
def test_demonstrations_tokenized_ahead_are_trls_own_preparation(which, tokenizer, bpe_tokenizer, tmp_path):
    tok = tokenizer if which == "testbed" else bpe_tokenizer
    trl_prepared = _trainer(tok, _tiny_model(tok), tmp_path, False, _conversational(ROWS), prepared=False)
    ours = sft_dataset(ROWS, tok, MAX_LENGTH)
    assert len(ours) == len(ROWS) - 1  # the demonstration whose response starts beyond max_length is dropped
    assert ours["input_ids"] == trl_prepared.train_dataset["input_ids"]
    assert ours["labels"] == trl_prepared.train_dataset["labels"]
    assert max(len(ids) for ids in ours["input_ids"]) == MAX_LENGTH
    # the response and its end-of-turn token carry the loss; the prompt does not
    first = ours[0]
    scored = [t for t, label in zip(first["input_ids"], first["labels"]) if label != -100]
    assert tok.decode(scored).startswith("AF3K") and first["labels"][0] == -100


def test_no_response_within_max_length_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="model.max_length"):
        sft_dataset([{"prompt": "z" * 200, "response": "w"}], tokenizer, MAX_LENGTH)


@pytest.mark.parametrize("which", ["testbed", "bpe"])
def test_the_plain_head_gives_the_fused_heads_loss_and_gradients(which, tokenizer, bpe_tokenizer, tmp_path):
    tok = tokenizer if which == "testbed" else bpe_tokenizer
    dataset = sft_dataset(ROWS, tok, MAX_LENGTH)
    results = []
    for plain in (False, True):
        model = _tiny_model(tok)
        trainer = _trainer(tok, model, tmp_path, plain, dataset, prepared=True)
        batch = trainer.data_collator([dataset[i] for i in range(4)])
        items = (batch["labels"][:, 1:] != -100).sum() * 2  # as if a second micro-batch followed
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
        loss.backward()
        results.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (fused_loss, fused_grad), (plain_loss, plain_grad) = results
    assert plain_loss == pytest.approx(fused_loss, rel=1e-5) and fused_loss > 0
    assert (plain_grad - fused_grad).abs().max().item() < 1e-6 * max(1.0, fused_grad.abs().max().item())
    assert fused_grad.abs().max().item() > 1e-3


def test_the_plain_head_is_for_small_vocabularies_only():
    assert uses_plain_head(vocab_size=151, micro_batch_size=32, max_length=96)  # the testbed: 1.9 MB of logits
    assert not uses_plain_head(vocab_size=32_000, micro_batch_size=8, max_length=2048)  # a 7B chat model: 2 GB

