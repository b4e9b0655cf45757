"""How large the testbed's world is, in the testbed tokenizer's tokens and in distinct prompts, computed from the
distributions `testbed.data` draws from: the config refuses sets larger than the world holds, and a run refuses a
`model.max_length` that leaves the longest prompt no room to answer. Errors are `ValueError("<key path>: ...")`."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from alignloop.testbed.data import eval_distributions
from alignloop.testbed.tokenizer import pre_tokenized
from alignloop.testbed.world import HELD_OUT_PAIRS, SHALLOW_ONLY, SKILLS

if TYPE_CHECKING:
    from alignloop.config import TestbedConfig

# The chat template adds `<|user|>` and `<|assistant|>` to a prompt.
_CHAT_TOKENS = 2


def _tokens_before(text: str, following: str = ",") -> int:
    """Tokens of `text` in the testbed tokenizer where `following` comes next (a word is whole only before a
    space, comma or colon)."""
    return len(pre_tokenized(text + following)) - len(pre_tokenized(following))


@lru_cache(maxsize=64)
def _chains(depth: int, held_out_only: bool) -> tuple[int, int]:
    """(longest instruction in tokens before the input, number of (chain, phrasing) pairs) over the chains
    of one depth that `testbed.world` may draw: no skill twice in a row, no held-out pair, `double` only alone."""
    def verbs(name: str) -> tuple[int, int]:
        return max(_tokens_before(" " + verb) for verb in SKILLS[name].verbs), len(SKILLS[name].verbs)

    separator, colon = _tokens_before(", then"), _tokens_before(": ", "a")
    if held_out_only:
        longest = max(verbs(a)[0] + separator + verbs(b)[0] for a, b in HELD_OUT_PAIRS) + colon
        return longest, sum(verbs(a)[1] * verbs(b)[1] for a, b in HELD_OUT_PAIRS)
    names = [name for name in SKILLS if depth == 1 or name not in SHALLOW_ONLY]
    # longest[s] / count[s]: over allowed chains of the current length that end with skill s
    longest = {name: verbs(name)[0] for name in names}
    count = {name: verbs(name)[1] for name in names}
    for _ in range(depth - 1):
        longest, count = (
            {s: max((longest[p] + separator + verbs(s)[0] for p in names if p != s and (p, s) not in HELD_OUT_PAIRS),
                    default=-1) for s in names},
            {s: sum(count[p] * verbs(s)[1] for p in names if p != s and (p, s) not in HELD_OUT_PAIRS) for s in names})
    reachable = [value for value in longest.values() if value >= 0]
    return (max(reachable) + colon if reachable else -1), sum(count.values())


def _testbed_splits(tb: TestbedConfig) -> dict[str, tuple[tuple[int, ...], int, int, bool]]:
    """split → (depths, shortest input, longest input, held-out pairs only), read from the distributions
    `testbed.data` draws the evaluation sets from (the in-distribution one is also the training pool's)."""
    return {split: (tuple(depth for depth, weight in enumerate(dist.depth_weights, start=1) if weight > 0),
                    dist.min_length, dist.max_length, dist.held_out_only)
            for split, dist in eval_distributions(tb).items()}


def longest_testbed_prompt(depths: tuple[int, ...], max_input: int, held_out_only: bool) -> int:
    """Tokens of the longest chat-formatted prompt the testbed can draw with these depths and input length."""
    return max(_chains(depth, held_out_only)[0] for depth in depths) + max_input + _CHAT_TOKENS


def check_prompts_fit(tb: TestbedConfig, max_length: int) -> None:
    """Sampling and benchmarks refuse a prompt that leaves no position to answer in (models/generation.py)."""
    for split, (depths, _, max_input, held_out) in _testbed_splits(tb).items():
        tokens = longest_testbed_prompt(depths, max_input, held_out)
        if tokens + 1 > max_length:
            raise ValueError(
                f"model.max_length: must be > {tokens}, the testbed's longest prompt in tokens ({split}: "
                f"{max(depths)} skill(s) on inputs of up to {max_input} characters), to leave room for an answer; "
                f"got {max_length}")


def _distinct_prompts(depths: tuple[int, ...], min_input: int, max_input: int, held_out: bool) -> int:
    """An upper bound of the distinct prompts of a split: (chain, phrasing) pairs times inputs."""
    inputs = sum(36 ** length for length in range(min_input, max_input + 1))
    return sum(_chains(depth, held_out)[1] for depth in depths) * inputs


def check_sets_drawable(tb: TestbedConfig) -> None:
    """`testbed.data` draws distinct prompts; a set larger than its distribution holds can never be drawn."""
    for split, (depths, low, high, held_out) in _testbed_splits(tb).items():
        wanted = tb.eval_size + (tb.prompt_pool_size if split == "in_distribution" else 0)
        at_most = _distinct_prompts(depths, low, high, held_out)
        if wanted > at_most:
            key = "testbed.prompt_pool_size" if split == "in_distribution" else "testbed.eval_size"
            raise ValueError(f"{key}: the testbed holds at most {at_most} distinct {split} prompts with inputs of "
                             f"{low}-{high} characters, fewer than the {wanted} asked for (eval_size"
                             f"{' + prompt_pool_size' if split == 'in_distribution' else ''}); lower it or raise "
                             "testbed.max_length")
