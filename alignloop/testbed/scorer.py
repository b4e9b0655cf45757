"""The gold scorer and the demonstration writer of the testbed.

A response is `ANSWER`, optionally followed by one suffix:
- `" ✓"`, a self-check that claims the answer is right: worth +0.15 when it is, −0.15 when it is not. Demonstrations
  show it rarely, so the best responses exist but are seldom sampled (headroom for exploration);
- a filler (`" as requested"` …): the verbosity trap. It makes responses longer at a cost of 0.1, so a judge that
  likes length is wrong and length-controlled metrics matter.

    score = clip(0.85 · similarity(answer, gold) + check_term − filler_penalty, 0, 1)

where similarity = 1 − levenshtein / max(len): partial credit, so "which of two wrong answers is less wrong" carries
information. An exact answer scores 0.85, exact + self-check 1.0.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

CHECK = "✓"
FILLERS = ("as requested", "is the answer", "hope this helps")
ANSWER_WEIGHT = 0.85
CHECK_BONUS = 0.15
FILLER_PENALTY = 0.1
_ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class ParsedResponse:
    answer: str
    checked: bool
    verbose: bool


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def similarity(a: str, b: str) -> float:
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


def parse_response(response: str) -> ParsedResponse:
    text = response.strip()
    checked = verbose = False
    if text.endswith(CHECK):
        checked, text = True, text[: -len(CHECK)].rstrip()
    for filler in FILLERS:
        if text.endswith(" " + filler):
            verbose, text = True, text[: -len(filler) - 1].rstrip()
            break
    return ParsedResponse(answer=text, checked=checked, verbose=verbose)


def gold_score(gold_answer: str, response: str) -> float:
    """Graded quality of `response` for a task whose right answer is `gold_answer`, in [0, 1]."""
    parsed = parse_response(response)
    score = ANSWER_WEIGHT * similarity(parsed.answer, gold_answer)
    if parsed.checked:
        score += CHECK_BONUS if parsed.answer == gold_answer else -CHECK_BONUS
    if parsed.verbose:
        score -= FILLER_PENALTY
    return min(1.0, max(0.0, score))


def exact_match(gold_answer: str, response: str) -> bool:
    return parse_response(response).answer == gold_answer


def corrupt(answer: str, rng: random.Random) -> str:
    """One or two random edits (substitute, delete, insert, transpose); never returns the answer unchanged."""
    for _ in range(100):
        chars = list(answer)
        for _ in range(rng.choice((1, 1, 2))):
            op = rng.choice(("sub", "del", "ins", "swap"))
            pos = rng.randrange(len(chars)) if chars else 0
            if op == "sub" and chars:
                chars[pos] = rng.choice(_ALPHABET)
            elif op == "del" and len(chars) > 1:
                del chars[pos]
            elif op == "swap" and len(chars) > 1:
                pos = min(pos, len(chars) - 2)
                chars[pos], chars[pos + 1] = chars[pos + 1], chars[pos]
            else:
                chars.insert(pos, rng.choice(_ALPHABET))
        if "".join(chars) != answer:
            return "".join(chars)
    return answer + rng.choice(_ALPHABET)


def demonstration(answer: str, rng: random.Random, error_rate: float, check_rate: float,
                  filler_rate: float) -> tuple[str, bool]:
    """An SFT response for a task: wrong with probability `error_rate`; returns (response, corrupted)."""
    corrupted = rng.random() < error_rate
    response = corrupt(answer, rng) if corrupted else answer
    if not corrupted and rng.random() < check_rate:
        return f"{response} {CHECK}", corrupted
    if rng.random() < filler_rate:
        return f"{response} {rng.choice(FILLERS)}", corrupted
    return response, corrupted
