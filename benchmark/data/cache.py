"""Cache location, content hashing and atomic publication of cache entries."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "DOR_IQA_CACHE"


def cache_root() -> Path:
    """Return the root folder of every cache the data layer writes.

    Returns
    -------
    Path
        ``$DOR_IQA_CACHE`` when that environment variable is set, else ``~/.cache/dor-iqa``.
        The folder is not created here; builders create what they need.
    """
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "dor-iqa"


def stable_hash(payload: object) -> str:
    """Return the SHA-256 hex digest of a JSON-serialisable payload (keys sorted)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder that is renamed to ``final`` when the block succeeds.

    A block that raises (or a process that is killed) leaves ``final`` untouched; only a
    ``.tmp-*`` sibling can remain, which a later build ignores. When another process
    published ``final`` first, its copy is kept and ours is discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield temp
        try:
            os.rename(temp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path that replaces ``final`` when the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".tmp-{final.stem}-", suffix=final.suffix, dir=final.parent)
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
