"""``provenance.json``: how, when, where and from which commit a results folder was produced."""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
RESERVED_KEYS: frozenset[str] = frozenset({"command", "argv", "git_sha", "git_dirty", "date", "machine"})
_REPO_DIR = Path(__file__).resolve().parent
PACKAGES = ("dor-iqa-bench", "torch", "timm", "mlflow", "numpy", "scipy", "pandas", "statsmodels")
"""Packages whose versions a provenance record lists."""


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=_REPO_DIR, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        logger.debug("git %s failed: %s", " ".join(args), err)
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@functools.cache
def git_sha() -> str:
    """Commit of the suite's source tree (``git rev-parse HEAD``), asked once per process (every run of a grid
    carries it); ``"unknown"`` outside a git checkout."""
    return _git("rev-parse", "HEAD") or "unknown"


def _git_dirty() -> bool | None:
    """Whether tracked source differs from the commit; ``results/`` is left out (the suite writes there)."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return None if status is None else bool(status)


def machine_info() -> dict[str, Any]:
    """Platform, Python, CPU count, the versions of the suite's main packages and the GPU (when torch is loaded).

    torch is not imported here (the report's side of the suite never loads it): its version comes from the
    package metadata, the GPU's name only when the process already uses torch (``None`` without CUDA).
    """
    torch = sys.modules.get("torch")
    gpu = torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "packages": {name: _version(name) for name in PACKAGES},
        "gpu": gpu,
    }


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if callable(getattr(value, "tolist", None)):  # numpy / torch scalars and arrays
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"provenance field of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def write_provenance(out_dir: Path | str, command: Sequence[str] | str, **extra: Any) -> Path:
    """Write ``out_dir/provenance.json`` describing how the folder's results were produced.

    Parameters
    ----------
    out_dir : Path or str
        Results folder; created if missing.
    command : sequence of str or str
        The command line that produced the results (e.g. ``sys.argv``); a list is also stored
        verbatim as ``argv``.
    **extra
        Further JSON-serialisable fields, e.g. ``duration_s=12.3, n_runs=40`` (``Path`` and numpy
        scalars/arrays are converted). Must not reuse a reserved key (``command``, ``argv``,
        ``git_sha``, ``git_dirty``, ``date``, ``machine``).

    Returns
    -------
    Path
        Path of the written file.

    Raises
    ------
    ValueError
        When an extra field reuses a reserved key.
    TypeError
        When an extra field cannot be serialised to JSON.
    """
    clash = RESERVED_KEYS.intersection(extra)
    if clash:
        raise ValueError(
            f"provenance fields {sorted(clash)} are reserved; rename them (e.g. 'run_{min(clash)}')."
        )
    argv = None if isinstance(command, str) else [str(c) for c in command]
    record: dict[str, Any] = {
        "command": command if isinstance(command, str) else shlex.join(argv or []),
        "argv": argv,
        "git_sha": git_sha(),
        "git_dirty": _git_dirty(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **extra,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PROVENANCE_FILE
    path.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    logger.info("wrote %s", path)
    return path
