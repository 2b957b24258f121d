"""The ordered fold: merge chunk states left to right in chunk order, whatever order they arrive in.

:func:`reduce_chunks` runs a kernel over a source's chunks with a runner
and folds the results with :class:`OrderedFold`; a
:class:`~stream_relu.engine.progress.Progress` and a checkpoint observer
watch it.  Because the additions are always ``((s_0 + s_1) + s_2) + ...``,
the merged state is bitwise the same for any number of workers, threads,
completion order, lost worker, or resume from a checkpoint.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from ..checkpoint import CheckpointMismatchError, ChunkRecord
from ..errors import DataError
from .tasks import ChunkOptions, ChunkResult, run_chunk

__all__ = ["OrderedFold", "ChunkReport", "Reduction", "reduce_chunks", "PREFIX_WRITE_INTERVAL"]

PREFIX_WRITE_INTERVAL = 2.0  # seconds between persisted prefixes of a pass


class OrderedFold:
    """Left fold of states over chunk indices ``start, start+1, ...``, buffering early arrivals.

    Parameters
    ----------
    start : int
        The first chunk index not yet in ``total``.
    total : MomentState or 0
        The fold of chunks ``[0, start)``.
    """

    def __init__(self, start=0, total=0):
        self.next = start
        self.total = total
        self._pending = {}

    def push(self, index, state, on_fold=None):
        """Buffer chunk ``index``'s state and fold every state now in order.

        ``on_fold(j)`` is called after chunk ``j`` is added (then ``total``
        is the fold of ``[0, j]`` and ``next == j + 1``).  ``None`` states
        (unreadable chunks) are skipped.
        """
        self._pending[index] = state
        while self.next in self._pending:
            state = self._pending.pop(self.next)
            self.total = self.total + (state if state is not None else 0)
            self.next += 1
            if on_fold is not None:
                on_fold(self.next - 1)

    @property
    def waiting(self):
        """Number of states that arrived ahead of the fold."""
        return len(self._pending)


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

    def note(self, record, error=None):
        """Record one chunk's :class:`~stream_relu.checkpoint.ChunkRecord` (and read error)."""
        if error is not None:
            self.errors[record.index] = error
        if record.nonfinite:
            self.nonfinite[record.index] = record.nonfinite
        if record.fingerprint is not None:
            self.fingerprints.setdefault(record.fingerprint, []).append(record.index)


@dataclass(frozen=True)
class Reduction:
    """The merged state of a pass and what was noticed on the way."""

    state: object
    report: ChunkReport


class _Checkpointing:
    """Observer persisting a pass: every chunk as it completes, and the folded prefix of full chunks.

    The prefix is written when the fold reaches the last full chunk and
    otherwise at most every :data:`PREFIX_WRITE_INTERVAL` seconds; a
    trailing partial chunk never enters it (it may grow by appended rows).
    """

    def __init__(self, checkpoint, source):
        self.checkpoint = checkpoint
        n = source.n_chunks
        self.n_full = n if source.chunk_len(n - 1) == source.chunk_rows else n - 1
        self.records = []

    def resume(self, source, kernel, plan, options):
        n = source.n_chunks
        resume = self.checkpoint.load(lambda i: source.chunk_len(i) if i < n else None)
        if resume.records and options.fingerprint:
            _verify_unchanged(source, resume.records, kernel, plan, options)
        self.records = list(resume.records)
        return resume

    def completed(self, record, state):
        if state is not None:
            self.checkpoint.save_chunk(record, state)

    def folded(self, fold, record):
        self.records.append(record)
        k = fold.next  # chunks [0, k) are in fold.total
        due = time.monotonic() - self.checkpoint.last_prefix_write > PREFIX_WRITE_INTERVAL
        if k == self.n_full or (k < self.n_full and due):
            self.checkpoint.save_prefix(fold.total, k, self.records)


