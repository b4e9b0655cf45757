"""A small, local "bring your own model" setup: a chat policy, a reward model and UltraFeedback-style prompt files.

Everything is built here from a seed in a few seconds, with no model hub and no network, so tests and the README
walkthrough exercise the same code paths a real Hugging Face checkpoint would. The fixture deliberately carries the
quirks real checkpoints have and that pipelines get wrong:

* the policy's end-of-turn token `<|im_end|>` is not its EOS token `<|endoftext|>` (generation must stop on both);
* the tokenizer is a real byte-level BPE, so token ids do not always survive decode -> encode;
* the reward model has its own tokenizer and chat template, so policy samples must be re-rendered before scoring;
* the training prompts contain exact duplicates, prompts that leak from the test split and two over-long prompts.

Usage: `python -m alignloop.fixture OUT_DIR [--seed N]`, or `build_fixture(root, seed)` from Python.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.utils import logging as hf_logging

from alignloop.io import atomic_path

# Policy special tokens, Qwen/ChatML style: EOS (also pad) is not the end-of-turn token.
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Reward-model special tokens, Llama-2 style; its pad differs from `</s>` so last-non-pad pooling sees `</s>`.
RM_BOS, RM_EOS, RM_INST, RM_END_INST, RM_PAD = "<s>", "</s>", "[INST]", "[/INST]", "<pad>"

MAX_LENGTH = 512  # tokenizer.model_max_length and max_position_embeddings
VOCAB_SIZE = 1500  # BPE target; merges stop earlier if the corpus runs out of frequent pairs
NUM_SFT = 320  # SFT demonstrations
NUM_DUPLICATES = 3  # train rows that repeat another train row exactly
NUM_LEAKED = 3  # train rows whose prompt is also a test prompt
NUM_LONG = 2  # train rows whose prompt is longer than LONG_PROMPT_TOKENS
LONG_PROMPT_TOKENS = 650  # with the chat template; a 512- or 600-token length filter must drop these

# Words the reward model is planted to like: its score rises with their share of the tokens it reads.
REWARD_KEYWORDS = ("helpful", "clear")

# Qwen2's pre-tokenizer regex. transformers 5 loads any `model_type: qwen2` directory with `Qwen2Tokenizer`, which
# rebuilds NFC + this split + ByteLevel around the saved vocab and merges; training with the same pipeline keeps
# the trained tokenizer and the reloaded one identical.
QWEN2_SPLIT_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                     r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

POLICY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>' + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# `<s>[INST] system\n\nuser [/INST] assistant</s>`: a different layout and different markers from the policy's.
REWARD_CHAT_TEMPLATE = (
    "{{ '<s>' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '[INST] ' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'system' %}{{ '[INST] ' }}{% endif %}"
    "{{ message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + '</s>' }}"
    "{% endif %}{% endfor %}"
)

# (topic, a true sentence fragment about it) — the fragment makes chosen answers plausible.
TOPICS: tuple[tuple[str, str], ...] = (
    ("the moon", "its gravity pulls on the oceans and makes the tides"),
    ("honey bees", "they carry pollen between flowers and make honey from nectar"),
    ("volcanoes", "they form where melted rock rises through cracks in the crust"),
    ("rainbows", "sunlight bends inside raindrops and splits into colors"),
    ("photosynthesis", "plants use sunlight to turn water and air into sugar"),
    ("the ocean", "it covers most of the planet and holds most of its water"),
    ("trains", "they run on rails and can move heavy loads with little energy"),
    ("chess", "each side starts with sixteen pieces and the king must be protected"),
    ("bread baking", "yeast makes gas bubbles that help the dough rise"),
    ("the human heart", "it pumps blood through the body about once every second"),
    ("clouds", "they are made of tiny drops of water or ice floating in the air"),
    ("penguins", "they cannot fly but swim very well in cold water"),
    ("recycling", "old paper, glass and metal are turned into new things"),
    ("electricity", "it is the flow of tiny charged particles through a wire"),
    ("the pyramids", "they were built in Egypt thousands of years ago as tombs"),
    ("coffee", "it is made from roasted seeds of a small tree"),
    ("sleep", "the body and the brain repair themselves while we rest"),
    ("maps", "they show places from above using symbols and a scale"),
    ("bicycles", "pedals turn a chain that turns the back wheel"),
    ("music", "it is sound arranged in patterns of rhythm and pitch"),
    ("gardening", "plants need light, water and good soil to grow"),
    ("the internet", "computers around the world send messages to each other"),
    ("dinosaurs", "they lived millions of years ago and birds are their relatives"),
    ("tides", "the sea rises and falls twice a day because of the moon"),
    ("magnets", "they pull on iron and have a north and a south pole"),
    ("libraries", "they lend books to anyone for free"),
    ("snow", "it forms when water vapor freezes into crystals in cold clouds"),
    ("forests", "trees make oxygen and give homes to many animals"),
    ("bridges", "they carry roads and people over rivers and valleys"),
    ("vaccines", "they teach the body to fight a germ before it meets it"),
    ("the alphabet", "it is a small set of letters that can write every word"),
    ("owls", "they hunt at night and can turn their heads very far"),
    ("deserts", "they get very little rain and can be hot or cold"),
    ("football", "two teams try to move a ball into the other goal"),
    ("kites", "wind pushes against the kite while a string holds it"),
    ("tea", "it is made by soaking dried leaves in hot water"),
    ("rivers", "they carry rain water from the hills down to the sea"),
    ("stars", "they are huge balls of hot gas that make their own light"),
    ("friendship", "friends listen, share and help each other"),
    ("money", "it is a simple way to trade work and things"),
)

# (prompt, chosen answer) pairs; chosen answers use the reward keywords, rejected ones never do.
TEMPLATES: tuple[tuple[str, str], ...] = (
    ("Write a short note about {topic}.", "Here is a clear note. {Topic}: {fact}. I hope this is helpful."),
    ("List three facts about {topic}.",
     "Here are three clear facts. First, {fact}. Second, people have studied {topic} for a long time. "
     "Third, {topic} is easy to learn about."),
    ("Explain {topic} to a child.", "Sure, here is a clear and simple way to say it: {fact}."),
    ("Why do people care about {topic}?", "People care because {fact}. That makes {topic} helpful to understand."),
    ("Give me one tip about {topic}.", "A helpful tip: remember that {fact}."),
    ("Describe {topic} in two sentences.", "{Topic} is a clear example of how the world works. In short, {fact}."),
    ("What is the most important thing about {topic}?", "The most important thing is clear: {fact}."),
    ("Summarize what you know about {topic}.", "In a clear summary, {fact}. I hope that is helpful."),
    ("Tell me something surprising about {topic}.", "Here is a helpful surprise: {fact}."),
    ("How would you teach {topic} to a beginner?",
     "I would start with one clear idea: {fact}. Then I would show a helpful picture."),
)

REJECTED: tuple[str, ...] = (
    "I am not sure what to say about {topic}.",
    "{Topic}? You should look it up yourself.",
    "That is a strange question, so I will skip it.",
    "Maybe. It depends on many things.",
    "I do not know much about {topic}, sorry.",
)

FILLER = (
    "The weather was calm in the morning and the streets were quiet.",
    "A good teacher gives clear examples and asks helpful questions.",
    "Many people read a book before they go to sleep at night.",
    "The small town had a market, a library and a river with an old bridge.",
    "Scientists test an idea many times before they trust the result.",
    "Children often learn faster when a lesson feels like a game.",
    "The recipe asks for flour, water, salt and a little yeast.",
    "In the spring the garden was full of flowers and busy bees.",
    "A map, a clock and a notebook sat on the wooden desk.",
    "The team worked together and finished the project on time.",
    "Writing a short summary is a helpful way to remember what you read.",
    "The train left the station early and arrived before noon.",
    "Good answers are short, clear, polite and true.",
    "She planted a tree in the yard and watered it every day.",
    "The museum showed old tools, coins and pictures of the city.",
    "He asked a question, listened to the answer and wrote it down.",
)

ROW_SCHEMA = pa.schema([
    ("prompt", pa.string()),
    ("prompt_id", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("chosen", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("rejected", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("score_chosen", pa.float64()),
    ("score_rejected", pa.float64()),
])


@dataclass(frozen=True)
class Fixture:
    """Where build_fixture wrote each part; point params.yaml (or a README walkthrough) at these paths."""

    root: Path
    policy: Path  # root / "policy": a causal LM directory
    reward_model: Path  # root / "reward_model": a sequence classifier directory
    train_prompts: Path  # root / "prompts" / "train.parquet"
    eval_prompts: Path  # root / "prompts" / "test.parquet"
    sft_data: Path  # root / "prompts" / "sft.parquet"


def build_fixture(root: Path, seed: int = 0, num_train: int = 240, num_eval: int = 24) -> Fixture:
    """Write policy/, reward_model/ and prompts/ under `root`; the same seed gives byte-identical files.

    Each of the three directories is replaced in one rename, so an interrupted build never leaves a half-written
    model that looks finished. Anything else under `root` is left alone.
    """
    root = Path(root)
    pool = [(t, topic) for t in range(len(TEMPLATES)) for topic in range(len(TOPICS))]
    num_fresh = num_train - NUM_DUPLICATES - NUM_LEAKED - NUM_LONG
    if num_fresh < 1 or num_eval < NUM_LEAKED:
        raise ValueError(f"num_train must be >= {NUM_DUPLICATES + NUM_LEAKED + NUM_LONG + 1} "
                         f"and num_eval >= {NUM_LEAKED} (got {num_train}, {num_eval})")
    if num_fresh + num_eval > len(pool):
        raise ValueError(f"num_train + num_eval too large: only {len(pool)} distinct prompts exist")

    rng = random.Random(seed)
    tokenizer = _train_tokenizer(_corpus())
    splits = _prompt_splits(rng, pool, num_fresh, num_eval, tokenizer)
    fixture = Fixture(root=root, policy=root / "policy", reward_model=root / "reward_model",
                      train_prompts=root / "prompts" / "train.parquet", eval_prompts=root / "prompts" / "test.parquet",
                      sft_data=root / "prompts" / "sft.parquet")
    with atomic_path(root / "prompts") as tmp:
        tmp.mkdir()
        for name, rows in splits.items():
            pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), tmp / f"{name}.parquet")
    _save_policy(tokenizer, seed, fixture.policy)
    _save_reward_model(tokenizer, seed, fixture.reward_model)
    return fixture


# --- tokenizers ---------------------------------------------------------------------------------------------------


def _corpus() -> list[str]:
    """Every prompt, chosen and rejected text plus filler, in a fixed order (training must not depend on the seed's
    sampling, only on the text, so the vocabulary is the same for every seed)."""
    texts: list[str] = []
    for topic, fact in TOPICS:
        for prompt, chosen in TEMPLATES:
            texts += [_fill(prompt, topic, fact), _fill(chosen, topic, fact)]
        texts += [_fill(rejected, topic, fact) for rejected in REJECTED]
    return texts + list(FILLER) * 4


def _train_tokenizer(corpus: Sequence[str]) -> PreTrainedTokenizerFast:
    """A Qwen2-style byte-level BPE: any byte string encodes, and merges make ids non-unique per text."""
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
                                  special_tokens=[ENDOFTEXT, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT,
                                        bos_token=None, unk_token=None, model_max_length=MAX_LENGTH,
                                        additional_special_tokens=[IM_START, IM_END])
    tokenizer.chat_template = POLICY_CHAT_TEMPLATE
    return tokenizer


def _reward_tokenizer(policy_tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The same BPE vocabulary plus Llama-2-style markers appended after it: ids of ordinary text agree with the
    policy's, chat markup does not."""
    backend = Tokenizer.from_str(policy_tokenizer.backend_tokenizer.to_str())
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in (RM_BOS, RM_EOS, RM_INST, RM_END_INST, RM_PAD)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=RM_BOS, eos_token=RM_EOS,
                                        pad_token=RM_PAD, unk_token=None, model_max_length=MAX_LENGTH,
                                        additional_special_tokens=[RM_INST, RM_END_INST])
    tokenizer.chat_template = REWARD_CHAT_TEMPLATE
    return tokenizer


