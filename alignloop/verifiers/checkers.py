"""Verifiable instructions: the IFEval and IFBench checkers as alignloop draws and checks them.

A *constraint* is one checkable instruction ("Your entire response should be in English, and in all lowercase
letters.") appended to a prompt, as Tülu 3's RLVR data does (Lambert et al. 2024, https://arxiv.org/abs/2411.15124).
The checkers are those of IFEval (Zhou et al. 2023, https://arxiv.org/abs/2311.07911) and IFBench (Pyatkin et al.
2025, https://arxiv.org/abs/2507.02833), as packaged by `if-verifiable`. A response follows an instruction *strictly*
when the checker accepts it as written, and *loosely* when it accepts any of IFEval's loose variants (first line, last
line or both removed, markdown `*` removed).

Everything here is deterministic and offline:
1) importing IFBench's checkers runs `nltk.download(...)` at import time; the import below runs with downloads
   switched off, and the checkers that need that NLTK data are refused (`REFUSED`);
2) `build_description` draws from Python's global `random`: each draw seeds it from the caller's seed and restores
   the caller's state afterwards;
3) langdetect (IFEval's language and case checkers) is seeded, so the same response always gets the same verdict.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from alignloop.errors import InputError

log = logging.getLogger(__name__)

FAMILIES = ("ifeval", "ifbench")
"""The checker families: IFEval's 25 instructions and IFBench's 58."""

_NLTK = "needs NLTK data that NLTK downloads ({})"
_PROMPT_TEXT = "needs the text to repeat from the prompt"
REFUSED: dict[tuple[str, str], str] = {
    ("ifeval", "length_constraints:number_sentences"): _NLTK.format("punkt_tab"),
    ("ifeval", "change_case:capital_word_frequency"): _NLTK.format("punkt_tab"),
    ("ifeval", "combination:repeat_prompt"): _PROMPT_TEXT,
    ("ifbench", "ratio:stop_words"): _NLTK.format("stopwords"),
    ("ifbench", "words:start_verb"): _NLTK.format("punkt_tab, averaged_perceptron_tagger_eng"),
    ("ifbench", "words:words_position"): _NLTK.format("punkt_tab"),
    ("ifbench", "words:keywords_specific_position"): _NLTK.format("punkt_tab"),
    ("ifbench", "format:title_case"): _NLTK.format("punkt_tab"),
    ("ifbench", "repeat:repeat_change"): _PROMPT_TEXT,
    ("ifbench", "repeat:repeat_span"): _PROMPT_TEXT,
    ("ifbench", "ratio:overlap"): "needs the reference text from the prompt",
}
"""(family, instruction id) -> why alignloop cannot draw it. Each was checked with the network blocked: the NLTK ones
raise LookupError on ordinary responses, the prompt-text ones cannot be built without text the prompt must carry."""

_CHECK_SEED = 0
"""The global `random` seed before each checker is built and run in `check_response`."""
_MAX_DRAWS = 100
"""Draws per constraint before giving up on kwargs that rebuild its description (see `_draw_constraint`)."""
_WARNED: set[tuple[str, str]] = set()  # (family, id) whose checker raised: warned once per process


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")


def _no_download(*args: Any, **kwargs: Any) -> bool:
    return False  # what nltk.download returns when it could not download


@functools.cache
def _registry_module(family: str):
    """if_verifiable's registry module, imported with nltk.download switched off (IFBench calls it at import)."""
    _check_family(family)
    import nltk

    download = nltk.download
    nltk.download = _no_download
    try:
        return importlib.import_module(f"if_verifiable.{family}.instructions_registry")
    finally:
        nltk.download = download


def registry(family: str) -> dict[str, type]:
    """Instruction id -> checker class of `family` (a copy of the package's INSTRUCTION_DICT)."""
    return dict(_registry_module(family).INSTRUCTION_DICT)


