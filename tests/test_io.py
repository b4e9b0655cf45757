"""Atomic writes and JSONL (alignloop/io.py)."""

from __future__ import annotations

import pytest

from alignloop.io import atomic_path, read_json, read_jsonl, write_json, write_jsonl, write_text


def _names(directory) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_jsonl_round_trip(tmp_path):
    rows = [{"prompt_id": "a1", "response": "k3fa ✓", "score": 0.85, "skills": ["reverse", "upper"]},
            {"prompt_id": "b2", "response": "", "score": 0.0, "nested": {"x": [1, 2.5, None, True]}}]
    path = tmp_path / "sub" / "rows.jsonl"
    assert write_jsonl(path, iter(rows)) == 2  # parents are created; generators work
    assert read_jsonl(path) == rows
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert "✓" in lines[0]  # written as text, not \u escapes
    assert _names(path.parent) == ["rows.jsonl"]


def test_jsonl_empty_and_blank_lines(tmp_path):
    path = tmp_path / "empty.jsonl"
    assert write_jsonl(path, []) == 0
    assert read_jsonl(path) == []
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        read_jsonl(tmp_path / "none.jsonl")


def test_json_round_trip(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": [0.5]})
    assert read_json(tmp_path / "m.json") == {"a": [0.5], "b": 1}
    assert (tmp_path / "m.json").read_text() == '{\n  "a": [\n    0.5\n  ],\n  "b": 1\n}\n'


def test_atomic_path_replaces_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with atomic_path(path) as tmp:
        assert tmp != path
        tmp.write_text("new")
        assert path.read_text() == "old"  # nothing under the final name until the body finishes
    assert path.read_text() == "new"
    assert _names(tmp_path) == ["out.txt"]


def test_atomic_path_keeps_previous_file_when_body_raises(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(path) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert _names(tmp_path) == ["out.txt"]


def test_atomic_path_leaves_nothing_when_first_write_fails(tmp_path):
    path = tmp_path / "rows.jsonl"

    def rows():
        yield {"a": 1}
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        write_jsonl(path, rows())
    assert _names(tmp_path) == []


def test_write_jsonl_failure_keeps_previous_rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise ValueError("bad row")

    with pytest.raises(ValueError):
        write_jsonl(path, rows())
    assert read_jsonl(path) == [{"a": 1}]
    assert _names(tmp_path) == ["rows.jsonl"]


def _fill(directory, files: dict[str, str]) -> None:
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)


def _contents(directory) -> dict[str, str]:
    return {path.name: path.read_text() for path in directory.iterdir()}


def test_atomic_path_replaces_directory(tmp_path):
    target = tmp_path / "model"
    _fill(target, {"config.json": "old", "stale.bin": "old weights"})
    with atomic_path(target) as tmp:
        _fill(tmp, {"config.json": "new", "model.safetensors": "new weights"})
        assert _contents(target) == {"config.json": "old", "stale.bin": "old weights"}
    assert _contents(target) == {"config.json": "new", "model.safetensors": "new weights"}  # stale file gone
    assert _names(tmp_path) == ["model"]  # no .model.old, no temporary


def test_atomic_path_keeps_directory_when_body_raises(tmp_path):
    target = tmp_path / "model"
    _fill(target, {"config.json": "old"})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            _fill(tmp, {"config.json": "partial"})
            raise RuntimeError("killed mid-save")
    assert _contents(target) == {"config.json": "old"}
    assert _names(tmp_path) == ["model"]


def test_atomic_path_creates_new_directory(tmp_path):
    target = tmp_path / "a" / "b" / "policy"
    with atomic_path(target) as tmp:
        _fill(tmp, {"weights": "w"})
    assert _contents(target) == {"weights": "w"}
    assert _names(target.parent) == ["policy"]


def test_write_text_overwrites(tmp_path):
    write_text(tmp_path / "t.txt", "one")
    write_text(tmp_path / "t.txt", "two")
    assert (tmp_path / "t.txt").read_text() == "two"
    assert _names(tmp_path) == ["t.txt"]


def test_a_damaged_jsonl_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3\n', encoding="utf-8")  # a kill mid-line, by hand
    with pytest.raises(ValueError, match=r"pairs\.jsonl:3: damaged \(Expecting") as caught:
        read_jsonl(path)
    assert "\n" not in str(caught.value) and "re-run the stage" in str(caught.value)
    path.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(ValueError, match=r"pairs\.jsonl: damaged \(not UTF-8\)"):
        read_jsonl(path)


def test_a_damaged_json_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{\n  "a": 1,\n  "b": \n}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"metrics\.json:4: damaged"):
        read_json(path)


def test_params_that_are_not_utf8_are_one_line(tmp_path):
    from alignloop.config import ConfigError, load_config

    (tmp_path / "params.yaml").write_bytes("seed: 0\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="params.yaml: not UTF-8 text"):
        load_config(tmp_path / "params.yaml")


def test_report_on_a_damaged_metrics_file_is_one_line(tmp_path):
    import subprocess

    from pipeline_helpers import ALIGNLOOP, env_for

    (tmp_path / "params.yaml").write_text("iterations: 0\n", encoding="utf-8")
    (tmp_path / "artifacts" / "sft").mkdir(parents=True)
    (tmp_path / "artifacts" / "sft" / "metrics.json").write_text('{"in_distribution/greedy_gold": 0.7,', "utf-8")
    result = subprocess.run([ALIGNLOOP, "report"], cwd=tmp_path, env=env_for(tmp_path), capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "metrics.json:1: damaged" in lines[0], result.stderr
