"""The testbed's evolver: programmatic rewrites of a task, each with its answer recomputed.

In-depth operators make a task harder: `lengthen` (a longer input), `compose` (one more skill in the chain),
`constrain` (an input of the same length on which the answer is as far as possible from a copy of the input, so
partial copying earns less). In-breadth operators make a different task of similar difficulty: `rephrase` (other
verbs), `swap_skill` (another skill in one place of the chain), `new_input` (the same chain on a fresh input).
Phrasings are reused, so a task's difficulty changes only where the operator says.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from alignloop.testbed.scorer import similarity
from alignloop.testbed.world import (
    SKILLS,
    Task,
    allowed_chain,
    random_input,
    solve,
)

IN_DEPTH = ("lengthen", "compose", "constrain")
IN_BREADTH = ("rephrase", "swap_skill", "new_input")
_SEPARATOR, _THEN = ": ", ", then "
_VERB_TO_SKILL = {verb: skill.name for skill in SKILLS.values() for verb in skill.verbs}


@dataclass(frozen=True)
class Limits:
    max_depth: int  # longest chain of skills
    max_input_length: int  # longest input string


def task_from_row(row: dict) -> Task:
    return Task(prompt=row["prompt"], answer=row["answer"], skills=tuple(row["skills"]), input=row["input"])


def split_prompt(prompt: str) -> tuple[list[str], str]:
    """`"reverse, then uppercase: k3fa"` → (["reverse", "uppercase"], "k3fa")."""
    instruction, _, text = prompt.rpartition(_SEPARATOR)
    return instruction.split(_THEN), text


def join_prompt(verbs: list[str], text: str) -> str:
    return _THEN.join(verbs) + _SEPARATOR + text


def parse_task(prompt: str) -> Task | None:
    """The task a prompt in the testbed's language asks for, or None (unknown verb, empty or odd input)."""
    verbs, text = split_prompt(prompt.strip())
    skills = tuple(_VERB_TO_SKILL.get(verb.strip()) for verb in verbs)
    if not text or not text.isalnum() or not text.isascii() or None in skills:
        return None
    return Task(prompt=prompt.strip(), answer=solve(skills, text), skills=skills, input=text)


def unsolvable_reason(task: Task, max_answer_length: int) -> str | None:
    """Why a task cannot be a training prompt: no answer, a copy of its input, a held-out composition, or an answer
    too long to write within the response budget."""
    if not task.answer:
        return "empty answer"
    if task.answer == task.input:
        return "answer equals input"
    if not allowed_chain(task.skills, held_out_only=False):
        return "disallowed composition"  # held-out pairs stay unseen, repeats and deep `double` stay out
    if len(task.answer) > max_answer_length:
        return "answer too long"
    return None


def _with_input(task: Task, text: str) -> Task:
    verbs, _ = split_prompt(task.prompt)
    return Task(prompt=join_prompt(verbs, text), answer=solve(task.skills, text), skills=task.skills, input=text)


def lengthen(task: Task, limits: Limits, rng: random.Random) -> Task | None:
    room = limits.max_input_length - len(task.input)
    if room <= 0:
        return None
    chars = list(task.input)
    for _ in range(rng.randint(1, min(2, room))):
        chars.insert(rng.randint(0, len(chars)), random_input(1, rng))
    return _with_input(task, "".join(chars))


def compose(task: Task, limits: Limits, rng: random.Random) -> Task | None:
    if task.depth >= limits.max_depth:
        return None
    options = [name for name in SKILLS if allowed_chain((*task.skills, name), held_out_only=False)]
    if not options:
        return None
    name = rng.choice(options)
    verbs, text = split_prompt(task.prompt)
    skills = (*task.skills, name)
    return Task(prompt=join_prompt([*verbs, rng.choice(SKILLS[name].verbs)], text), answer=solve(skills, text),
                skills=skills, input=text)


def constrain(task: Task, limits: Limits, rng: random.Random, candidates: int = 8) -> Task | None:
    """Of a few fresh inputs of the same length, the one whose answer is least like the input."""
    options = [_with_input(task, random_input(len(task.input), rng)) for _ in range(candidates)]
    best = min(options, key=lambda t: similarity(t.answer, t.input))
    return best if similarity(best.answer, best.input) < similarity(task.answer, task.input) else None


def rephrase(task: Task, limits: Limits, rng: random.Random) -> Task | None:
    verbs, text = split_prompt(task.prompt)
    other = [[v for v in SKILLS[name].verbs if v != verb] or [verb] for name, verb in zip(task.skills, verbs)]
    new_verbs = [rng.choice(options) for options in other]
    return None if new_verbs == verbs else Task(join_prompt(new_verbs, text), task.answer, task.skills, text)


def swap_skill(task: Task, limits: Limits, rng: random.Random) -> Task | None:
    position = rng.randrange(task.depth)
    options = [name for name in SKILLS if name != task.skills[position]
               and allowed_chain((*task.skills[:position], name, *task.skills[position + 1:]), held_out_only=False)]
    if not options:
        return None
    name = rng.choice(options)
    skills = (*task.skills[:position], name, *task.skills[position + 1:])
    verbs, text = split_prompt(task.prompt)
    verbs[position] = rng.choice(SKILLS[name].verbs)
    return Task(prompt=join_prompt(verbs, text), answer=solve(skills, text), skills=skills, input=text)


def new_input(task: Task, limits: Limits, rng: random.Random) -> Task | None:
    for _ in range(10):
        text = random_input(len(task.input), rng)
        if text != task.input:
            return _with_input(task, text)
    return None


OPERATORS: dict[str, Callable[[Task, Limits, random.Random], Task | None]] = {
    "lengthen": lengthen, "compose": compose, "constrain": constrain,
    "rephrase": rephrase, "swap_skill": swap_skill, "new_input": new_input,
}


def evolve_task(task: Task, limits: Limits, in_depth_probability: float, rng: random.Random) -> tuple[str, Task | None]:
    """One variant of `task`: an in-depth operator with probability `in_depth_probability`, else in-breadth. An
    operator that cannot apply (already at a limit) gives None."""
    family = IN_DEPTH if rng.random() < in_depth_probability else IN_BREADTH
    operator = rng.choice(family)
    return operator, OPERATORS[operator](task, limits, rng)


def difficulty(task: Task) -> dict[str, float]:
    """What the in-depth operators turn: input length, composition depth, and how far the answer is from a copy."""
    return {"input_length": len(task.input), "depth": task.depth,
            "answer_distance": 1.0 - similarity(task.answer, task.input)}
