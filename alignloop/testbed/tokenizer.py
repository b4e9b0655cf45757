"""The testbed's tokenizer, saved as a Hugging Face `PreTrainedTokenizerFast`, with a chat template.

Text is one token per character, except the words instructions are made of (`reverse`, ` then`, ` digits`, …),
which are one token each, as frequent words are in any BPE vocabulary: spelled letter by letter they made up two
thirds of every training sequence. A word is taken whole only where it ends before a space, comma or colon, so the
input strings the skills act on (always last in a prompt) and the answers stay one token per character.

Chat markers are registered as special added tokens: a split-every-character pre-tokenizer would otherwise cut
`<|user|>` into eight characters, and the model would have to learn to spell its own turn markers.
"""

from __future__ import annotations

import re
import string

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from alignloop.testbed.scorer import CHECK
from alignloop.testbed.world import SKILLS

PAD, UNK, USER, ASSISTANT, END = "<pad>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = (PAD, UNK, USER, ASSISTANT, END)
CHARACTERS = tuple(string.printable[:95]) + (CHECK,)  # printable ASCII without \t\n\r\x0b\x0c, plus the check mark
# Longest first: the pattern's alternatives are tried in order.
INSTRUCTION_WORDS = tuple(sorted({word for skill in SKILLS.values() for verb in skill.verbs for word in verb.split()}
                                 | {"then"}, key=lambda word: (-len(word), word)))
WORDS = tuple(prefix + word for word in INSTRUCTION_WORDS for prefix in ("", " "))
# A whole word (optionally with its leading space) where it ends before a space, comma or colon; else one character.
PRE_TOKENIZER_PATTERN = "(?: ?(?:" + "|".join(INSTRUCTION_WORDS) + "))(?=[ ,:])|."

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


def pre_tokenized(text: str) -> list[str]:
    """The pieces the tokenizer splits plain text into (no chat markers): one token each."""
    return re.findall(PRE_TOKENIZER_PATTERN, text, flags=re.DOTALL)


def build_tokenizer(model_max_length: int) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated")
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