@functools.cache
def _conflicts(family: str) -> dict[str, frozenset[str]]:
    """Instruction id -> the ids it must not be drawn with, in both directions.

    IFEval's INSTRUCTION_CONFLICTS is one-sided (its `conflict_make` is never applied); IFBench has no table, so its
    ids conflict with nothing.
    """
    table = getattr(_registry_module(family), "INSTRUCTION_CONFLICTS", {})
    both: dict[str, set[str]] = {}
    for first, others in table.items():
        for other in others:
            if other != first:
                both.setdefault(first, set()).add(other)
                both.setdefault(other, set()).add(first)
    return {iid: frozenset(others) for iid, others in both.items()}


def usable_ids(family: str) -> list[str]:
    """The ids alignloop can draw and check offline: the registry minus `REFUSED`, sorted."""
    return sorted(iid for iid in registry(family) if (family, iid) not in REFUSED)


def check_ids(family: str, ids: Sequence[str], key: str) -> None:
    """Raise `ValueError("<key>: ...")` unless `ids` are distinct, known and usable instruction ids of `family`."""
    if family not in FAMILIES:
        raise ValueError(f"{key}: family {family!r} is not one of {', '.join(FAMILIES)}")
    if not ids:
        raise ValueError(f"{key}: names no instruction id")
    known = registry(family)
    seen: set[str] = set()
    for iid in ids:
        if (family, iid) in REFUSED:
            raise ValueError(f"{key}: {family} instruction {iid!r} cannot be used: it {REFUSED[family, iid]}")
        if iid not in known:
            raise ValueError(f"{key}: {iid!r} is not a {family} instruction; usable ones are: "
                             f"{', '.join(usable_ids(family))}")
        if iid in seen:
            raise ValueError(f"{key}: {iid!r} is listed twice")
        seen.add(iid)


@dataclass(frozen=True)
class Constraint:
    """One drawn instruction: what the prompt says (`description`) and what rebuilds its checker (`kwargs`)."""

    instruction_id: str
    kwargs: dict
    """build_description's arguments after a JSON round trip, None values dropped (as stored in JSONL)."""
    description: str


def _derive(*parts: object) -> int:
    """A 64-bit seed from `parts`, stable across processes and Python versions (unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode("utf-8")).digest()[:8], "big")


@contextmanager
def _global_random_seeded(seed: int) -> Iterator[None]:
    """Seed Python's global `random` (what the checkers draw from) and give the caller its state back afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _stored_kwargs(args: dict | None) -> dict:
    """The kwargs as a JSONL row keeps them: JSON round trip, None dropped (as if_verifiable does before building)."""
    return {name: value for name, value in json.loads(json.dumps(args or {})).items() if value is not None}


def _build_checker(family: str, instruction_id: str, kwargs: dict) -> tuple[Any, str]:
    """(checker, description) of `instruction_id` built from `kwargs`, with the global `random` seeded for what
    kwargs leave to chance."""
    checker_class = registry(family).get(instruction_id)
    if checker_class is None:
        raise InputError(f"{instruction_id!r} is not a {family} instruction")
    with _global_random_seeded(_CHECK_SEED):
        checker = checker_class(instruction_id)
        try:
            description = checker.build_description(**_stored_kwargs(kwargs))
        except Exception as error:  # a kwargs problem (bad row), not a response problem: say which
            raise InputError(f"{family} {instruction_id!r} cannot be built from kwargs {kwargs}: {error}") from error
    return checker, description


@functools.lru_cache(maxsize=4096)
def _max_compatible(family: str, candidates: frozenset[str]) -> int:
    """Size of the largest subset of `candidates` with no two in conflict (a maximum independent set, found by
    branching on the id with the most conflicts; IFEval's graph has a few hubs and is solved in milliseconds)."""
    conflicts = _conflicts(family)
    clashes = {iid: conflicts.get(iid, frozenset()) & candidates for iid in candidates}
    hub = max(sorted(candidates), key=lambda iid: len(clashes[iid]), default=None)
    if hub is None or not clashes[hub]:
        return len(candidates)
    return max(_max_compatible(family, candidates - {hub}),
               1 + _max_compatible(family, candidates - clashes[hub] - {hub}))


