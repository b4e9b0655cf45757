"""Prompt sets from real files: formats, extraction, stable ids, counted filters and one-line errors."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import tempfile
from pathlib import Path

import datasets
import huggingface_hub.constants
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignloop.config import ConfigError
from alignloop.config.data import DataConfig, PromptSetConfig
from alignloop.sources.prompts import DataError, _read, prepare_prompt_sets, prompt_id

MAX_TOKENS = 20


def read_prompt_set(spec: PromptSetConfig, key: str, root: Path, with_responses: bool = False) -> list[dict]:
    """The rows of one prompt set in file order, before any filtering."""
    return _read(spec, key, root, with_responses)[0]


def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


def uf_row(prompt: str, chosen: str = "good", rejected: str = "bad", messages: list | None = None) -> dict:
    """UltraFeedback-binarized layout: prompt text, messages, chosen and rejected chats."""
    messages = messages if messages is not None else chat(("user", prompt), ("assistant", chosen))
    return {"prompt": prompt, "messages": messages, "chosen": chat(("user", prompt), ("assistant", chosen)),
            "rejected": chat(("user", prompt), ("assistant", rejected))}


def write(path: Path, rows: list[dict]) -> Path:
    """Write rows as .jsonl, .json, .parquet or .csv (lists as JSON text, as CSV has no list type)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows)
    return path


def length(prompt: str) -> int:
    return len(prompt)


def prepare(root: Path, train: dict, evals: dict[str, dict], sft: dict | None = None):
    config = DataConfig(train=PromptSetConfig(**train), eval={n: PromptSetConfig(**s) for n, s in evals.items()},
                        sft=PromptSetConfig(**sft) if sft else None)
    return prepare_prompt_sets(config, root, length, MAX_TOKENS, MAX_TOKENS)


def test_prompt_id_is_a_sha256_prefix():
    assert prompt_id("héllo") == hashlib.sha256("héllo".encode()).hexdigest()[:16]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_every_format_gives_the_same_rows_and_ids(tmp_path, suffix):
    rows = [uf_row("first"), uf_row("second", messages=chat(("system", "be kind"), ("user", "second"),
                                                             ("assistant", "ok"), ("user", "later")))]
    path = write(tmp_path / f"set{suffix}", rows)
    by_text = read_prompt_set(PromptSetConfig(path=path.name), "data.train", tmp_path)
    by_chat = read_prompt_set(PromptSetConfig(path=str(path), messages_column="messages"), "data.train", tmp_path)
    assert by_text == by_chat == [{"prompt": "first", "source_index": 0}, {"prompt": "second", "source_index": 1}]
    write(tmp_path / "eval.jsonl", [{"prompt": "held out"}])
    files, _ = prepare(tmp_path, {"path": path.name}, {"e": {"path": "eval.jsonl"}})
    # The same ids from every format: they hash the text only.
    assert [row["prompt_id"] for row in files["train_prompts"]] == [
        hashlib.sha256(text).hexdigest()[:16] for text in (b"first", b"second")]


def test_csv_with_python_repr_messages(tmp_path):
    path = tmp_path / "repr.csv"
    path.write_text('prompt,messages\n"x","' + repr(chat(("system", "s"), ("user", "hi"))).replace('"', '""') + '"\n')
    rows = read_prompt_set(PromptSetConfig(path="repr.csv", messages_column="messages"), "data.train", tmp_path)
    assert rows == [{"prompt": "hi", "source_index": 0}]


def test_sft_responses_from_chosen_and_from_messages(tmp_path):
    long_chat = chat(("system", "s"), ("user", "p"), ("assistant", "first reply"), ("user", "more"),
                     ("assistant", "last reply"))
    write(tmp_path / "sft.parquet", [{"prompt": "p", "messages": long_chat, "chosen": long_chat}])
    from_chosen = read_prompt_set(PromptSetConfig(path="sft.parquet", response_column="chosen"), "data.sft",
                                  tmp_path, with_responses=True)
    from_messages = read_prompt_set(PromptSetConfig(path="sft.parquet", messages_column="messages"), "data.sft",
                                    tmp_path, with_responses=True)
    assert from_chosen == [{"prompt": "p", "source_index": 0, "response": "last reply"}]
    assert from_messages == [{"prompt": "p", "source_index": 0, "response": "first reply"}]


