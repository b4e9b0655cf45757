"""The instruction world: skills on short alphanumeric strings, their phrasings, and their compositions.

A task is an input string, a chain of one to three skills applied left to right, and a short natural-language
instruction that names them ("reverse, then uppercase: k3fa"). Every answer is computed, so a scorer can grade any
response (`scorer.py`). Difficulty has two knobs: the input length and the number of composed skills (depth).
"""

from __future__ import annotations

import hashlib
import random
import string
from dataclasses import dataclass, field
from typing import Callable

from alignloop.errors import InputError

LETTERS = string.ascii_lowercase
UPPER = string.ascii_uppercase
DIGITS = string.digits


def _shift_char(char: str) -> str:
    if char in LETTERS:
        return LETTERS[(LETTERS.index(char) + 1) % 26]
    if char in UPPER:
        return UPPER[(UPPER.index(char) + 1) % 26]
    if char in DIGITS:
        return DIGITS[(DIGITS.index(char) + 1) % 10]
    return char


@dataclass(frozen=True)
class Skill:
    """One string → string operation and the verbs an instruction can name it by."""

    name: str
    apply: Callable[[str], str]
    verbs: tuple[str, ...]


SKILLS: dict[str, Skill] = {
    skill.name: skill
    for skill in (
        Skill("reverse", lambda s: s[::-1], ("reverse", "write backwards")),
        Skill("upper", str.upper, ("uppercase", "capitalize")),
        Skill("sort", lambda s: "".join(sorted(s)), ("sort", "order the characters")),
        Skill("shift", lambda s: "".join(_shift_char(c) for c in s), ("shift", "advance each character")),
        Skill("digits", lambda s: "".join(c for c in s if c in DIGITS), ("keep the digits", "keep digits")),
        Skill("letters", lambda s: "".join(c for c in s if not c.isdigit()), ("drop the digits", "keep letters")),
        Skill("double", lambda s: "".join(c + c for c in s), ("double", "repeat each character")),
        Skill("swap", lambda s: s[-1] + s[1:-1] + s[0] if len(s) > 1 else s, ("swap the ends", "swap first and last")),
    )
}

# Compositions never trained on; the `unseen_composition` split uses only these, training never.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("reverse", "upper"), ("sort", "shift"), ("double", "swap"), ("letters", "reverse"), ("shift", "digits")}
)
# `double` doubles lengths; keep it out of deep chains so answers stay within the model's context.
SHALLOW_ONLY = frozenset({"double"})


@dataclass(frozen=True)
class Task:
    """One instruction with its computed answer."""

    prompt: str
    answer: str
    skills: tuple[str, ...]
    input: str

    @property
    def depth(self) -> int:
        return len(self.skills)

    @property
    def task_id(self) -> str:
        return hashlib.sha1(self.prompt.encode()).hexdigest()[:12]


def solve(skills: tuple[str, ...], text: str) -> str:
    for name in skills:
        text = SKILLS[name].apply(text)
    return text


def phrase(skills: tuple[str, ...], text: str, rng: random.Random) -> str:
    """`reverse, then uppercase: k3fa` — the input always last, right before the answer."""
    return ", then ".join(rng.choice(SKILLS[name].verbs) for name in skills) + ": " + text


def random_input(length: int, rng: random.Random, digit_fraction: float = 0.3) -> str:
    return "".join(rng.choice(DIGITS) if rng.random() < digit_fraction else rng.choice(LETTERS)
                   for _ in range(length))


@dataclass(frozen=True)
class Distribution:
    """Where tasks are drawn from: input lengths, depth probabilities, and which compositions are allowed."""

    min_length: int
    max_length: int
    depth_weights: tuple[float, ...]  # P(depth = 1), P(depth = 2), ...
    held_out_only: bool = False  # depth-2 chains drawn only from HELD_OUT_PAIRS
    skills: tuple[str, ...] = field(default_factory=lambda: tuple(SKILLS))

    def __post_init__(self) -> None:
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")


def allowed_chain(chain: tuple[str, ...], held_out_only: bool) -> bool:
    pairs = set(zip(chain, chain[1:]))
    if held_out_only:
        return len(chain) == 2 and chain in HELD_OUT_PAIRS
    if pairs & HELD_OUT_PAIRS or any(a == b for a, b in pairs):
        return False
    return len(chain) == 1 or not (set(chain) & SHALLOW_ONLY)


def sample_chain(depth: int, dist: Distribution, rng: random.Random) -> tuple[str, ...]:
    if dist.held_out_only:
        return rng.choice(sorted(HELD_OUT_PAIRS))
    for _ in range(1000):
        chain = tuple(rng.choice(dist.skills) for _ in range(depth))
        if allowed_chain(chain, held_out_only=False):
            return chain
    raise InputError(f"no allowed chain of depth {depth} over skills {dist.skills}")


def make_task(skills: tuple[str, ...], text: str, rng: random.Random) -> Task:
    return Task(prompt=phrase(skills, text, rng), answer=solve(skills, text), skills=skills, input=text)


def sample_task(dist: Distribution, rng: random.Random) -> Task:
    """Draw one task whose answer is non-empty and differs from its input (so copying earns no full credit)."""
    for _ in range(1000):
        depth = rng.choices(range(1, len(dist.depth_weights) + 1), weights=dist.depth_weights)[0]
        chain = sample_chain(2 if dist.held_out_only else depth, dist, rng)
        text = random_input(rng.randint(dist.min_length, dist.max_length), rng)
        answer = solve(chain, text)
        if answer and answer != text:
            return make_task(chain, text, rng)
    raise InputError(f"could not draw a non-trivial task from {dist}")


def sample_tasks(dist: Distribution, count: int, seed: int, exclude: set[str] | None = None) -> list[Task]:
    """`count` distinct tasks (by prompt), none of whose prompts is in `exclude`."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    tasks: list[Task] = []
    attempts = 0
    while len(tasks) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise InputError(f"only {len(tasks)} distinct tasks of {count} could be drawn from {dist}")
        task = sample_task(dist, rng)
        if task.prompt not in seen:
            seen.add(task.prompt)
            tasks.append(task)
    return tasks