def _verify_unchanged(source, records, kernel, plan, options):
    """Recompute the first and last chunks of a persisted prefix and compare their fingerprints."""
    for r in {records[0].index: records[0], records[-1].index: records[-1]}.values():
        if r.fingerprint is None:
            continue
        if run_chunk(source, r.index, kernel, plan, options).fingerprint != r.fingerprint:
            raise CheckpointMismatchError(
                f"{source.describe(r.index)} changed since the state was written; "
                "use a new --state folder for a changed store"
            )


def _listing(indices, limit=8):
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def _record(source, index, result):
    return ChunkRecord(index, source.chunk_len(index), result.nonfinite_rows, result.fingerprint)


def reduce_chunks(source, kernel, plan, runner, *, options=ChunkOptions(), progress=None, checkpoint=None):
    """Merge ``kernel``'s states over every chunk of ``source``, left to right in chunk order.

    Parameters
    ----------
    source : StoreSource, ArraySource, DaskArraySource or SubsetSource
    kernel : ChunkKernel
        ``kernel(x, y, plan) -> MomentState``, e.g. :data:`stream_relu.moments.GAUSS`.
    plan : object
        The kernel's inputs (None for the gauss kernel).
    runner : SerialRunner, DaskRunner or DistributedRunner
    options : ChunkOptions
    progress : Progress, optional
    checkpoint : PassCheckpoint, optional
        Persists every completed chunk and the folded prefix of full chunks;
        what it holds is reused, not recomputed.

    Returns
    -------
    Reduction
        The state over the finite rows of the readable chunks and a
        :class:`ChunkReport` (non-finite rows, fingerprints, read errors with
        ``options.collect_errors``, chunks reused from the checkpoint).

    Raises
    ------
    DataError
        With ``options.nonfinite == "error"``, when rows hold NaN or
        infinity: the message names the chunks and counts the rows.
    """
    report = ChunkReport()
    saver = _Checkpointing(checkpoint, source) if checkpoint is not None else None
    resume = saver.resume(source, kernel, plan, options) if saver else None
    fold = OrderedFold(resume.k, resume.prefix) if resume else OrderedFold()
    done = resume.done if resume else {}
    for r in resume.records if resume else ():
        report.note(r)
    report.reused = fold.next + len(done)
    if progress is not None:
        progress.skip(report.reused, sum(source.chunk_len(i) for i in range(fold.next)) + sum(r.rows for _, r in done.values()))
    reused = ((i, ChunkResult(st, r.nonfinite, r.fingerprint)) for i, (st, r) in sorted(done.items()))
    todo = [i for i in range(fold.next, source.n_chunks) if i not in done]
    records = {}
    for i, result in itertools.chain(reused, runner.imap(source, kernel, plan, options, indices=todo)):
        if result.exception is not None and not (options.collect_errors and isinstance(result.exception, DataError)):
            raise result.exception  # storage errors stop every pass: no chunk can be trusted to read
        records[i] = _record(source, i, result)
        report.note(records[i], result.error)
        if i not in done:
            if saver:
                saver.completed(records[i], result.state)
            if progress is not None:
                progress.update(source.chunk_len(i))
        fold.push(i, result.state, on_fold=(lambda j: saver.folded(fold, records.pop(j))) if saver else None)
    if fold.waiting or fold.next != source.n_chunks:
        raise RuntimeError(f"reduction incomplete: merged {fold.next} of {source.n_chunks} chunks")
    _raise_nonfinite(source, report, options)
    return Reduction(fold.total, report)


def _raise_nonfinite(source, report, options):
    if report.nonfinite and options.nonfinite == "error":
        chunks = sorted(report.nonfinite)
        raise DataError(
            f"{report.nonfinite_rows} rows hold NaN or infinity in x or y, in chunk(s) {_listing(chunks)} "
            f"(first: {source.describe(chunks[0])}); rerun with --nonfinite skip to drop those rows"
        )
