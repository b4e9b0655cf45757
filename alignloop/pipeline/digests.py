"""Content digests of files, computed once per content.

A file is identified by (resolved path, inode, size, modification time), as DVC's state database does: while those
are unchanged, its sha256 is reused — from memory within a process, and across runs from a small JSON store
(`.alignloop/digests.json` in the project, set by `environment.configure`) for files of at least 1 MiB, so a
multi-GB policy or base model is read once, not on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

STORE_ENV = "ALIGNLOOP_DIGEST_STORE"
MIN_STORED_BYTES = 1 << 20  # small files are cheaper to hash than to look up
_CHUNK = 1 << 20

_memo: dict[tuple[str, int, int, int], str] = {}
_store: dict[str, list] | None = None  # resolved path -> [inode, size, mtime_ns, sha256]
_store_path: Path | None = None


def _load_store() -> dict[str, list]:
    global _store, _store_path
    path = Path(os.environ[STORE_ENV]) if os.environ.get(STORE_ENV) else None
    if _store is None or path != _store_path:
        _store_path, _store = path, {}
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                _store = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                _store = {}  # a damaged store only costs a re-hash
    return _store


def _save_store(store: dict[str, list]) -> None:
    if _store_path is None:
        return
    _store_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _store_path.with_name(f".{_store_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(store, sort_keys=True), encoding="utf-8")
    os.replace(tmp, _store_path)


def sha256_of(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's content, reused while its identity (path, inode, size, mtime) is unchanged."""
    resolved = str(Path(path).resolve())
    stat = os.stat(resolved)
    identity = (resolved, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if identity in _memo:
        return _memo[identity]
    stored = _load_store().get(resolved) if stat.st_size >= MIN_STORED_BYTES else None
    if stored is not None and tuple(stored[:3]) == identity[1:]:
        digest = stored[3]
    else:
        digest = sha256_of(Path(resolved))
        if stat.st_size >= MIN_STORED_BYTES and _store_path is not None:
            store = _load_store()
            store[resolved] = [stat.st_ino, stat.st_size, stat.st_mtime_ns, digest]
            _save_store(store)
    _memo[identity] = digest
    return digest