def max_non_conflicting(family: str, ids: Sequence[str]) -> int:
    """The most constraints of `ids` one prompt can carry without two in conflict (what bounds min_count)."""
    return _max_compatible(family, frozenset(ids))


def _draw_ids(family: str, ids: list[str], count: int, rng: random.Random) -> list[str]:
    """`count` ids of `ids`, none in conflict with another: each pick is uniform among the ids that still leave
    room for the rest."""
    conflicts = _conflicts(family)
    chosen: list[str] = []
    candidates = list(ids)
    while len(chosen) < count:
        needed, pool = count - len(chosen), frozenset(candidates)
        viable = candidates
        if needed > 1 and any(conflicts.get(iid, frozenset()) & pool for iid in candidates):  # else all are viable
            viable = [iid for iid in candidates
                      if 1 + _max_compatible(family, pool - conflicts.get(iid, frozenset()) - {iid}) >= needed]
        pick = rng.choice(viable)
        chosen.append(pick)
        candidates = [iid for iid in candidates if iid != pick and iid not in conflicts.get(pick, frozenset())]
    return chosen


def _draw_constraint(family: str, instruction_id: str, seed: int, index: int) -> Constraint:
    """Build the description with the global `random` seeded from (seed, index, attempt); keep the draw only if its
    kwargs rebuild the same description without drawing from `random`, i.e. whatever the random state.

    Only IFEval's nth_paragraph_first_word has draws that fail this: in about 1 of 4 it asks for paragraph n+1 of n,
    an impossible instruction that a rebuild from its kwargs re-draws; such draws are redrawn.
    """
    checker_class = registry(family)[instruction_id]
    for attempt in range(_MAX_DRAWS):
        with _global_random_seeded(_derive(seed, index, attempt)):
            checker = checker_class(instruction_id)
            description = checker.build_description()
            kwargs = _stored_kwargs(checker.get_instruction_args())
            state = random.getstate()
            rebuilt = checker_class(instruction_id).build_description(**kwargs)
            drew = random.getstate() != state
        if rebuilt == description and not drew:
            return Constraint(instruction_id=instruction_id, kwargs=kwargs, description=description)
    raise RuntimeError(f"{family} {instruction_id!r}: {_MAX_DRAWS} draws whose kwargs do not rebuild the description")


def draw_constraints(family: str, ids: Sequence[str], min_count: int, max_count: int, seed: int) -> list[Constraint]:
    """Draw between `min_count` and `max_count` non-conflicting constraints from `ids`, reproducibly from `seed`.

    1) the count is uniform in [min_count, min(max_count, most non-conflicting ids)];
    2) the ids are drawn one at a time from `sorted(ids)` (so only the set matters), never two in conflict;
    3) constraint k's description is built with the global `random` seeded from sha256(repr((seed, k, attempt))),
       and the caller's `random` state is restored afterwards.
    """
    check_ids(family, ids, "ids")
    if not 1 <= min_count <= max_count:
        raise ValueError(f"need 1 <= min_count <= max_count, got min_count={min_count}, max_count={max_count}")
    ids = sorted(ids)
    most = max_non_conflicting(family, ids)
    if most < min_count:
        raise ValueError(f"the {len(ids)} {family} ids give at most {most} non-conflicting constraints, fewer than "
                         f"min_count {min_count}")
    rng = random.Random(_derive(seed, "ids"))
    count = rng.randint(min_count, min(max_count, most))
    return [_draw_constraint(family, iid, seed, index)
            for index, iid in enumerate(_draw_ids(family, ids, count, rng))]


def rebuilt_constraints(family: str, instruction_ids: Sequence[str], kwargs_list: Sequence[dict]
                        ) -> list[Constraint]:
    """A row's constraints as drawn (the description each checker builds from the stored kwargs)."""
    return [Constraint(iid, dict(kwargs), _build_checker(family, iid, kwargs)[1])
            for iid, kwargs in zip(instruction_ids, kwargs_list)]


