"""Progress bars for long loops (tqdm on stderr; quiet when ALIGNLOOP_PROGRESS=0)."""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    disabled = os.environ.get("ALIGNLOOP_PROGRESS", "1") == "0"
    return tqdm(items, desc=description, total=total, disable=disabled, leave=False, dynamic_ncols=True)
