"""One chunk task: read chunk ``i`` of a source and apply a kernel to it.

What a task carries is small (a source, an index, a kernel object, a plan
scattered once, :class:`ChunkOptions`); what it returns is a
:class:`ChunkResult`.  BLAS is pinned to one thread inside the kernel
(threadpoolctl), so a chunk's state does not depend on the BLAS thread
count of the process that computed it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import DataError, StorageAccessError, StorageUnreachableError
from ..settings import NONFINITE_POLICIES

__all__ = ["NONFINITE_POLICIES", "ChunkOptions", "ChunkResult", "run_chunk", "apply_kernel"]


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
        Digest each chunk's state (to find duplicated chunks and changed
        stores).
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
    exception: Exception | None = None


def run_chunk(source, index, kernel, plan, options=ChunkOptions()):
    """Read chunk ``index`` of ``source`` and apply ``kernel`` (see :func:`apply_kernel`).

    A chunk that cannot be read (:class:`~stream_relu.errors.DataError`:
    checksum failure, missing chunk; or storage that refuses access or
    cannot be reached) is returned as the result's ``error``, not raised:
    the driver's fold decides (raise it, or collect a ``DataError`` with
    ``options.collect_errors``), and a worker never logs an expected error
    as a failed task with its traceback.
    """
    try:
        x, y = source.read(index)
    except (DataError, StorageAccessError, StorageUnreachableError) as exc:
        return ChunkResult(state=None, error=str(exc), exception=exc)
    return apply_kernel(kernel, x, y, plan, options)


def apply_kernel(kernel, x, y, plan, options=ChunkOptions()):
    """``kernel(x, y, plan)`` with BLAS pinned to one thread, over the finite rows.

    A NaN or infinity in any row reaches the sums; only then are the rows
    checked one by one and the kernel run again without the bad ones, so
    clean chunks pay nothing for the check.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    n_bad = 0
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(invalid="ignore", over="ignore"):
        state = kernel(x, y, plan)
        if not state.is_finite():
            good = np.isfinite(y) & np.isfinite(x).all(axis=1)
            n_bad = int(good.size - np.count_nonzero(good))
            if n_bad:
                state = kernel(x[good], y[good], plan)
    digest = state.fingerprint() if options.fingerprint else None
    return ChunkResult(state=state, nonfinite_rows=n_bad, fingerprint=digest)
