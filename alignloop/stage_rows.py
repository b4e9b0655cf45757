"""The rows the stages hand each other as JSONL, declared once: what `sample`, `rank` and `benchmark` write and what
the stages after them read. Each is a TypedDict, so a row is still the plain dict that is written (keys sorted: the
bytes do not depend on the order they are built in) and read back; the type names every field and its meaning, and
`read_rows` refuses a file whose rows lack one, naming the file, the line and the key, instead of a KeyError deep in
a later stage.

Prompt rows are not here: their fields are the source's (testbed answers, IFEval constraints, ShareGPT ids), each
source documenting its own (alignloop/sources/).
"""


from pathlib import Path
from typing import NotRequired, TypedDict, TypeVar

from alignloop.errors import InputError
from alignloop.io import read_jsonl


class SampleRow(TypedDict):
    """One response of the policy to one prompt (`samples.jsonl`)."""
    prompt_id: str
    sample_index: int     # 0 .. sample.num_samples - 1, in generation order
    prompt: str
    response: str
    response_ids: list[int]
    num_tokens: int
    finished: bool        # ended with end-of-turn/EOS before sample.max_new_tokens
    seed: int             # the request's seed (one per prompt)
    policy: str           # digest of the weights that wrote it


class ScoreRow(TypedDict):
    """The ranker's score of one sample (`scores.jsonl`)."""
    prompt_id: str
    sample_index: int
    score: float
    ranker: str


class PairRow(TypedDict):
    """A chosen/rejected pair of one prompt's samples (`pairs.jsonl`), what optimize trains on."""
    pair_id: str          # <prompt_id>-<chosen index>-<rejected index>
    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_finished: bool
    rejected_finished: bool
    chosen_score: float
    rejected_score: float
    chosen_index: int
    rejected_index: int


class BenchmarkRow(TypedDict):
    """One held-out prompt's answers at an iteration (`benchmark_outputs.jsonl`)."""
    split: str
    prompt_id: str
    prompt: str
    greedy: str
    greedy_score: float | None   # None: the judge cannot score this prompt (the verifier, no constraint)
    greedy_tokens: int
    sampled: list[str]
    sampled_scores: list[float | None]
    answer: NotRequired[str]                        # the testbed's gold answer
    instruction_id_list: NotRequired[list[str]]     # verifiable prompts: the constraints checked,
    greedy_checks: NotRequired[list[list[bool]]]    # and the greedy answer's verdict per constraint (strict, loose)


Row = TypeVar("Row", SampleRow, ScoreRow, PairRow, BenchmarkRow)


def required_keys(kind: type) -> frozenset[str]:
    return frozenset(kind.__required_keys__)


def read_rows(path: str | Path, kind: type[Row]) -> list[Row]:
    """The rows of a JSONL file the stages wrote, each checked to hold `kind`'s required fields."""
    rows = read_jsonl(path)
    required = required_keys(kind)
    for line, row in enumerate(rows, 1):
        missing = required - row.keys()
        if missing:
            raise InputError(f"{path}, line {line}: not a {kind.__name__} (no {', '.join(sorted(missing))}); "
                             "re-run the stage that writes it")
    return rows  # type: ignore[return-value]