# --- prompt data ---------------------------------------------------------------------------------------------------


def _fill(text: str, topic: str, fact: str) -> str:
    return text.format(topic=topic, Topic=topic[0].upper() + topic[1:], fact=fact)


def _row(prompt: str, chosen: str, rejected: str, score_chosen: float, score_rejected: float) -> dict[str, Any]:
    """One row in the HuggingFaceH4/ultrafeedback_binarized layout (`messages` is the chosen conversation)."""
    user = {"role": "user", "content": prompt}
    chosen_messages = [user, {"role": "assistant", "content": chosen}]
    return {"prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
            "messages": chosen_messages, "chosen": chosen_messages,
            "rejected": [user, {"role": "assistant", "content": rejected}],
            "score_chosen": score_chosen, "score_rejected": score_rejected}


def _pool_row(rng: random.Random, template: int, topic: int) -> dict[str, Any]:
    (prompt, chosen), (name, fact) = TEMPLATES[template], TOPICS[topic]
    rejected = rng.choice(REJECTED)
    return _row(_fill(prompt, name, fact), _fill(chosen, name, fact), _fill(rejected, name, fact),
                rng.choice([7.0, 7.5, 8.0, 8.5, 9.0, 9.5]), rng.choice([1.0, 2.0, 3.0, 4.0, 5.0]))


