"""A character-level tokenizer saved as a Hugging Face `PreTrainedTokenizerFast`, with a chat template.

Chat markers are registered as special added tokens: a split-every-character pre-tokenizer would otherwise cut
`<|user|>` into eight characters, and the model would have to learn to spell its own turn markers.
"""

from __future__ import annotations

import string

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from alignloop.testbed.scorer import CHECK

PAD, UNK, USER, ASSISTANT, END = "<pad>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = (PAD, UNK, USER, ASSISTANT, END)
CHARACTERS = tuple(string.printable[:95]) + (CHECK,)  # printable ASCII without \t\n\r\x0b\x0c, plus the check mark

# `<|user|>PROMPT<|assistant|>RESPONSE<|end|>`; system messages are prepended to the first user turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|user|>' + message['content'] + ' ' }}"
    "{% elif message['role'] == 'user' %}{% if loop.first or messages[loop.index0 - 1]['role'] != 'system' %}"
    "{{ '<|user|>' }}{% endif %}{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' }}"
    "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def build_tokenizer(model_max_length: int) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=END,
        bos_token=None,
        model_max_length=model_max_length,
        padding_side="left",  # generation needs left padding; training collators pad explicitly
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
