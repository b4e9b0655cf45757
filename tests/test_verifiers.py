"""alignloop.verifiers.checkers: IFEval/IFBench constraints drawn reproducibly and checked offline, strict and loose."""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import random
import subprocess
import sys
import textwrap

import pytest

from real_kit import skip_module_without_checkers

skip_module_without_checkers()

from alignloop.verifiers import checkers as verifiers  # noqa: E402
from alignloop.verifiers.checkers import (  # noqa: E402
    REFUSED,
    Constraint,
    check_ids,
    check_response,
    constrained_prompt,
    draw_constraints,
    max_non_conflicting,
    registry,
    usable_ids,
)

LOWERCASE_ENGLISH = "the weather today is mild and the river is calm, so we will walk along the bank after lunch."


def check_one(family: str, instruction_id: str, response: str, **kwargs) -> tuple[bool, bool]:
    return check_response(family, [instruction_id], [kwargs], response)[0]


def test_registries_and_refusals():
    assert (len(registry("ifeval")), len(registry("ifbench"))) == (25, 58)
    assert all(instruction_id in registry(family) for family, instruction_id in REFUSED)
    assert (len(usable_ids("ifeval")), len(usable_ids("ifbench"))) == (22, 50)
    for family in verifiers.FAMILIES:
        assert usable_ids(family) == sorted(set(registry(family)) - {i for f, i in REFUSED if f == family})


def test_no_comma_strict_and_loose():
    assert check_one("ifeval", "punctuation:no_comma", "Hello, world.") == (False, False)
    assert check_one("ifeval", "punctuation:no_comma", "Hello world.") == (True, True)
    # IFEval's loose reading forgives a preamble line: dropping "Sure, here it is:" leaves no comma
    assert check_one("ifeval", "punctuation:no_comma", "Sure, here it is:\nHello world.") == (False, True)


def test_english_lowercase_is_strict_only_without_capitals():
    assert check_one("ifeval", "change_case:english_lowercase", LOWERCASE_ENGLISH) == (True, True)
    assert check_one("ifeval", "change_case:english_lowercase", LOWERCASE_ENGLISH.capitalize()) == (False, False)


def test_markdown_title_line_fails_strict_and_passes_loose():
    """startend:quotation wants the response wrapped in double quotes; a `**Title**` first line breaks that, and
    IFEval's loose variant without the first line restores it."""
    assert check_one("ifeval", "startend:quotation", '"Roses are red, violets are blue."') == (True, True)
    assert check_one("ifeval", "startend:quotation", '**A Poem**\n"Roses are red, violets are blue."') == (False, True)
    # the loose variant that strips markdown asterisks: a bold end phrase
    assert check_one("ifeval", "startend:end_checker", "Thanks for reading. **Any other questions?**",
                     end_phrase="Any other questions?") == (False, True)


def test_ifbench_checkers():
    assert check_one("ifbench", "format:no_whitespace", "no_spaces_at_all") == (True, True)
    assert check_one("ifbench", "format:no_whitespace", "two words") == (False, False)
    assert check_one("ifbench", "count:word_count_range", "one two three four", min_words=3, max_words=5) == \
        (True, True)
    assert check_one("ifbench", "count:word_count_range", "one two", min_words=3, max_words=5) == (False, False)


def test_response_language_is_deterministic():
    english = "This is a short note about the weather, which is mild today."
    german = "Das ist eine kurze Notiz über das Wetter, das heute mild ist."
    assert check_one("ifeval", "language:response_language", english, language="en") == (True, True)
    assert check_one("ifeval", "language:response_language", german, language="en") == (False, False)
    assert check_one("ifeval", "language:response_language", german, language="de") == (True, True)
    short = "ok sure"  # too little text for a confident guess: unseeded, langdetect's answer can change per call
    verdicts = {check_one("ifeval", "language:response_language", short, language="en") for _ in range(20)}
    assert len(verdicts) == 1


def test_empty_response_follows_nothing():
    ids = ["punctuation:no_comma", "change_case:english_lowercase"]
    for response in ("", "   \n\n  "):
        assert check_response("ifeval", ids, [{}, {}], response) == [(False, False), (False, False)]