EVOLVE_OPERATORS = ("add_constraint", "swap_constraint")  # in depth (one more), in breadth (another type)


def evolve_constraints(family: str, constraints: Sequence[Constraint], allowed: Sequence[str], operator: str,
                       weights: dict[str, float], max_count: int, seed: int) -> list[Constraint] | None:
    """eva's operators on a verifiable prompt's constraints, reproducibly from `seed`: `add_constraint` appends one
    of `allowed` (not yet on the prompt, in conflict with none of its constraints), `swap_constraint` replaces one
    constraint by another such id; the new id is drawn ∝ `weights` (e.g. how often the policy fails the type; 1 for
    an id it lacks) and its arguments as `draw_constraints` draws them. None when the operator cannot apply (the
    prompt already holds `max_count` constraints, or no id fits)."""
    rng = random.Random(_derive(seed, "evolve", operator))
    conflicts = _conflicts(family)
    kept = list(constraints)
    if operator == "swap_constraint":
        if not kept:
            return None
        del kept[rng.randrange(len(kept))]
    elif operator != "add_constraint":
        raise ValueError(f"unknown operator {operator!r}; operators are {', '.join(EVOLVE_OPERATORS)}")
    if len(kept) >= max_count:
        return None
    present = {c.instruction_id for c in constraints}
    clash = set().union(*(conflicts.get(c.instruction_id, frozenset()) for c in kept)) if kept else set()
    candidates = [iid for iid in sorted(allowed) if iid not in present and iid not in clash
                  and not any(c.instruction_id in conflicts.get(iid, frozenset()) for c in kept)]
    if not candidates:
        return None
    pick = rng.choices(candidates, weights=[max(weights.get(iid, 1.0), 1e-3) for iid in candidates])[0]
    return [*kept, _draw_constraint(family, pick, seed, len(kept))]


def constrained_prompt(prompt: str, constraints: Sequence[Constraint]) -> str:
    """The prompt, a space, then the descriptions joined by spaces (the layout of Tülu 3's RLVR prompts)."""
    return " ".join([prompt, *(constraint.description for constraint in constraints)])


def _follows(family: str, instruction_id: str, checker, text: str) -> bool:
    try:
        return bool(checker.check_following(text))
    except Exception as error:  # a checker bug on an odd response (IFBench's quote_unquote on blanks): not followed
        if (family, instruction_id) not in _WARNED:
            _WARNED.add((family, instruction_id))
            log.warning("%s %s raised %s: %s; counted as not followed (warned once)", family, instruction_id,
                        type(error).__name__, error)
        return False


def check_response(family: str, instruction_ids: Sequence[str], kwargs_list: Sequence[dict],
                   response: str) -> list[tuple[bool, bool]]:
    """(strict, loose) per instruction: strict = the checker accepts `response`; loose = it accepts any non-blank
    variant of IFEval's `get_loose_transformations(response)` (the response itself included).

    Deterministic (global `random` seeded per checker and restored; langdetect seeded). An empty or blank response
    follows nothing; a checker that raises counts as not followed. Unknown ids or unbuildable kwargs raise ValueError.
    """
    _check_family(family)
    if len(instruction_ids) != len(kwargs_list):
        raise ValueError(f"{len(instruction_ids)} instruction ids but {len(kwargs_list)} kwargs")
    checkers = [_build_checker(family, iid, kwargs)[0] for iid, kwargs in zip(instruction_ids, kwargs_list)]
    if not isinstance(response, str) or not response.strip():
        return [(False, False)] * len(checkers)
    from if_verifiable.common import get_loose_transformations
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0  # langdetect samples features at random; unseeded, one text can flip language
    variants = [variant for variant in get_loose_transformations(response) if variant.strip()]
    results = []
    for iid, checker in zip(instruction_ids, checkers):
        with _global_random_seeded(_CHECK_SEED):
            strict = _follows(family, iid, checker, response)
            loose = strict or any(_follows(family, iid, checker, variant) for variant in variants)
        results.append((strict, loose))
    return results
