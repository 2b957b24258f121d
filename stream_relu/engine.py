"""Orchestration: run a chunk kernel over every chunk and fold the states in a fixed order.

A *source* says how many chunks there are and how to read chunk ``i``; a
*runner* evaluates ``kernel(chunk i, plan)`` somewhere (in this process, on
the active dask scheduler, or on a ``dask.distributed`` cluster) and yields
``(i, state)`` pairs in any order; :func:`reduce_chunks` folds them left to
right in chunk order, so the merged state is bitwise the same whatever the
number of workers, threads, or completion order.

Workers open the zarr store themselves: the graph carries a
:class:`~stream_relu.data.StoreSpec` and the chunk index, never data.
Each kernel call runs with BLAS pinned to one thread (threadpoolctl), which
makes its result independent of the BLAS thread count.

This module imports dask and distributed lazily (only the runner that needs
them).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from threadpoolctl import threadpool_limits

from .data import StoreSpec
from .errors import DataError
from .moments import gauss_chunk, subspace_chunk
from .refine import refine_chunk

__all__ = [
    "KERNELS",
    "StoreSource",
    "ArraySource",
    "DaskArraySource",
    "SerialRunner",
    "DaskRunner",
    "DistributedRunner",
    "Progress",
    "reduce_chunks",
    "run_chunk",
]

log = logging.getLogger("stream_relu")


KERNELS = {
    "gauss": lambda x, y, plan: gauss_chunk(x, y),
    "subspace": subspace_chunk,
    "refine": refine_chunk,
}


@lru_cache(maxsize=8)
def _open_cached(spec, n_samples):
    # n_samples in the key: a store that grew since is opened afresh.
    return spec.open()


class _FixedRowChunks:
    """Chunks of ``chunk_rows`` rows each, the last one possibly shorter."""

    @property
    def n_chunks(self):
        return -(-self.n_samples // self.chunk_rows)

    def chunk_len(self, index):
        return min(self.chunk_rows, self.n_samples - index * self.chunk_rows)

    def describe(self, index):
        start = index * self.chunk_rows
        return f"chunk {index} (rows {start}-{start + self.chunk_len(index) - 1})"


@dataclass(frozen=True)
class StoreSource(_FixedRowChunks):
    """Chunks of a zarr sample store (the work unit is x's row chunk)."""

    spec: StoreSpec
    n_samples: int
    n_features: int
    chunk_rows: int

    @classmethod
    def from_store(cls, store):
        return cls(store.spec, store.n_samples, store.n_features, store.chunk_rows)

    def read(self, index):
        return _open_cached(self.spec, self.n_samples).read_chunk(index)

    def describe(self, index):
        return f"{super().describe(index)} of {self.spec.url}"


@dataclass(frozen=True)
class ArraySource(_FixedRowChunks):
    """Row blocks of in-memory arrays."""

    x: np.ndarray
    y: np.ndarray
    chunk_rows: int = 65536

    @property
    def n_samples(self):
        return self.x.shape[0]

    @property
    def n_features(self):
        return self.x.shape[1]

    def read(self, index):
        sl = slice(index * self.chunk_rows, (index + 1) * self.chunk_rows)
        return self.x[sl], self.y[sl]


class DaskArraySource:
    """Row blocks of dask arrays (x rechunked to whole rows, y aligned to x)."""

    def __init__(self, x, y):
        x = x.rechunk({1: -1})
        y = y.rechunk((x.chunks[0],))
        self.x, self.y = x, y
        self.bounds = np.concatenate([[0], np.cumsum(x.chunks[0])])

    @property
    def n_samples(self):
        return int(self.x.shape[0])

    @property
    def n_features(self):
        return int(self.x.shape[1])

    @property
    def n_chunks(self):
        return len(self.x.chunks[0])

    def chunk_len(self, index):
        return int(self.bounds[index + 1] - self.bounds[index])

    def read(self, index):
        return np.asarray(self.x.blocks[index, 0].compute()), np.asarray(self.y.blocks[index].compute())

    def delayed_blocks(self):
        return list(zip(self.x.to_delayed()[:, 0], self.y.to_delayed()))

    def describe(self, index):
        return f"block {index} (rows {self.bounds[index]}-{self.bounds[index + 1] - 1})"


def run_chunk(source, index, kernel, plan):
    """Evaluate ``kernel`` on chunk ``index`` of ``source`` with BLAS pinned to one thread."""
    x, y = source.read(index)
    return _apply(kernel, x, y, plan)


def _apply(kernel, x, y, plan):
    with threadpool_limits(limits=1, user_api="blas"):
        return KERNELS[kernel](x, y, plan)


class Progress:
    """Chunks done / total, rows per second and time left, on stderr.

    On a terminal the line is rewritten in place; otherwise a log line is
    emitted at most every ``interval`` seconds (and at the end).
    """

    def __init__(self, label, total_chunks, total_rows, *, enabled=True, interval=5.0, stream=None):
        self.label = label
        self.total_chunks = total_chunks
        self.total_rows = total_rows
        self.enabled = enabled
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done_chunks = 0
        self.done_rows = 0
        self.start = time.perf_counter()
        self.last = -math.inf

    def update(self, rows):
        self.done_chunks += 1
        self.done_rows += rows
        now = time.perf_counter()
        final = self.done_chunks == self.total_chunks
        if not self.enabled or (not final and now - self.last < (0.2 if self.tty else self.interval)):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done_rows / elapsed
        left = (self.total_rows - self.done_rows) / rate if rate > 0 else float("inf")
        line = (
            f"{self.label}: {self.done_chunks}/{self.total_chunks} chunks, "
            f"{rate:,.0f} rows/s, {elapsed:.1f} s elapsed, {left:.1f} s left"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
            self.stream.flush()
        else:
            log.info(line)


class SerialRunner:
    """Runs every chunk in this process, in order."""

    name = "serial"

    def imap(self, source, kernel, plan):
        for i in range(source.n_chunks):
            yield i, run_chunk(source, i, kernel, plan)


class DaskRunner:
    """Runs dask-array blocks on the active dask scheduler, a bounded window at a time."""

    name = "dask"

    def __init__(self, window=None):
        self.window = window or 4 * (os.cpu_count() or 1)

    def imap(self, source, kernel, plan):
        import dask

        blocks = source.delayed_blocks()
        task = dask.delayed(_apply, pure=True)
        for lo in range(0, len(blocks), self.window):
            batch = [task(kernel, xb, yb, plan) for xb, yb in blocks[lo : lo + self.window]]
            for j, state in enumerate(dask.compute(*batch)):
                yield lo + j, state


class DistributedRunner:
    """Runs chunks on a ``dask.distributed`` cluster with a bounded window of tasks.

    The plan is scattered once (broadcast) so tasks carry only the store
    spec and the chunk index.  Task keys are deterministic, so a task lost
    with a worker is recomputed and can never be counted twice.
    """

    name = "distributed"

    def __init__(self, client, window=None):
        self.client = client
        if window is None:
            n_threads = sum(client.nthreads().values()) or 1
            window = 4 * n_threads
        self.window = window

    def imap(self, source, kernel, plan):
        from distributed import as_completed

        if isinstance(source, DaskArraySource):
            yield from self._imap_dask(source, kernel, plan)
            return
        from dask.base import tokenize

        plan_f = self.client.scatter(plan, broadcast=True, hash=False) if plan is not None else None
        # Keys name the source, the kernel and its plan: a recomputed task
        # (lost worker) keeps its key, and concurrent fits never share one.
        prefix = f"stream-relu-{kernel}-{getattr(plan, 'key', 'none')}-{tokenize(source)}"
        n = source.n_chunks

        def submit(i):
            return self.client.submit(run_chunk, source, i, kernel, plan_f, key=f"{prefix}-{i}", pure=False)

        pending = as_completed()
        futures = {}
        nxt = 0
        while nxt < min(n, self.window):
            f = submit(nxt)
            futures[f.key] = nxt
            pending.add(f)
            nxt += 1
        for fut in pending:
            i = futures.pop(fut.key)
            state = fut.result()
            fut.release()
            if nxt < n:
                f = submit(nxt)
                futures[f.key] = nxt
                pending.add(f)
                nxt += 1
            yield i, state

    def _imap_dask(self, source, kernel, plan):
        import dask

        blocks = source.delayed_blocks()
        task = dask.delayed(_apply, pure=True)
        for lo in range(0, len(blocks), self.window):
            batch = [task(kernel, xb, yb, plan) for xb, yb in blocks[lo : lo + self.window]]
            for j, state in enumerate(self.client.gather(self.client.compute(batch))):
                yield lo + j, state


def reduce_chunks(source, kernel, plan, runner, *, progress=None):
    """Merge ``kernel``'s states over every chunk of ``source``, left to right in chunk order.

    Parameters
    ----------
    source : StoreSource, ArraySource or DaskArraySource
    kernel : {"gauss", "subspace", "refine"}
    plan : object
        The kernel's inputs (None for ``"gauss"``).
    runner : SerialRunner, DaskRunner or DistributedRunner
    progress : Progress, optional

    Returns
    -------
    MomentState

    Raises
    ------
    DataError
        If a chunk's state is not finite (NaN or infinity in x or y), naming
        the chunk.
    """
    total = 0
    pending = {}
    nxt = 0
    for i, state in runner.imap(source, kernel, plan):
        if not state.is_finite():
            raise DataError(
                f"non-finite values (NaN or infinity) in x or y in {source.describe(i)}"
            )
        pending[i] = state
        if progress is not None:
            progress.update(state.count)
        while nxt in pending:
            total = total + pending.pop(nxt)
            nxt += 1
    if pending or nxt != source.n_chunks:
        raise RuntimeError(f"reduction incomplete: merged {nxt} of {source.n_chunks} chunks")
    return total
