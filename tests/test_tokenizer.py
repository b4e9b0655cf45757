"""The testbed's tokenizer (alignloop/testbed/tokenizer.py: instruction words whole, everything else one token per
character), saved and reloaded through AutoTokenizer."""

from __future__ import annotations

import string

import pytest

from alignloop.testbed.scorer import CHECK
from alignloop.testbed.tokenizer import ASSISTANT, END, PAD, USER

MARKERS = (USER, ASSISTANT, END, PAD)


def test_saved_files(tokenizer_dir):
    assert (tokenizer_dir / "tokenizer.json").is_file()
    assert (tokenizer_dir / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("text", [
    "k3fa reverse",  # an instruction word not followed by a space, comma or colon stays characters
    "Hello, World! 123",
    "a  b   c",  # repeated spaces survive
    " leading, trailing ",
    f"k3fa {CHECK}",
    f"AB12 as requested {CHECK}",
    string.printable[:95],  # every printable ASCII character
    "~{}[]()<>|\\/'\"`^_-+=*&%$#@!?.,;:",
    "a , b . c ! d ? e 's n't",  # no clean-up of spaces before punctuation
])
def test_round_trip(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)  # one id per character
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode(text) == ids  # no BOS/EOS added behind the caller's back


@pytest.mark.parametrize(("text", "pieces"), [
    ("reverse, then uppercase: k3fa", ["reverse", ",", " then", " uppercase", ":", " ", "k", "3", "f", "a"]),
    ("swap first and last: then", ["swap", " first", " and", " last", ":", " ", "t", "h", "e", "n"]),
    ("keep the digits,double", ["keep", " the", " digits", ",", *"double"]),  # last, so characters
])
def test_instruction_words_are_one_token_and_inputs_one_per_character(tokenizer, text, pieces):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.convert_ids_to_tokens(ids) == pieces
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_every_instruction_word_is_in_the_vocabulary(tokenizer):
    from alignloop.testbed.world import SKILLS

    words = {word for skill in SKILLS.values() for verb in skill.verbs for word in verb.split()} | {"then"}
    for word in words:
        assert tokenizer.encode(word + ":", add_special_tokens=False)[:-1] == [tokenizer.convert_tokens_to_ids(word)]
        assert tokenizer.encode(" " + word + ",", add_special_tokens=False)[:-1] == [
            tokenizer.convert_tokens_to_ids(" " + word)]


def test_characters_outside_the_vocabulary_become_unk(tokenizer):
    ids = tokenizer.encode("a\nb", add_special_tokens=False)
    assert ids == [tokenizer.convert_tokens_to_ids("a"), tokenizer.unk_token_id, tokenizer.convert_tokens_to_ids("b")]


@pytest.mark.parametrize("marker", MARKERS)
def test_chat_markers_are_single_tokens(tokenizer, marker):
    ids = tokenizer.encode(marker, add_special_tokens=False)
    assert len(ids) == 1
    assert tokenizer.convert_ids_to_tokens(ids[0]) == marker
    assert ids[0] != tokenizer.unk_token_id


def test_markers_have_distinct_ids(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(marker) for marker in MARKERS]
    assert len(set(ids)) == 4
    assert tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids(PAD)
    assert tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids(END)


def test_markers_inside_text_are_single_tokens(tokenizer):
    ids = tokenizer.encode(f"{USER}ab{ASSISTANT}c{END}", add_special_tokens=False)
    expected = [tokenizer.convert_tokens_to_ids(USER), *tokenizer.encode("ab", add_special_tokens=False),
                tokenizer.convert_tokens_to_ids(ASSISTANT), *tokenizer.encode("c", add_special_tokens=False),
                tokenizer.eos_token_id]
    assert ids == expected


def test_chat_template_user_and_assistant(tokenizer):
    conversation = [{"role": "user", "content": "reverse k3fa"}, {"role": "assistant", "content": f"af3k {CHECK}"}]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert text == f"<|user|>reverse k3fa<|assistant|>af3k {CHECK}<|end|>"


def test_chat_template_system_message_joins_first_user_turn(tokenizer):
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "sort cab"},
                    {"role": "assistant", "content": "abc"}]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert text == "<|user|>be brief sort cab<|assistant|>abc<|end|>"


def test_chat_template_multi_turn(tokenizer):
    conversation = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    assert tokenizer.apply_chat_template(conversation, tokenize=False) == (
        "<|user|>a<|assistant|>b<|end|><|user|>c<|assistant|>d<|end|>")


def test_assistant_mask_covers_response_and_end(tokenizer):
    conversation = [{"role": "user", "content": "sort cab"}, {"role": "assistant", "content": "abc"}]
    out = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    # <|user|> + "sort" + " " + "c", "a", "b" + <|assistant|> are masked out; "abc" + <|end|> are in.
    assert out["assistant_masks"] == [0] * 7 + [1] * 4
    assert out["input_ids"][-4:] == tokenizer.encode("abc", add_special_tokens=False) + [tokenizer.eos_token_id]


def test_chat_template_generation_prompt(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "sort cab"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<|user|>sort cab<|assistant|>"
    assert text.endswith("<|assistant|>")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "sort cab"}], tokenize=True,
                                        add_generation_prompt=True, return_dict=False)
    ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
    assert ids[0] == tokenizer.convert_tokens_to_ids(USER)
    assert ids[-1] == tokenizer.convert_tokens_to_ids(ASSISTANT)
    assert len(ids) == len("sort cab") + 2 - 3  # "sort" is one token


def test_decode_skips_markers(tokenizer):
    conversation = [{"role": "user", "content": "sort cab"}, {"role": "assistant", "content": "abc"}]
    ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False)
    ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
    assert tokenizer.decode(ids) == "<|user|>sort cab<|assistant|>abc<|end|>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "sort cababc"
    padded = [tokenizer.pad_token_id] * 3 + ids
    assert tokenizer.decode(padded, skip_special_tokens=True) == "sort cababc"


def test_special_settings(tokenizer):
    assert tokenizer.eos_token == "<|end|>"
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.padding_side == "left"
    assert tokenizer.model_max_length == 96
    assert tokenizer.bos_token is None


def test_left_padding_in_batches(tokenizer):
    batch = tokenizer(["ab", "abcd"], padding=True, add_special_tokens=False)
    pad = tokenizer.pad_token_id
    assert batch["input_ids"][0][:2] == [pad, pad]
    assert batch["attention_mask"] == [[0, 0, 1, 1], [1, 1, 1, 1]]
