"""Prompt sets from real data (`data.train`, `data.eval`, `data.sft`) in the shape of the testbed's data/ files.

Everything is read with `datasets.load_dataset`; prompts (and SFT responses) come out of plain text or chat-message
columns, get content-hash ids, and pass through filters that count every row they drop: empty rows, duplicates,
evaluation prompts in training data (leakage) and prompts too long for the model.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alignloop.config import ConfigError
from alignloop.config.data import DataConfig, PromptSetConfig

log = logging.getLogger(__name__)

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
"""File suffix -> datasets' packaged builder."""
_SPLIT_NAME = re.compile(r"\w+(\.\w+)*")  # what datasets 5 accepts as a data_files key
Row = dict[str, Any]
Stats = dict[str, int]


class DataError(ConfigError):
    """Bad prompt data, phrased as one line that names the params key (CLI exits 2)."""


def prompt_id(prompt: str) -> str:
    """A stable id from the prompt's content, so the same prompt has the same id in every file format and run."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def _first_line(exc: BaseException) -> str:
    """datasets' errors span lines (tracebacks, hints); a DataError must stay one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _source(spec: PromptSetConfig, key: str, root: Path) -> tuple[str | None, str]:
    """(builder, file) for a local file, or (None, name) for a dataset name or local dataset directory."""
    path = Path(spec.path).expanduser()
    path = path if path.is_absolute() else root / path
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix not in BUILDERS:
            raise DataError(f"{key}.path: cannot read {suffix or 'suffix-less'} file {path}; supported suffixes are: "
                            f"{', '.join(BUILDERS)}")
        return BUILDERS[suffix], str(path)
    if path.is_dir():
        return None, str(path)  # a local dataset folder: datasets infers its files
    if suffix in BUILDERS or (os.sep in spec.path and spec.path.startswith((".", "~", os.sep))):
        raise DataError(f"{key}.path: no such file {path}")
    return None, spec.path


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence datasets' progress bars and warnings while reading, then restore the caller's settings."""
    import datasets

    bars, level = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _load(spec: PromptSetConfig, key: str, builder: str | None, where: str, cache_dir: str | None) -> Any:
    """One `load_dataset` call; every failure becomes a one-line DataError naming `<key>.path`."""
    import datasets

    try:
        if builder is None:
            return datasets.load_dataset(where, split=spec.split, cache_dir=cache_dir,
                                         keep_in_memory=cache_dir is not None)
        # The data_files key must be a bare split name; `train[:100]` still slices through `split`.
        base = spec.split.split("[", 1)[0]
        if not _SPLIT_NAME.fullmatch(base):
            raise DataError(f"{key}.split: a local file's split must be a plain name like train, got {spec.split!r}")
        return datasets.load_dataset(builder, data_files={base: where}, split=spec.split, cache_dir=cache_dir,
                                     keep_in_memory=True)
    except DataError:
        raise
    except Exception as exc:  # datasets raises ConnectionError, FileNotFoundError, ValueError, ArrowInvalid, ...
        what = (f"could not load dataset {where!r} split {spec.split!r}" if builder is None
                else f"could not read {where} as {builder} split {spec.split!r}")
        raise DataError(f"{key}.path: {what} ({_first_line(exc)})") from exc


def read_columns(spec: PromptSetConfig, key: str, root: Path, wanted: dict[str, str]) -> dict[str, list[Any]]:
    """The first `max_rows` values of each wanted column ({params field: column name}); CSV cells holding chat
    messages are decoded.

    Local data is built in a throwaway cache (removed on return), so a rewritten file is never answered from an
    old Arrow cache and nothing lands in the user's home; dataset names use datasets' own cache (downloaded once).
    """
    builder, where = _source(spec, key, root)
    local = builder is not None or Path(where).is_dir()
    with _quiet_datasets(), tempfile.TemporaryDirectory(prefix="alignloop-data-") as tmp:
        dataset = _load(spec, key, builder, where, tmp if local else None)
        for field, column in wanted.items():
            if column not in dataset.column_names:
                raise DataError(f"{key}.{field}: no column {column!r} in {where}; columns are: "
                                f"{', '.join(dataset.column_names)}")
        count = len(dataset) if spec.max_rows is None else min(spec.max_rows, len(dataset))
        table = dataset.select_columns(sorted(set(wanted.values())))[:count]
    columns = {field: list(table[column]) for field, column in wanted.items()}
    if builder == "csv":
        columns = {field: [_decode_csv_cell(value) for value in values] for field, values in columns.items()}
    return columns


def _decode_csv_cell(value: Any) -> Any:
    """CSV has no list type: a messages cell arrives as text (JSON, or the Python repr pandas writes)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        for parse in (json.loads, ast.literal_eval):  # literal_eval evaluates literals only, never code
            try:
                decoded = parse(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(decoded, list) and decoded and all(isinstance(m, dict) for m in decoded):
                return decoded
    return value


def _text(value: Any) -> str | None:
    """Text that says something, else None (the row is counted as empty)."""
    return value if isinstance(value, str) and value.strip() else None


def _first_user(messages: list[Any]) -> int | None:
    return next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), None)


def extract_prompt(value: Any) -> str | None:
    """The prompt: the text itself, or the content of the first user message of a chat."""
    if isinstance(value, list):
        index = _first_user(value)
        return None if index is None else _text(value[index].get("content"))
    return _text(value)