def test_checker_exception_counts_as_not_followed_and_warns_once(monkeypatch, caplog):
    checker_class = registry("ifeval")["punctuation:no_comma"]

    def broken(self, value):
        raise IndexError("a checker bug")

    monkeypatch.setattr(checker_class, "check_following", broken)
    monkeypatch.setattr(verifiers, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="alignloop.verifiers.checkers"):
        for _ in range(2):
            assert check_response("ifeval", ["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}],
                                  LOWERCASE_ENGLISH.replace(",", "")) == [(False, False), (True, True)]
    warnings = [record for record in caplog.records if "punctuation:no_comma" in record.getMessage()]
    assert len(warnings) == 1 and "IndexError" in warnings[0].getMessage()


def test_unbuildable_kwargs_and_unknown_ids_raise():
    with pytest.raises(ValueError, match="combination:repeat_prompt.*cannot be built"):
        check_one("ifeval", "combination:repeat_prompt", "anything")
    with pytest.raises(ValueError, match="'no:such' is not a ifeval instruction"):
        check_one("ifeval", "no:such", "anything")
    with pytest.raises(ValueError, match="2 instruction ids but 1 kwargs"):
        check_response("ifeval", ["punctuation:no_comma", "change_case:english_lowercase"], [{}], "x")


def test_check_ids_errors_name_the_key():
    check_ids("ifeval", ["punctuation:no_comma", "change_case:english_lowercase"], "data.constraints.ids")
    with pytest.raises(ValueError, match=r"^data\.constraints\.family: family 'ifevel' is not one of ifeval, ifbench"):
        check_ids("ifevel", ["punctuation:no_comma"], "data.constraints.family")
    with pytest.raises(ValueError, match=r"^k: ifeval instruction 'length_constraints:number_sentences' cannot be "
                                         r"used: it needs NLTK data that NLTK downloads \(punkt_tab\)"):
        check_ids("ifeval", ["length_constraints:number_sentences"], "k")
    with pytest.raises(ValueError, match=r"^k: ifbench instruction 'repeat:repeat_span' cannot be used: it needs "
                                         r"the text to repeat from the prompt"):
        check_ids("ifbench", ["repeat:repeat_span"], "k")
    with pytest.raises(ValueError) as unknown:
        check_ids("ifeval", ["punctuation:no_coma"], "k")
    message = str(unknown.value)
    assert message.startswith("k: 'punctuation:no_coma' is not a ifeval instruction; usable ones are: ")
    assert message.endswith(", ".join(usable_ids("ifeval"))) and "number_sentences" not in message
    with pytest.raises(ValueError, match="^k: 'punctuation:no_comma' is listed twice"):
        check_ids("ifeval", ["punctuation:no_comma", "punctuation:no_comma"], "k")
    with pytest.raises(ValueError, match="^k: names no instruction id"):
        check_ids("ifeval", [], "k")


def test_draw_is_reproducible_and_varies_with_the_seed():
    ids = usable_ids("ifeval")
    first = draw_constraints("ifeval", ids, 1, 3, seed=11)
    assert first == draw_constraints("ifeval", ids, 1, 3, seed=11)
    assert first == draw_constraints("ifeval", list(reversed(ids)), 1, 3, seed=11)  # only the set of ids matters
    draws = [tuple(c.description for c in draw_constraints("ifeval", ids, 1, 3, seed)) for seed in range(100)]
    assert len(set(draws)) >= 95
    assert {len(draw) for draw in draws} == {1, 2, 3}
    ifbench = [draw_constraints("ifbench", usable_ids("ifbench"), 2, 2, seed) for seed in range(50)]
    assert all(len(draw) == 2 and draw[0].instruction_id != draw[1].instruction_id for draw in ifbench)
    assert len({tuple(c.description for c in draw) for draw in ifbench}) >= 48


def test_draw_leaves_the_global_random_state_alone():
    random.seed(1234)
    state = random.getstate()
    constraints = draw_constraints("ifeval", usable_ids("ifeval"), 2, 4, seed=5)
    check_response("ifeval", [c.instruction_id for c in constraints], [c.kwargs for c in constraints],
                   LOWERCASE_ENGLISH)
    assert random.getstate() == state


def test_conflicting_instructions_are_never_drawn_together():
    table = importlib.import_module("if_verifiable.ifeval.instructions_registry").INSTRUCTION_CONFLICTS

    def clash(first: str, second: str) -> bool:
        return second in table.get(first, ()) or first in table.get(second, ())

    for seed in range(300):
        drawn = [c.instruction_id for c in draw_constraints("ifeval", usable_ids("ifeval"), 2, 5, seed)]
        assert not any(clash(a, b) for a, b in itertools.combinations(drawn, 2)), drawn
    # the table lists lowercase -> capital only one way round, and response_language -> lowercase the other
    pair = ["change_case:english_capital", "change_case:english_lowercase"]
    assert (max_non_conflicting("ifeval", pair), max_non_conflicting("ifeval", usable_ids("ifeval"))) == (1, 14)
    assert max_non_conflicting("ifbench", usable_ids("ifbench")) == 50  # IFBench declares no conflicts
    assert all(len(draw_constraints("ifeval", pair, 1, 2, seed)) == 1 for seed in range(20))
    with pytest.raises(ValueError, match="at most 1 non-conflicting constraints, fewer than min_count 2"):
        draw_constraints("ifeval", pair, 2, 2, seed=0)
    with pytest.raises(ValueError, match="at most 1 non-conflicting"):
        draw_constraints("ifeval", ["detectable_format:constrained_response", "punctuation:no_comma"], 2, 2, seed=0)


def test_nth_paragraph_draws_are_possible_and_rebuild():
    """Upstream can draw "paragraph n+1 of n", whose kwargs leave the paragraph to chance; such draws are redrawn."""
    checker_class = registry("ifeval")["length_constraints:nth_paragraph_first_word"]
    random.seed(1)
    checker = checker_class("length_constraints:nth_paragraph_first_word")
    checker.build_description()
    upstream = checker.get_instruction_args()
    assert upstream["nth_paragraph"] == upstream["num_paragraphs"] + 1
    for seed in range(100):
        (drawn,) = draw_constraints("ifeval", ["length_constraints:nth_paragraph_first_word"], 1, 1, seed)
        assert 1 <= drawn.kwargs["nth_paragraph"] <= drawn.kwargs["num_paragraphs"]


def test_constrained_prompt_appends_descriptions():
    constraints = [Constraint("punctuation:no_comma", {}, "Do not use commas."),
                   Constraint("startend:end_checker", {"end_phrase": "Bye."}, "End with Bye.")]
    assert constrained_prompt("Write a poem.", constraints) == "Write a poem. Do not use commas. End with Bye."
    assert constrained_prompt("Write a poem.", []) == "Write a poem."


OFFLINE_SCRIPT = textwrap.dedent("""
    import json, random, socket, sys
    attempts = []
    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network blocked by the test")
    socket.socket.connect = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    import nltk
    nltk.download = lambda *args, **kwargs: attempts.append(f"nltk.download{args}") or False
    from alignloop.verifiers.checkers import FAMILIES, check_response, draw_constraints, registry, usable_ids
    responses = ["the river is calm. " * 40, "* one\\n* two\\n\\nP.S. done", '{"a": 1}', "**Title**\\nWORDS " * 30,
                 '"quoted" words, then (parentheses) and 1, 2, 3.\\n\\n' * 10, "日本語の文です。" * 5]
    checked, mismatches = 0, []
    for family in FAMILIES:
        for instruction_id in usable_ids(family):
            checker_class = registry(family)[instruction_id]
            for seed in range(10):
                (constraint,) = draw_constraints(family, [instruction_id], 1, 1, seed)
                kwargs = {k: v for k, v in json.loads(json.dumps(constraint.kwargs)).items() if v is not None}
                for state in (7, 99):  # whatever the global random state, the kwargs rebuild the description
                    random.seed(state)
                    if checker_class(instruction_id).build_description(**kwargs) != constraint.description:
                        mismatches.append((family, instruction_id, seed))
                for response in responses:
                    result = check_response(family, [instruction_id], [kwargs], response)
                    assert all(type(flag) is bool for pair in result for flag in pair)
            checked += 1
    print(json.dumps({"attempts": attempts, "checked": checked, "mismatches": mismatches}))
""")


def test_every_usable_id_builds_rebuilds_and_checks_with_the_network_blocked():
    """In a fresh interpreter (IFBench's import is where NLTK would download), with sockets and nltk.download
    refused: every usable id of both families draws, rebuilds its description from JSON kwargs and checks."""
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {"attempts": [], "checked": 22 + 50, "mismatches": []}
