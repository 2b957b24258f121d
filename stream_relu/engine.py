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

import hashlib
import itertools
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from threadpoolctl import threadpool_limits

from .data import StoreSpec
from .errors import DataError
from .moments import digest, gauss_chunk, joint_chunk, subspace_chunk
from .refine import refine_chunk

__all__ = [
    "KERNELS",
    "StoreSource",
    "ArraySource",
    "DaskArraySource",
    "SubsetSource",
    "SerialRunner",
    "DaskRunner",
    "DistributedRunner",
    "Progress",
    "reduce_chunks",
    "run_chunk",
    "ChunkOptions",
    "ChunkResult",
    "ChunkReport",
]

log = logging.getLogger("stream_relu")


KERNELS = {
    "gauss": gauss_chunk,
    "subspace": subspace_chunk,
    "joint": joint_chunk,
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



@dataclass(frozen=True)
class SubsetSource:
    """Some chunks of another source (a pilot sample), renumbered ``0 .. k-1`` in the given order."""

    base: object
    indices: tuple

    @property
    def n_chunks(self):
        return len(self.indices)

    @property
    def n_features(self):
        return self.base.n_features

    @property
    def n_samples(self):
        return sum(self.base.chunk_len(i) for i in self.indices)

    @property
    def chunk_rows(self):
        return self.base.chunk_rows

    def chunk_len(self, index):
        return self.base.chunk_len(self.indices[index])

    def read(self, index):
        return self.base.read(self.indices[index])

    def describe(self, index):
        return self.base.describe(self.indices[index])

NONFINITE_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class ChunkOptions:
    """How a chunk task treats its rows (small: travels with every task).

    Attributes
    ----------
    nonfinite : {"error", "skip"}
        Rows holding NaN or infinity are always left out of the kernel and
        counted; with ``"error"`` the reduction then fails naming the
        chunks, with ``"skip"`` it reports how many rows were dropped.
    fingerprint : bool
        Digest each chunk's bytes (to find duplicated chunks).
    collect_errors : bool
        Return a chunk's read error instead of raising it (``check``
        reports every bad chunk).
    """

    nonfinite: str = "error"
    fingerprint: bool = False
    collect_errors: bool = False


@dataclass(frozen=True)
class ChunkResult:
    """What one chunk task returns: the state and what was noticed on the way."""

    state: object
    nonfinite_rows: int = 0
    fingerprint: str | None = None
    error: str | None = None


# Test-only: seconds every chunk task sleeps, so that tests can disturb a run
# (kill a worker, kill the driver) reliably while it is in flight.
TEST_DELAY_ENV = "STREAM_RELU_TEST_CHUNK_DELAY"


def run_chunk(source, index, kernel, plan, options=ChunkOptions()):
    """Evaluate ``kernel`` on chunk ``index`` of ``source`` with BLAS pinned to one thread."""
    delay = float(os.environ.get(TEST_DELAY_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay)
    try:
        x, y = source.read(index)
    except DataError as exc:
        if options.collect_errors:
            return ChunkResult(state=None, error=str(exc))
        raise
    return _apply(kernel, x, y, plan, options)


def fingerprint(state):
    """Digest of a chunk's state: equal for chunks holding the same rows (duplicates, changed-store checks).

    The sums depend on every value of the chunk, so any change to the rows
    changes them; hashing them costs nothing next to hashing the bytes.
    """
    arrays = [np.array(state.count, dtype=np.float64)] + [state.sums[k] for k in sorted(state.sums)]
    return digest(*arrays)


def _finite_state(state):
    return all(np.isfinite(v).all() for v in state.sums.values())


def _apply(kernel, x, y, plan, options=ChunkOptions()):
    x = np.asarray(x)
    y = np.asarray(y)
    n_bad = 0
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(invalid="ignore", over="ignore"):
        state = KERNELS[kernel](x, y, plan)
        # A NaN or infinity in any row reaches the sums; only then are the rows
        # checked one by one (and the kernel run again without the bad ones).
        if not _finite_state(state):
            good = np.isfinite(y) & np.isfinite(x).all(axis=1)
            n_bad = int(good.size - np.count_nonzero(good))
            if n_bad:
                with np.errstate(invalid="ignore", over="ignore"):
                    state = KERNELS[kernel](x[good], y[good], plan)
    digest_ = fingerprint(state) if options.fingerprint else None
    return ChunkResult(state=state, nonfinite_rows=n_bad, fingerprint=digest_)


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

    def skip(self, chunks, rows):
        """Count chunks reused from a checkpoint as done (rates cover new work only)."""
        self.done_chunks += chunks
        self.total_rows -= rows
        if chunks:
            log.info("%s: reusing %d of %d chunks from the state folder", self.label, chunks, self.total_chunks)

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

    def imap(self, source, kernel, plan, options=ChunkOptions(), indices=None):
        for i in range(source.n_chunks) if indices is None else indices:
            yield i, run_chunk(source, i, kernel, plan, options)


class DaskRunner:
    """Runs dask-array blocks on the active dask scheduler, a bounded window at a time."""

    name = "dask"

    def __init__(self, window=None):
        self.window = window or 4 * (os.cpu_count() or 1)

    def imap(self, source, kernel, plan, options=ChunkOptions(), indices=None):
        import dask

        blocks = source.delayed_blocks()
        order = list(range(len(blocks)) if indices is None else indices)
        task = dask.delayed(_apply, pure=True)
        for lo in range(0, len(order), self.window):
            batch = order[lo : lo + self.window]
            results = dask.compute(*[task(kernel, *blocks[i], plan, options) for i in batch])
            yield from zip(batch, results)


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
            # enough tasks in flight to hide the scheduler's round trip on small
            # chunks; bounded, so client and scheduler memory stay flat
            window = max(4 * n_threads, 32)
        self.window = window

    def imap(self, source, kernel, plan, options=ChunkOptions(), indices=None):
        from distributed import as_completed

        order = list(range(source.n_chunks) if indices is None else indices)
        if isinstance(source, DaskArraySource):
            yield from self._imap_dask(source, kernel, plan, options, order)
            return
        from dask.base import tokenize

        plan_f = self.client.scatter(plan, broadcast=True, hash=False) if plan is not None else None
        # Keys name the source, the kernel and its plan: a recomputed task
        # (lost worker) keeps its key, and concurrent fits never share one.
        prefix = f"stream-relu-{kernel}-{getattr(plan, 'key', 'none')}-{tokenize(source, options)}"
        def submit(i):
            return self.client.submit(
                run_chunk, source, i, kernel, plan_f, options, key=f"{prefix}-{i}", pure=False
            )

        pending = as_completed()
        futures = {}
        queue = iter(order)

        def submit_next():
            i = next(queue, None)
            if i is not None:
                f = submit(i)
                futures[f.key] = i
                pending.add(f)

        for _ in range(self.window):
            submit_next()
        for fut in pending:
            i = futures.pop(fut.key)
            result = fut.result()
            fut.release()
            submit_next()
            yield i, result

    def _imap_dask(self, source, kernel, plan, options, order):
        import dask

        blocks = source.delayed_blocks()
        task = dask.delayed(_apply, pure=True)
        for lo in range(0, len(order), self.window):
            batch = order[lo : lo + self.window]
            results = self.client.gather(self.client.compute([task(kernel, *blocks[i], plan, options) for i in batch]))
            yield from zip(batch, results)


@dataclass
class ChunkReport:
    """What a reduction noticed about the chunks, beyond their states."""

    nonfinite: dict = field(default_factory=dict)  # chunk index -> rows dropped
    fingerprints: dict = field(default_factory=dict)  # digest -> chunk indices
    errors: dict = field(default_factory=dict)  # chunk index -> read error
    reused: int = 0  # chunks taken from a checkpoint

    @property
    def nonfinite_rows(self):
        return sum(self.nonfinite.values())

    def duplicate_groups(self):
        """Lists of chunk indices whose bytes are identical."""
        return [sorted(v) for v in self.fingerprints.values() if len(v) > 1]


def _listing(indices, limit=8):
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


PREFIX_WRITE_INTERVAL = 2.0  # seconds between persisted prefixes of a pass


def _verify_unchanged(source, info, kernel, plan, options):
    """Recompute the first and last chunks of a persisted prefix and compare their fingerprints."""
    from .checkpoint import CheckpointMismatchError

    for c in {0: info[0], 1: info[-1]}.values():
        if c.get("fingerprint") is None:
            continue
        if run_chunk(source, c["index"], kernel, plan, options).fingerprint != c["fingerprint"]:
            raise CheckpointMismatchError(
                f"{source.describe(c['index'])} changed since the state was written; "
                "use a new --state folder for a changed store"
            )


def reduce_chunks(
    source, kernel, plan, runner, *, progress=None, options=ChunkOptions(), report=None, checkpoint=None
):
    """Merge ``kernel``'s states over every chunk of ``source``, left to right in chunk order.

    Parameters
    ----------
    source : StoreSource, ArraySource or DaskArraySource
    kernel : {"gauss", "subspace", "refine"}
    plan : object
        The kernel's inputs (None for ``"gauss"``).
    runner : SerialRunner, DaskRunner or DistributedRunner
    progress : Progress, optional
    options : ChunkOptions
    report : ChunkReport, optional
        Filled with the non-finite rows, fingerprints and (with
        ``options.collect_errors``) read errors per chunk, and ``reused``,
        the chunks taken from the checkpoint.
    checkpoint : PassCheckpoint, optional
        Persists every completed chunk and, every few seconds, the folded
        prefix of full chunks; what it holds is reused, not recomputed.

    Returns
    -------
    MomentState
        Over the finite rows of the readable chunks.

    Raises
    ------
    DataError
        With ``options.nonfinite == "error"``, when rows hold NaN or
        infinity: the message names the chunks and counts the rows.
    """
    report = ChunkReport() if report is None else report
    n = source.n_chunks
    total, nxt, info, done = 0, 0, [], {}
    if checkpoint is not None:
        total, nxt, info, done = checkpoint.load(lambda i: source.chunk_len(i) if i < n else None)
        if info and options.fingerprint:
            _verify_unchanged(source, info, kernel, plan, options)
        for c in info:
            _note(report, c["index"], c["nonfinite"], c["fingerprint"])
    report.reused = nxt + len(done)
    if progress is not None:
        progress.skip(report.reused, sum(source.chunk_len(i) for i in range(nxt)) + sum(m["rows"] for _, m in done.values()))
    n_full = None
    if checkpoint is not None:  # only stores checkpoint; their chunks are chunk_rows long but the last
        n_full = n if source.chunk_len(n - 1) == source.chunk_rows else n - 1
    reused = ((i, ChunkResult(st, m["nonfinite"], m["fingerprint"])) for i, (st, m) in sorted(done.items()))
    todo = [i for i in range(nxt, n) if i not in done]
    pending = {}
    for i, result in itertools.chain(reused, runner.imap(source, kernel, plan, options, indices=todo)):
        if result.error is not None:
            report.errors[i] = result.error
        _note(report, i, result.nonfinite_rows, result.fingerprint)
        if checkpoint is not None and i not in done and result.state is not None:
            checkpoint.save_chunk(i, result, source.chunk_len(i))
        pending[i] = result
        if progress is not None and i not in done:
            progress.update(source.chunk_len(i))
        while nxt in pending:
            r = pending.pop(nxt)
            if checkpoint is not None and nxt == n_full and nxt > 0:
                checkpoint.save_prefix(total, nxt, info)  # the fold of every full chunk
            total = total + (r.state if r.state is not None else 0)
            info.append({"index": nxt, "rows": source.chunk_len(nxt), "nonfinite": r.nonfinite_rows, "fingerprint": r.fingerprint})
            nxt += 1
            if checkpoint is not None and nxt <= n_full and time.monotonic() - checkpoint.last_prefix_write > PREFIX_WRITE_INTERVAL:
                checkpoint.save_prefix(total, nxt, info)
    if pending or nxt != n:
        raise RuntimeError(f"reduction incomplete: merged {nxt} of {n} chunks")
    if checkpoint is not None and n_full == n:
        checkpoint.save_prefix(total, n, info)
    if report.nonfinite and options.nonfinite == "error":
        chunks = sorted(report.nonfinite)
        raise DataError(
            f"{report.nonfinite_rows} rows hold NaN or infinity in x or y, in chunk(s) {_listing(chunks)} "
            f"(first: {source.describe(chunks[0])}); rerun with --nonfinite skip to drop those rows"
        )
    return total


def _note(report, index, nonfinite_rows, digest):
    if nonfinite_rows:
        report.nonfinite[index] = nonfinite_rows
    if digest is not None:
        report.fingerprints.setdefault(digest, []).append(index)
