"""The row types the stages exchange (alignloop/stage_rows.py): they declare exactly what the stages write, and a file
whose rows lack a field is refused naming the file, the line and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignloop.errors import InputError
from alignloop.io import write_jsonl
from alignloop.stage_rows import BenchmarkRow, PairRow, SampleRow, ScoreRow, read_rows


def _keys(path: Path) -> list[set[str]]:
    return [set(json.loads(line)) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_the_types_declare_what_the_shared_run_wrote(tiny_run: Path) -> None:
    iteration = tiny_run / "artifacts" / "iter-1"
    for name, kind in (("samples", SampleRow), ("scores", ScoreRow), ("pairs", PairRow)):
        keys = _keys(iteration / f"{name}.jsonl")
        assert keys and all(row == set(kind.__required_keys__) for row in keys), (name, keys[0])
    declared = BenchmarkRow.__required_keys__ | BenchmarkRow.__optional_keys__
    for row in _keys(iteration / "benchmark_outputs.jsonl"):
        assert BenchmarkRow.__required_keys__ <= row <= declared, row
    assert len(read_rows(iteration / "pairs.jsonl", PairRow)) == len(_keys(iteration / "pairs.jsonl"))


def test_a_row_without_a_field_is_refused_with_its_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    good = ScoreRow(prompt_id="p", sample_index=0, score=1.0, ranker="gold")
    write_jsonl(path, [good, {key: value for key, value in good.items() if key != "score"}])
    with pytest.raises(InputError, match=r"scores.jsonl, line 2: not a ScoreRow \(no score\)"):
        read_rows(path, ScoreRow)


def test_a_typed_row_is_written_as_the_same_bytes_as_a_dict_in_any_order(tmp_path: Path) -> None:
    typed = ScoreRow(ranker="gold", score=0.5, sample_index=3, prompt_id="p")
    write_jsonl(tmp_path / "a.jsonl", [typed])
    write_jsonl(tmp_path / "b.jsonl", [{"prompt_id": "p", "sample_index": 3, "score": 0.5, "ranker": "gold"}])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