def _long_row(rng: random.Random, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """A "summarize these notes" prompt padded with filler until it exceeds LONG_PROMPT_TOKENS with the template."""
    topic, fact = rng.choice(TOPICS)
    prompt = f"Read these notes about {topic} and summarize them in one sentence.\n\n"
    while _chat_length(tokenizer, prompt) <= LONG_PROMPT_TOKENS:
        prompt += " ".join(rng.sample(FILLER, 4)) + "\n"
    rejected = _fill(rng.choice(REJECTED), topic, fact)
    return _row(prompt.rstrip(), f"In one clear sentence: {fact}.", rejected, 8.0, 2.0)


def _chat_length(tokenizer: PreTrainedTokenizerFast, prompt: str) -> int:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
    return len(tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)  # no over-length warning


def _prompt_splits(rng: random.Random, pool: list[tuple[int, int]], num_fresh: int, num_eval: int,
                   tokenizer: PreTrainedTokenizerFast) -> dict[str, list[dict[str, Any]]]:
    """test: distinct prompts; train: fresh prompts + exact duplicates + test leaks + long prompts, shuffled;
    sft: demonstrations on prompts outside test (they may overlap train, as public SFT sets do)."""
    picked = rng.sample(pool, num_eval + num_fresh)
    test = [_pool_row(rng, *key) for key in picked[:num_eval]]
    train = [_pool_row(rng, *key) for key in picked[num_eval:]]
    train += [dict(row) for row in rng.sample(train, min(NUM_DUPLICATES, len(train)))]
    while len(train) < num_fresh + NUM_DUPLICATES:  # tiny num_train: repeat the one fresh row
        train.append(dict(train[0]))
    train += [_pool_row(rng, *key) for key in rng.sample(picked[:num_eval], NUM_LEAKED)]
    train += [_long_row(rng, tokenizer) for _ in range(NUM_LONG)]
    rng.shuffle(train)
    test_keys = set(picked[:num_eval])
    sft_pool = [key for key in pool if key not in test_keys]
    sft = [_pool_row(rng, *key) for key in rng.sample(sft_pool, min(NUM_SFT, len(sft_pool)))]
    return {"train": train, "test": test, "sft": sft}


# --- models --------------------------------------------------------------------------------------------------------


def _save_policy(tokenizer: PreTrainedTokenizerFast, seed: int, out_dir: Path) -> None:
    """A randomly initialised Qwen2 chat model: head_dim 32 (vLLM's CPU kernels take 32 or 64), GQA, tied embeddings.

    config.eos_token_id is the tokenizer's EOS; generation_config stops on end-of-turn or EOS, like Llama-3-Instruct.
    """
    eos, im_end = tokenizer.convert_tokens_to_ids(ENDOFTEXT), tokenizer.convert_tokens_to_ids(IM_END)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=MAX_LENGTH,
                         tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.bos_token_id = eos
    model.generation_config.eos_token_id = [im_end, eos]
    model.generation_config.pad_token_id = eos
    _save(model, tokenizer, out_dir)


def _save_reward_model(policy_tokenizer: PreTrainedTokenizerFast, seed: int, out_dir: Path) -> None:
    """A small Llama classifier, random except for a planted keyword detector (see `_plant_keyword_detector`)."""
    tokenizer = _reward_tokenizer(policy_tokenizer)
    pad = tokenizer.convert_tokens_to_ids(RM_PAD)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=MAX_LENGTH,
                         num_labels=1, problem_type="regression", pad_token_id=pad,
                         bos_token_id=tokenizer.convert_tokens_to_ids(RM_BOS),
                         eos_token_id=tokenizer.convert_tokens_to_ids(RM_EOS))
    torch.manual_seed(seed + 1)  # a different stream from the policy's
    model = LlamaForSequenceClassification(config)
    _plant_keyword_detector(model, keyword_token_ids(tokenizer))
    _save(model, tokenizer, out_dir)


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """save_pretrained into a temporary sibling, renamed into place; quiet, and readable by other users."""
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars on every build would drown test output
    try:
        with atomic_path(out_dir) as tmp:
            model.save_pretrained(tmp)  # transformers 5 writes safetensors only (no safe_serialization switch)
            tokenizer.save_pretrained(tmp)
            for path in tmp.iterdir():
                path.chmod(0o644)  # the safetensors shard comes out 0600; a server running as another user reads it
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def keyword_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of the single tokens that spell a REWARD_KEYWORD (with or without the leading space, any case)."""
    ids: set[int] = set()
    for word in REWARD_KEYWORDS:
        for variant in (word, " " + word, word.capitalize(), " " + word.capitalize()):
            encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids.add(encoded[0])
    if not ids:
        raise RuntimeError(f"no reward keyword is a single token: {REWARD_KEYWORDS}")
    return sorted(ids)


@torch.no_grad()
def _plant_keyword_detector(model: LlamaForSequenceClassification, keyword_ids: list[int]) -> None:
    """Make the score rise with the share of keyword tokens in the input, keeping the other random weights.

    Hidden dim 0 marks keyword tokens; layer 0's first head attends uniformly (q = k = 0) and copies the mean of that
    mark into dim 1, which nothing else writes; the score head reads dim 1 at the pooled last token. The remaining
    random weights add a small, input-dependent term so that any two different texts score differently.
    """
    embed = model.model.embed_tokens.weight
    embed[:, :2] = 0.0
    embed[keyword_ids, 0] = 1.0
    first = model.model.layers[0].self_attn
    first.q_proj.weight.zero_()
    first.k_proj.weight.zero_()
    first.v_proj.weight[0] = 0.0
    first.v_proj.weight[0, 0] = 1.0
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight[1] = 0.0
        layer.mlp.down_proj.weight[1] = 0.0
    first.o_proj.weight[1, 0] = 0.1  # small next to the residual norm, so the final RMSNorm does not saturate
    model.score.weight[0, 1] = 1.0


# --- command line --------------------------------------------------------------------------------------------------


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; a one-line error is easier to read in scripts and CI logs."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m alignloop.fixture",
                            description="Build a small local policy, reward model and prompt files.")
    parser.add_argument("out_dir", type=Path, help="directory to write policy/, reward_model/ and prompts/ into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=240)
    parser.add_argument("--num-eval", type=int, default=24)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        fixture = build_fixture(args.out_dir, seed=args.seed, num_train=args.num_train, num_eval=args.num_eval)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    for name in ("policy", "reward_model", "train_prompts", "eval_prompts", "sft_data"):
        print(f"{name}: {getattr(fixture, name)}")
    print(f"built in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
