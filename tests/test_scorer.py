"""The testbed's gold scorer and demonstration writer (alignloop/testbed/scorer.py)."""

from __future__ import annotations

import random
import string

import pytest

from alignloop.testbed.scorer import (
    CHECK,
    FILLERS,
    corrupt,
    demonstration,
    exact_match,
    gold_score,
    levenshtein,
    parse_response,
    similarity,
)


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("kitten", "sitting", 3),
    ("flaw", "lawn", 2),
    ("saturday", "sunday", 3),
    ("intention", "execution", 5),
    ("", "", 0),
    ("", "abc", 3),
    ("abc", "", 3),
    ("abc", "abc", 0),
    ("ab", "ba", 2),  # plain Levenshtein: a transposition costs two edits
    ("abc", "abd", 1),
    ("abc", "ab", 1),
    ("abc", "xabc", 1),
])
def test_levenshtein_known_pairs(a, b, distance):
    assert levenshtein(a, b) == distance
    assert levenshtein(b, a) == distance


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("abcd", "abce", 0.75),
    ("kitten", "sitting", 1 - 3 / 7),
    ("", "", 1.0),
    ("abc", "", 0.0),
    ("abc", "xyz", 0.0),
    ("abc", "abc", 1.0),
])
def test_similarity(a, b, expected):
    assert similarity(a, b) == pytest.approx(expected)
    assert similarity(b, a) == pytest.approx(expected)


def test_exact_answer_scores_085():
    assert gold_score("k3fa", "k3fa") == pytest.approx(0.85)


def test_exact_answer_with_check_scores_one():
    assert gold_score("k3fa", "k3fa " + CHECK) == pytest.approx(1.0)


def test_wrong_answer_with_check_is_penalised():
    # similarity("abce", "abcd") = 0.75 -> 0.85 * 0.75 = 0.6375 without the check, 0.15 less with it.
    without = gold_score("abcd", "abce")
    with_check = gold_score("abcd", "abce " + CHECK)
    assert without == pytest.approx(0.6375)
    assert with_check == pytest.approx(0.4875)
    assert with_check < without


@pytest.mark.parametrize("filler", FILLERS)
@pytest.mark.parametrize("response", ["abcd", "abce", "xbce"])
def test_filler_suffix_costs_exactly_01(filler, response):
    plain = gold_score("abcd", response)
    padded = gold_score("abcd", f"{response} {filler}")
    assert plain - padded == pytest.approx(0.1)


def test_as_requested_suffix_on_exact_answer():
    assert gold_score("abcd", "abcd as requested") == pytest.approx(0.75)


def test_check_after_filler_counts_both():
    # 0.85 + 0.15 - 0.1
    assert gold_score("abcd", f"abcd as requested {CHECK}") == pytest.approx(0.9)


def test_scores_always_within_unit_interval():
    rng = random.Random(1234)
    alphabet = string.ascii_letters + string.digits
    suffixes = ["", " " + CHECK, *(" " + f for f in FILLERS), *(f" {f} {CHECK}" for f in FILLERS)]
    seen = []
    for _ in range(3000):
        gold = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        response = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) + rng.choice(suffixes)
        if rng.random() < 0.2:
            response = gold + rng.choice(suffixes)
        score = gold_score(gold, response)
        assert 0.0 <= score <= 1.0, (gold, response, score)
        seen.append(score)
    # The clip is reached at both ends (wrong + check, exact + check), so the range test is not vacuous.
    assert min(seen) == 0.0
    assert max(seen) == 1.0


def test_partial_credit_is_graded():
    gold = "abcdefgh"
    one_edit = "abcdefgX"
    three_edits = "abXdeYgZ"
    assert levenshtein(gold, one_edit) == 1 and levenshtein(gold, three_edits) == 3
    assert gold_score(gold, one_edit) == pytest.approx(0.85 * 7 / 8)
    assert gold_score(gold, three_edits) == pytest.approx(0.85 * 5 / 8)
    assert gold_score(gold, one_edit) > gold_score(gold, three_edits)


@pytest.mark.parametrize("suffix", ["", " " + CHECK, " as requested", " is the answer", " hope this helps",
                                    f" as requested {CHECK}", "  "])
def test_exact_match_ignores_suffix(suffix):
    assert exact_match("k3fa", "k3fa" + suffix) is True
    assert exact_match("k3fa", "k3fb" + suffix) is False


def test_parse_response_fields():
    parsed = parse_response(f"ab1 hope this helps {CHECK}")
    assert (parsed.answer, parsed.checked, parsed.verbose) == ("ab1", True, True)
    parsed = parse_response("ab1")
    assert (parsed.answer, parsed.checked, parsed.verbose) == ("ab1", False, False)


@pytest.mark.parametrize("answer", ["", "a", "aa", "11", "ab", "k3fa", "AAAA", "abcdefghij"])
def test_corrupt_never_returns_answer_unchanged(answer):
    for seed in range(500):
        corrupted = corrupt(answer, random.Random(seed))
        assert corrupted != answer, (answer, seed)
        # One or two edits; a transposition costs two Levenshtein edits, so at most 4.
        assert 1 <= levenshtein(answer, corrupted) <= 4, (answer, seed, corrupted)


def test_corrupt_is_deterministic_for_a_seed():
    assert corrupt("abcdef", random.Random(7)) == corrupt("abcdef", random.Random(7))


def test_demonstration_error_rate_and_check_marks():
    rng = random.Random(0)
    answer = "k3fa9"
    draws = [demonstration(answer, rng, error_rate=0.3, check_rate=0.2, filler_rate=0.1) for _ in range(5000)]
    corrupted_flags = [corrupted for _, corrupted in draws]
    error_rate = sum(corrupted_flags) / len(draws)
    assert error_rate == pytest.approx(0.3, abs=0.03)  # binomial std is 0.0065

    correct = [response for response, corrupted in draws if not corrupted]
    wrong = [response for response, corrupted in draws if corrupted]
    # The check mark appears only on uncorrupted responses, and at about check_rate of them.
    assert not any(response.endswith(CHECK) for response in wrong)
    checked = [response for response in correct if response.endswith(CHECK)]
    assert len(checked) / len(correct) == pytest.approx(0.2, abs=0.03)
    assert all(response == f"{answer} {CHECK}" for response in checked)
    # The corrupted flag is the truth: a flagged response's answer is wrong, an unflagged one's is right.
    assert all(exact_match(answer, response) for response in correct)
    assert not any(exact_match(answer, response) for response in wrong)
    # Filler appears on about filler_rate of the responses that did not get a check mark.
    unchecked = [response for response, _ in draws if not response.endswith(CHECK)]
    padded = [response for response in unchecked if parse_response(response).verbose]
    assert len(padded) / len(unchecked) == pytest.approx(0.1, abs=0.03)


def test_demonstration_extremes():
    rng = random.Random(3)
    always_wrong = [demonstration("abc", rng, 1.0, 1.0, 0.0) for _ in range(200)]
    assert all(corrupted and not exact_match("abc", response) and CHECK not in response
               for response, corrupted in always_wrong)
    never_wrong = [demonstration("abc", rng, 0.0, 0.0, 0.0) for _ in range(200)]
    assert never_wrong == [("abc", False)] * 200