def response_from_column(value: Any) -> str | None:
    """A response column's value: the text, or the last assistant message (UltraFeedback's `chosen`)."""
    if isinstance(value, list):
        value = next((m.get("content") for m in reversed(value) if isinstance(m, dict)
                      and m.get("role") == "assistant"), None)
    return _text(value)


def response_after_prompt(messages: Any) -> str | None:
    """The assistant's reply to the prompt: the first assistant message after the first user message."""
    if not isinstance(messages, list) or (start := _first_user(messages)) is None:
        return None
    return _text(next((m.get("content") for m in messages[start + 1:] if isinstance(m, dict)
                       and m.get("role") == "assistant"), None))


def _read(spec: PromptSetConfig, key: str, root: Path, with_responses: bool) -> tuple[list[Row], int]:
    """Non-empty rows in file order and the number of rows read (the difference is `empty`)."""
    prompt_field = "messages_column" if spec.messages_column else "prompt_column"
    wanted = {prompt_field: spec.messages_column or spec.prompt_column}
    if with_responses and spec.response_column:
        wanted["response_column"] = spec.response_column
    columns = read_columns(spec, key, root, wanted)
    prompts = columns[prompt_field]
    if (with_responses and not spec.response_column and not spec.messages_column
            and not any(isinstance(value, list) for value in prompts)):
        raise DataError(f"{key}.response_column: SFT demonstrations need a response; set response_column or "
                        "messages_column")
    rows: list[Row] = []
    for index, value in enumerate(prompts):
        row: Row = {"prompt": extract_prompt(value), "source_index": index}
        if with_responses:
            row["response"] = (response_from_column(columns["response_column"][index]) if spec.response_column
                               else response_after_prompt(value))
        if row["prompt"] is not None and row.get("response", "") is not None:
            rows.append(row)
    return rows, len(prompts)


def _filter(rows: list[Row], read: int, identity: Callable[[Row], Any], leaked: set[str],
            too_long: Callable[[str], bool]) -> tuple[list[Row], Stats]:
    """Keep rows in order; each dropped row counts once, under the first reason that applies."""
    stats = {"read": read, "empty": read - len(rows), "duplicates": 0, "in_eval": 0, "too_long": 0, "kept": 0}
    seen: set[Any] = set()
    kept: list[Row] = []
    for row in rows:
        ident = identity(row)
        reason = ("duplicates" if ident in seen else "in_eval" if row["prompt"] in leaked
                  else "too_long" if too_long(row["prompt"]) else None)
        seen.add(ident)
        if reason:
            stats[reason] += 1
        else:
            kept.append(row)
    stats["kept"] = len(kept)
    return kept, stats


def _report(set_key: str, stats: Stats) -> None:
    """Log the set's counts; an emptied set is an error that shows where its rows went."""
    counts = (f"read {stats['read']}: {stats['empty']} empty, {stats['duplicates']} duplicates, "
              f"{stats['in_eval']} in evaluation sets, {stats['too_long']} too long")
    if not stats["kept"]:
        raise DataError(f"{set_key}: no prompts left after filtering ({counts})")
    log.info("%s: kept %d prompts (%s)", set_key, stats["kept"], counts)


def _with_id(row: Row, **extra: Any) -> Row:
    return {"prompt_id": prompt_id(row["prompt"]), **row, **extra}


def prepare_prompt_sets(data: DataConfig, root: Path, count_tokens: Callable[[str], int],
                        max_train_prompt_tokens: int, max_eval_prompt_tokens: int
                        ) -> tuple[dict[str, list[dict]], dict[str, dict[str, int]]]:
    """Files for data/: {"train_prompts": rows, "eval/<name>": rows, ["sft": rows]} and stats per set.

    Evaluation sets are read first: their kept prompts are removed from the training pool and the demonstrations.
    """
    if data.train is None:
        raise DataError("data.train: not set (the testbed generates its own prompts)")
    length = functools.cache(count_tokens)  # SFT repeats prompts; the chat template is not free
    files: dict[str, list[Row]] = {}
    stats: dict[str, Stats] = {}
    eval_prompts: set[str] = set()
    for name, spec in data.eval.items():
        rows, read = _read(spec, f"data.eval.{name}", root, with_responses=False)
        kept, stats[f"eval/{name}"] = _filter(rows, read, lambda row: row["prompt"], set(),
                                              lambda prompt: length(prompt) > max_eval_prompt_tokens)
        _report(f"data.eval.{name}", stats[f"eval/{name}"])
        files[f"eval/{name}"] = [_with_id(row, split=name) for row in kept]
        eval_prompts.update(row["prompt"] for row in kept)

    train_too_long = lambda prompt: length(prompt) > max_train_prompt_tokens  # noqa: E731
    rows, read = _read(data.train, "data.train", root, with_responses=False)
    kept, stats["train"] = _filter(rows, read, lambda row: row["prompt"], eval_prompts, train_too_long)
    _report("data.train", stats["train"])
    out = {"train_prompts": [_with_id(row, pool_index=index) for index, row in enumerate(kept)], **files}
    stats = {"train": stats.pop("train"), **stats}

    if data.sft is not None:
        rows, read = _read(data.sft, "data.sft", root, with_responses=True)
        kept, stats["sft"] = _filter(rows, read, lambda row: (row["prompt"], row["response"]), eval_prompts,
                                     train_too_long)
        _report("data.sft", stats["sft"])
        out["sft"] = [_with_id(row) for row in kept]
    return out, stats
