"""Run a per-image task over a dataset on every core, with a progress bar counted in images.

Decoding and resizing photos is CPU-bound C code, so the data layer spreads it over worker processes
(``fork``: a worker inherits the task and its image list without pickling them; it never touches the
parent's CUDA or torch state, only PIL and numpy). ``processes=False`` runs the same task in threads of
this process instead: PIL releases the GIL while it decodes and resizes, but not while it parses headers
or wraps results, so threads scale less on many cores (``scripts/bench_scale.py`` measures both).

A task is a callable ``task(rows) -> result`` over a chunk (list) of row numbers; :func:`map_chunks`
yields ``(rows, result)`` as each chunk finishes, in completion order.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

MAX_CHUNK = 32
"""Most rows per task: small enough that progress, resumption checkpoints and load balance stay fine."""

_installed: Callable[[list[int]], object] | None = None


def _install(task: Callable[[list[int]], object]) -> None:
    """Worker initializer: keep the task (inherited through ``fork``, not pickled) for :func:`_run_installed`."""
    global _installed
    _installed = task


def _run_installed(rows: list[int]) -> object:
    """Run the worker's installed task on one chunk."""
    if _installed is None:
        raise RuntimeError("a data-layer worker process started without its task")
    return _installed(rows)


def chunk_rows(rows: Sequence[int], workers: int) -> list[list[int]]:
    """Split rows into consecutive chunks: about 8 per worker, at most :data:`MAX_CHUNK` rows each.

    Examples
    --------
    >>> chunk_rows(range(10), 1)
    [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    """
    size = max(1, min(MAX_CHUNK, math.ceil(len(rows) / (8 * max(1, workers)))))
    return [list(rows[start : start + size]) for start in range(0, len(rows), size)]


def map_chunks(task: Callable[[list[int]], T], rows: Sequence[int], workers: int, desc: str,
               processes: bool = True) -> Iterator[tuple[list[int], T]]:
    """Run ``task`` over chunks of ``rows`` on ``workers`` workers; yield ``(chunk, result)`` as each finishes.

    Parameters
    ----------
    task : callable
        ``task(chunk) -> result``; it runs in the workers, so it must do its own I/O (e.g. write its
        images into a file) and return something small.
    rows : sequence of int
        Row numbers to process.
    workers : int
        Worker count; 1 runs every chunk in this process, in order (no pool).
    desc : str
        Label of the progress bar (counted in rows: images).
    processes : bool
        Worker processes (``fork``) when True, threads of this process when False.

    Yields
    ------
    (list of int, object)
        A chunk and its result. The first exception a task raises is re-raised here, after the pool
        has cancelled the chunks not yet started and waited for the running ones.
    """
    chunks = chunk_rows(rows, workers)
    workers = min(workers, len(chunks))
    with tqdm(total=len(rows), desc=desc, unit="img", disable=None) as progress:
        if workers <= 1:
            for chunk in chunks:
                result = task(chunk)
                progress.update(len(chunk))
                yield chunk, result
            return
        pool: Executor
        if processes:
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_install, initargs=(task,))
            call: Callable[[list[int]], object] = _run_installed
        else:
            pool, call = ThreadPoolExecutor(workers), task
        try:
            futures = {pool.submit(call, chunk): chunk for chunk in chunks}
            for future in as_completed(futures):
                chunk = futures[future]
                result = future.result()
                progress.update(len(chunk))
                yield chunk, result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
