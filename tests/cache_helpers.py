"""Helpers shared by the cache and stamp tests."""

from __future__ import annotations

import os
from pathlib import Path


def rewrite(path: Path, data: bytes) -> None:
    """Overwrite a file in place, making sure its mtime moves (as it does between real edits) even on file systems
    with coarse timestamps: the digest memo is keyed on (inode, size, mtime)."""
    before = path.stat().st_mtime_ns if path.exists() else None
    path.write_bytes(data)
    if before is not None and path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def touch(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rewrite(path, data.encode() if isinstance(data, str) else data)
    return path
