"""The fixture's prompt data: UltraFeedback-binarized rows built from templates over a few dozen topics, with the
quirks a prompt pipeline must handle planted on purpose (exact duplicates, test prompts leaked into train, prompts too
long for the model), and the text the fixture's BPE tokenizer is trained on."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pyarrow as pa
from transformers import PreTrainedTokenizerFast

NUM_SFT = 320  # SFT demonstrations
NUM_DUPLICATES = 3  # train rows that repeat another train row exactly
NUM_LEAKED = 3  # train rows whose prompt is also a test prompt
NUM_LONG = 2  # train rows whose prompt is longer than LONG_PROMPT_TOKENS
LONG_PROMPT_TOKENS = 650  # with the chat template; a 512- or 600-token length filter must drop these
PLANTED_TRAIN_ROWS = NUM_DUPLICATES + NUM_LEAKED + NUM_LONG

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



def corpus() -> list[str]:
    """Every prompt, chosen and rejected text plus filler, in a fixed order (training must not depend on the seed's
    sampling, only on the text, so the vocabulary is the same for every seed)."""
    texts: list[str] = []
    for topic, fact in TOPICS:
        for prompt, chosen in TEMPLATES:
            texts += [fill(prompt, topic, fact), fill(chosen, topic, fact)]
        texts += [fill(rejected, topic, fact) for rejected in REJECTED]
    return texts + list(FILLER) * 4


def prompt_pool() -> list[tuple[int, int]]:
    """Every (template, topic) index pair: the distinct prompts there are."""
    return [(template, topic) for template in range(len(TEMPLATES)) for topic in range(len(TOPICS))]


def fill(text: str, topic: str, fact: str) -> str:
    return text.format(topic=topic, Topic=topic[0].upper() + topic[1:], fact=fact)


def row(prompt: str, chosen: str, rejected: str, score_chosen: float, score_rejected: float) -> dict[str, Any]:
    """One row in the HuggingFaceH4/ultrafeedback_binarized layout (`messages` is the chosen conversation)."""
    user = {"role": "user", "content": prompt}
    chosen_messages = [user, {"role": "assistant", "content": chosen}]
    return {"prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
            "messages": chosen_messages, "chosen": chosen_messages,
            "rejected": [user, {"role": "assistant", "content": rejected}],
            "score_chosen": score_chosen, "score_rejected": score_rejected}


def pool_row(rng: random.Random, template: int, topic: int) -> dict[str, Any]:
    (prompt, chosen), (name, fact) = TEMPLATES[template], TOPICS[topic]
    rejected = rng.choice(REJECTED)
    return row(fill(prompt, name, fact), fill(chosen, name, fact), fill(rejected, name, fact),
                rng.choice([7.0, 7.5, 8.0, 8.5, 9.0, 9.5]), rng.choice([1.0, 2.0, 3.0, 4.0, 5.0]))


def long_row(rng: random.Random, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """A "summarize these notes" prompt padded with filler until it exceeds LONG_PROMPT_TOKENS with the template."""
    topic, fact = rng.choice(TOPICS)
    prompt = f"Read these notes about {topic} and summarize them in one sentence.\n\n"
    while chat_length(tokenizer, prompt) <= LONG_PROMPT_TOKENS:
        prompt += " ".join(rng.sample(FILLER, 4)) + "\n"
    rejected = fill(rng.choice(REJECTED), topic, fact)
    return row(prompt.rstrip(), f"In one clear sentence: {fact}.", rejected, 8.0, 2.0)


def chat_length(tokenizer: PreTrainedTokenizerFast, prompt: str) -> int:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
    return len(tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)  # no over-length warning


def prompt_splits(rng: random.Random, pool: list[tuple[int, int]], num_fresh: int, num_eval: int,
                   tokenizer: PreTrainedTokenizerFast) -> dict[str, list[dict[str, Any]]]:
    """test: distinct prompts; train: fresh prompts + exact duplicates + test leaks + long prompts, shuffled;
    sft: demonstrations on prompts outside test (they may overlap train, as public SFT sets do)."""
    picked = rng.sample(pool, num_eval + num_fresh)
    test = [pool_row(rng, *key) for key in picked[:num_eval]]
    train = [pool_row(rng, *key) for key in picked[num_eval:]]
    train += [dict(row) for row in rng.sample(train, min(NUM_DUPLICATES, len(train)))]
    while len(train) < num_fresh + NUM_DUPLICATES:  # tiny num_train: repeat the one fresh row
        train.append(dict(train[0]))
    train += [pool_row(rng, *key) for key in rng.sample(picked[:num_eval], NUM_LEAKED)]
    train += [long_row(rng, tokenizer) for _ in range(NUM_LONG)]
    rng.shuffle(train)
    test_keys = set(picked[:num_eval])
    sft_pool = [key for key in pool if key not in test_keys]
    sft = [pool_row(rng, *key) for key in rng.sample(sft_pool, min(NUM_SFT, len(sft_pool)))]
    return {"train": train, "test": test, "sft": sft}