def test_counts_of_every_filter(tmp_path, caplog):
    write(tmp_path / "alpha.jsonl", [{"prompt": p} for p in ["e1", "e2", "e2", "shared", "y" * 30]])
    write(tmp_path / "beta.parquet", [{"prompt": p} for p in ["shared", "e3", "   "]])
    train = [uf_row(p) for p in ["t1", "t2", "t1", "e1", "shared", "x" * 30, " "]]
    train += [uf_row("n", messages=chat(("system", "no user"))), uf_row("t3"), uf_row("e2"), uf_row("e2")]
    write(tmp_path / "train.parquet", train)
    sft = [uf_row("p1", "r1"), uf_row("p1", "r1"), uf_row("p1", "r2"), uf_row("e3", "r"), uf_row("z" * 30, "r")]
    sft.append({**uf_row("p2"), "chosen": chat(("user", "p2"))})
    write(tmp_path / "sft.jsonl", sft)

    with caplog.at_level(logging.INFO, logger="alignloop.sources.prompts"):
        files, stats = prepare(tmp_path, {"path": "train.parquet", "messages_column": "messages"},
                               {"alpha": {"path": "alpha.jsonl"}, "beta": {"path": "beta.parquet"}},
                               {"path": "sft.jsonl", "response_column": "chosen"})

    assert list(files) == ["train_prompts", "eval/alpha", "eval/beta", "sft"] and list(stats) == [
        "train", "eval/alpha", "eval/beta", "sft"]
    def counts(read, empty, dup, leak, long, kept):
        return dict(read=read, empty=empty, duplicates=dup, in_eval=leak, too_long=long, kept=kept)

    assert stats["eval/alpha"] == counts(5, 0, 1, 0, 1, 3)
    assert stats["eval/beta"] == counts(3, 1, 0, 0, 0, 2)  # `shared` may be in two evaluation sets
    assert stats["train"] == counts(11, 2, 2, 3, 1, 3)  # e2 first counts as leakage, its repeat as a duplicate
    assert stats["sft"] == counts(6, 1, 1, 1, 1, 2)  # (p1, r2) is not a duplicate of (p1, r1)
    assert files["train_prompts"] == [{"prompt_id": prompt_id(p), "prompt": p, "source_index": i, "pool_index": k}
                                      for k, (p, i) in enumerate([("t1", 0), ("t2", 1), ("t3", 8)])]
    assert files["eval/beta"][0] == {"prompt_id": prompt_id("shared"), "prompt": "shared", "source_index": 0,
                                     "split": "beta"}
    assert [(r["prompt"], r["response"]) for r in files["sft"]] == [("p1", "r1"), ("p1", "r2")]
    assert set(files["sft"][0]) == {"prompt_id", "prompt", "response", "source_index"}
    assert len([r for r in caplog.records if r.levelno == logging.INFO]) == 4
    again = prepare(tmp_path, {"path": "train.parquet", "messages_column": "messages"},
                    {"alpha": {"path": "alpha.jsonl"}, "beta": {"path": "beta.parquet"}},
                    {"path": "sft.jsonl", "response_column": "chosen"})
    assert again == (files, stats)


def test_max_rows_and_a_rewritten_file_is_read_again(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the throwaway datasets cache goes
    path = tmp_path / "p.jsonl"
    write(path, [{"prompt": p} for p in ["a", "b", "c"]])
    spec = PromptSetConfig(path="p.jsonl", max_rows=2)
    assert [r["prompt"] for r in read_prompt_set(spec, "data.train", tmp_path)] == ["a", "b"]
    write(path, [{"prompt": p} for p in ["new", "rows"]])
    assert [r["prompt"] for r in read_prompt_set(spec, "data.train", tmp_path)] == ["new", "rows"]
    assert list(scratch.iterdir()) == []  # no cache left behind


def error(tmp_path: Path, spec: dict, with_responses: bool = False, key: str = "data.train") -> str:
    with pytest.raises(DataError) as caught:
        read_prompt_set(PromptSetConfig(**spec), key, tmp_path, with_responses=with_responses)
    assert isinstance(caught.value, ConfigError) and "\n" not in str(caught.value)
    return str(caught.value)


def test_missing_columns_are_named_with_the_real_columns(tmp_path):
    write(tmp_path / "uf.parquet", [uf_row("p")])
    real = "columns are: prompt, messages, chosen, rejected"
    assert error(tmp_path, {"path": "uf.parquet", "prompt_column": "text"}) == (
        f"data.train.prompt_column: no column 'text' in {tmp_path / 'uf.parquet'}; {real}")
    assert error(tmp_path, {"path": "uf.parquet", "messages_column": "chat"}).startswith(
        "data.train.messages_column: no column 'chat'")
    message = error(tmp_path, {"path": "uf.parquet", "response_column": "best"}, True, "data.sft")
    assert message.startswith("data.sft.response_column: no column 'best'") and message.endswith(real)


def test_bad_paths(tmp_path):
    assert error(tmp_path, {"path": "nope.jsonl"}) == f"data.train.path: no such file {tmp_path / 'nope.jsonl'}"
    assert error(tmp_path, {"path": "./dir/nope"}).startswith("data.train.path: no such file")
    (tmp_path / "notes.txt").write_text("hi")
    assert error(tmp_path, {"path": "notes.txt"}).endswith("supported suffixes are: .jsonl, .json, .parquet, .csv")
    write(tmp_path / "p.jsonl", [{"prompt": "a"}])
    assert error(tmp_path, {"path": "p.jsonl", "split": "train-x"}).startswith("data.train.split:")


def test_sft_needs_a_response(tmp_path):
    write(tmp_path / "p.jsonl", [{"prompt": "a"}])
    assert error(tmp_path, {"path": "p.jsonl"}, True, "data.sft") == (
        "data.sft.response_column: SFT demonstrations need a response; set response_column or messages_column")


def test_a_set_emptied_by_filtering_is_an_error(tmp_path):
    write(tmp_path / "e.jsonl", [{"prompt": "a"}])
    write(tmp_path / "t.jsonl", [{"prompt": p} for p in ["a", "a", " ", "w" * 30]])
    with pytest.raises(DataError, match=r"^data\.train: no prompts left after filtering \(read 4: 1 empty, "
                                        r"1 duplicates, 1 in evaluation sets, 1 too long\)$"):
        prepare(tmp_path, {"path": "t.jsonl"}, {"e": {"path": "e.jsonl"}})
    write(tmp_path / "blank.jsonl", [{"prompt": " "}])
    with pytest.raises(DataError, match=r"^data\.eval\.blank: no prompts left after filtering \(read 1: 1 empty"):
        prepare(tmp_path, {"path": "t.jsonl"}, {"e": {"path": "e.jsonl"}, "blank": {"path": "blank.jsonl"}})


def test_unloadable_dataset_name_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # both read the variables at import time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = error(tmp_path, {"path": "nobody/no-such-dataset", "split": "test"})
    assert message.startswith("data.train.path: could not load dataset 'nobody/no-such-dataset' split 'test' (")
