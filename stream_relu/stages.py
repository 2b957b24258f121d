"""The central stages after the passes: recovery of the units, then the local refinement.

:func:`recover_stage` turns the finalized moments into parameters (whitened
coordinates, units oriented by :func:`~stream_relu.recovery.canonical_flips`);
:func:`refinement_stage` polishes them by L-BFGS on the squared loss over
an in-memory subsample of whole chunks, or over streamed passes of every
row.  Both :func:`stream_relu.fit` and the incremental accumulator call
them.

Imports the engine (for streamed refinement passes), recovery and refine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import settings
from .engine import ChunkOptions, StepProgress, reduce_chunks
from .errors import RecoveryError
from .recovery import canonical_flips, recover
from .refine import REFINE, InMemoryObjective, Params, RefinePlan, refine

__all__ = ["MomentStage", "Refinement", "oriented", "recover_stage", "refinement_stage"]


def oriented(params):
    """``params`` with every unit re-oriented by :func:`~stream_relu.recovery.canonical_flips`."""
    o = canonical_flips(params.a, params.W, params.b, params.u, params.c)
    return Params(params.a, o.W, o.b, o.u, o.c)


@dataclass(frozen=True)
class MomentStage:
    """The moment estimate: oriented parameters and the recovery's own result (with its diagnostics)."""

    params: Params
    estimate: object


def recover_stage(gauss, sub, rng):
    """Recover the units from the two passes' moments (:func:`~stream_relu.recovery.recover`).

    Raises
    ------
    RecoveryError
        The order-2 moment in the subspace is singular.
    """
    try:
        est = recover(gauss, sub, rng=rng)
    except np.linalg.LinAlgError as exc:
        raise RecoveryError(f"the order-2 moment in the subspace is singular ({exc}); try a smaller --hidden") from None
    return MomentStage(oriented(Params(est.a, est.W, est.b, est.u, est.c)), est)


@dataclass(frozen=True)
class Refinement:
    """What the refinement did.

    Attributes
    ----------
    params : Params
        The refined parameters (the start when refinement is off or there are no units).
    stages : dict
        ``moment`` (training loss of the start) and ``refined`` (one entry per refinement run).
    history : list or None
        Loss per iteration over all runs.
    rows_used : list of dict
        The rows of each refinement run (chunks and count, or ``streamed``).
    """

    params: Params
    stages: dict
    history: list = None
    rows_used: list = field(default_factory=list)


@dataclass(frozen=True)
class _Rows:
    """Rows read for an in-memory refinement, and the chunks they came from."""

    x: np.ndarray
    y: np.ndarray
    chunks: list


def _refine_rows(source, n_rows):
    """Evenly spaced whole chunks holding at least ``n_rows`` finite rows (or all), read in this process."""
    n_chunks = source.n_chunks
    k = max(1, -(-n_rows // max(source.chunk_len(0), 1)))
    while True:
        picks = np.unique(np.round(np.linspace(0, n_chunks - 1, min(k, n_chunks))).astype(int))
        if k >= n_chunks or sum(source.chunk_len(int(i)) for i in picks) >= n_rows:
            break
        k += 1
    xs, ys = [], []
    got = 0
    for i in picks:
        xb, yb = source.read(int(i))
        good = np.isfinite(yb) & np.isfinite(xb).all(axis=1)
        xb, yb = xb[good], yb[good]
        take = min(len(yb), n_rows - got)
        xs.append(np.asarray(xb[:take], dtype=np.float64))
        ys.append(np.asarray(yb[:take], dtype=np.float64))
        got += take
        if got >= n_rows:
            break
    return _Rows(np.concatenate(xs), np.concatenate(ys), [int(i) for i in picks[: len(xs)]])


@dataclass(frozen=True)
class _Objective:
    """A refinement objective and the rows it covers."""

    fn: object
    used: dict


def _in_memory(source, gauss, n_rows, n_hidden):
    rows = _refine_rows(source, min(n_rows, source.n_samples))
    z = (rows.x - gauss.mean) @ gauss.whitener
    return _Objective(InMemoryObjective(z, rows.y, n_hidden), {"chunks": rows.chunks, "rows": int(rows.y.shape[0])})


def _streamed(source, runner, gauss):
    def objective(params):
        plan = RefinePlan.build(gauss.mean, gauss.whitener, params)
        return reduce_chunks(source, REFINE, plan, runner, options=ChunkOptions(nonfinite="skip")).state

    return _Objective(objective, {"rows": source.n_samples, "streamed": True})


def _rel_mse(objective, params, var_y):
    state = objective(params)
    return 2.0 * float(state.sums["loss"]) / (state.count * max(var_y, np.finfo(float).tiny))


def _refine(objective, params, gauss, how, progress):
    """One L-BFGS run on ``objective`` with a progress line per iteration (throttled)."""
    step = StepProgress(f"refinement ({objective.used['rows']:,} rows)", how.maxiter, enabled=progress)
    params, info = refine(
        objective.fn, params, var_y=gauss.var_y, maxiter=how.maxiter, target=how.target,
        on_iteration=lambda k, mse: step.update(k, f"rel MSE {mse:.3g}"),
    )
    step.finish(f"{info['iterations']} iterations, rel MSE {info['rel_mse_start']:.3g} -> {info['rel_mse_end']:.3g}")
    return params, info


def _entry(objective, info):
    """A ``stages["refined"]`` entry: the rows and the refinement's summary (its history aside)."""
    return {"rows": objective.used["rows"], **{k: v for k, v in info.items() if k != "history"}}


def refinement_stage(source, runner, gauss, start, how, progress=False):
    """Refine ``start`` (whitened coordinates in ``gauss``'s frame) as ``how`` (:class:`RefineSettings`) says.

    In memory, a first run uses ``how.rows`` rows; when its residual shows
    label noise (relative MSE above ``NOISY_REL_MSE``, target not reached) a
    second run uses up to ``how.rows_max`` rows (at most
    ``REFINE_MEMORY_BYTES`` of float64 inputs): the statistical error of the
    refined parameters shrinks like ``1 / rows``.  ``progress`` reports the
    iterations on stderr.
    """
    m = start.n_hidden
    objective = _streamed(source, runner, gauss) if how.passes else _in_memory(source, gauss, how.rows, m)
    stages = {"moment": {"rel_mse_train": _rel_mse(objective.fn, start, gauss.var_y)}, "refined": []}
    history, rows_used = [], [objective.used]
    params = start
    if how.enabled and m > 0:
        params, info = _refine(objective, start, gauss, how, progress)
        stages["refined"].append(_entry(objective, info))
        history += info["history"]
        rows2 = min(source.n_samples, how.rows_max, settings.REFINE_MEMORY_BYTES // (8 * source.n_features))
        noisy = info["rel_mse_end"] > settings.NOISY_REL_MSE and not info["target_reached"]
        if not how.passes and noisy and rows2 > objective.used["rows"]:
            objective = _in_memory(source, gauss, rows2, m)
            params, info = _refine(objective, params, gauss, how, progress)
            stages["refined"].append(_entry(objective, info))
            history += info["history"]
            rows_used.append(objective.used)
        params = oriented(params)
    return Refinement(params, stages, history or None, rows_used)
