"""The names of the benchmark's scores, built in one place for what writes them (the benchmark stage) and what
reads them (the terminal table, the report, its figures): `<set>/<mode>_<judge>`, e.g. `in_distribution/greedy_gold`,
the judge's mean score of an evaluation set's greedy or sampled responses."""

from __future__ import annotations


def judge_measure(mode: str, judge: str) -> str:
    """`greedy_gold`: a judge's mean score of the greedy (or `sampled`) responses, without the set."""
    return f"{mode}_{judge}"


def score_key(split: str, mode: str, judge: str) -> str:
    """`in_distribution/greedy_gold`: one evaluation set's `judge_measure`."""
    return f"{split}/{judge_measure(mode, judge)}"
