"""The central stages after the passes: recovery of the units, then the local refinement.

:func:`recover_stage` turns the finalized moments into parameters (whitened
coordinates, units oriented by :func:`~stream_relu.recovery.canonical_flips`);
:func:`refinement_stage` polishes them by L-BFGS on the squared loss over
an in-memory subsample of whole chunks, or over streamed passes of every
row; with a measured width, :func:`width_search` then adds the units the
residual's moments show and held-out rows confirm.  Both
:func:`stream_relu.fit` and the incremental accumulator call them.

Imports the engine (for streamed refinement and residual passes), recovery, refine and width.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from . import settings
from .engine import ChunkOptions, Progress, StepProgress, reduce_chunks
from .errors import RecoveryError
from .network import ReluNetwork
from .newton import P_DENSE_MAX, curvature, curvature_rows, n_reduced, newton_descent, standard_errors
from .recovery import canonical_flips, recover
from .refine import REFINE, RESIDUAL, InMemoryObjective, Params, RefinePlan, ResidualPlan, refine, residual_t2
from .width import GROUPS, HELDOUT_Z, heldout_gain, residual_look, unit_from_residual

log = logging.getLogger("stream_relu")

__all__ = ["MomentStage", "Refinement", "oriented", "recover_stage", "refinement_stage", "width_search"]


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
    looks : tuple of Candidate
        The residual looks of the width search (empty without one).
    stderr : dict or None
        :func:`model_stderr` of the final parameters.
    reused_chunks : int
        Chunks of the full-data passes taken from the state folder.
    """

    params: Params
    stages: dict
    history: list = None
    rows_used: list = field(default_factory=list)
    looks: tuple = ()
    stderr: dict = None
    reused_chunks: int = 0


@dataclass(frozen=True)
class _Rows:
    """Rows read for an in-memory refinement, and the chunks they came from."""

    x: np.ndarray
    y: np.ndarray
    chunks: list


def _refine_rows(source, n_rows, eligible=None):
    """Evenly spaced whole chunks (of ``eligible``, default all) holding at least ``n_rows`` finite rows
    (or all), read in this process."""
    eligible = np.arange(source.n_chunks) if eligible is None else np.asarray(eligible)
    n_chunks = eligible.shape[0]
    k = max(1, -(-n_rows // max(source.chunk_len(0), 1)))
    while True:
        picks = eligible[np.unique(np.round(np.linspace(0, n_chunks - 1, min(k, n_chunks))).astype(int))]
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


@dataclass(frozen=True)
class _Store:
    """What a streamed pass of the refinement needs: the store, the runner, the frame, progress, the state folder."""

    source: object
    runner: object
    gauss: object
    progress: bool = False
    folder: object = None


def _full_pass(store, params, k, used):
    """The loss and gradient of ``params`` summed over every row (one :data:`~stream_relu.refine.REFINE` pass).

    With a state folder the pass is checkpointed under its plan's key
    (which digests ``params``), so a resumed fit, which reaches the same
    ``params`` bitwise, reuses it; ``used`` collects the pass folders.
    """
    plan = RefinePlan.build(store.gauss.mean, store.gauss.whitener, params)
    prog = Progress(f"refinement pass {k} (every row)", store.source.n_chunks, store.source.n_samples, enabled=store.progress)
    checkpoint = None if store.folder is None else store.folder.pass_checkpoint("refine", plan.key)
    used.add(f"refine-{plan.key}")
    red = reduce_chunks(store.source, REFINE, plan, store.runner, progress=prog, options=ChunkOptions(nonfinite="skip"),
                        checkpoint=checkpoint)
    return red


def full_data_passes(store, curv, params, max_passes, target=None):
    """Newton steps with gradients over every row and the in-memory rows' curvature ``curv``.

    Pass ``k`` sums the loss and gradient at ``theta_k`` over the store (one
    :data:`~stream_relu.refine.REFINE` pass); the step ``-H^{-1} g`` gives
    ``theta_{k+1}`` (:func:`~stream_relu.newton.newton_descent` with
    ``take_last``: the stopping step is taken without a pass to check it,
    and so is the step after ``max_passes`` passes, ``converged`` False).

    Returns
    -------
    Refinement
        ``params`` and ``stages``: ``passes``, ``rows``, ``curvature_rows``,
        ``n_params``, ``rel_mse`` (over every row, per pass), ``decrement``
        (predicted fall of the relative MSE, per pass), ``grad_norm`` (the
        last accepted pass's, per row, reduced coordinates), ``converged``,
        ``stop``; and ``reused_chunks`` (from the state folder).
    """
    used, reused = set(), []

    def sums_at(at, k):
        red = _full_pass(store, at, k, used)
        reused.append(red.report.reused)
        return red.state

    log.info("full-data refinement: curvature of %d parameters on %d rows", curv.tangent.n_params, curv.rows)
    var_y = max(store.gauss.var_y, np.finfo(float).tiny)
    params, info = newton_descent(curv, sums_at, params, max_passes, var_y=var_y, take_last=True, target=target, noun="passes")
    info = {"passes": info.pop("evaluations"), "curvature_rows": curv.rows, "n_params": curv.tangent.n_params, **info}
    if store.folder is not None:
        store.folder.prune(used, kinds=("refine",))  # passes of earlier fits with other parameters
    return Refinement(params, info, reused_chunks=sum(reused))


NEWTON_MAX_EVALS = 50  # in-memory Newton evaluations at most (each one loss and gradient over the rows)


def _newton(objective, curv, params, gauss, how, progress):
    """Newton steps on the in-memory rows with the fixed curvature ``curv``; ``(params, info)`` like :func:`_refine`'s."""
    step = StepProgress(f"refinement ({objective.used['rows']:,} rows, Newton)", NEWTON_MAX_EVALS, enabled=progress)
    var_y = max(gauss.var_y, np.finfo(float).tiny)

    def sums_at(at, k):
        state = objective.fn(at)
        step.update(k, f"rel MSE {2.0 * float(state.sums['loss']) / (state.count * var_y):.3g}")
        return state

    params, out = newton_descent(curv, sums_at, params, NEWTON_MAX_EVALS, var_y=var_y, take_last=False, target=how.target,
                                 noun="steps")
    accepted = [v for v, dec in zip(out["rel_mse"], out["decrement"]) if dec is not None]
    info = {
        "method": "newton", "rel_mse_start": out["rel_mse"][0], "rel_mse_end": accepted[-1], "history": out["rel_mse"],
        "iterations": out["evaluations"], "evaluations": out["evaluations"], "converged": out["converged"],
        "message": out["stop"], "target_reached": out["target_reached"], "curvature_rows": curv.rows,
    }
    step.finish(f"{info['iterations']} Newton steps, rel MSE {info['rel_mse_start']:.3g} -> {info['rel_mse_end']:.3g}")
    return params, info


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
    """A ``stages["refined"]`` entry: the rows, the method and the refinement's summary (its history aside)."""
    return {"rows": objective.used["rows"], "method": "lbfgs", **{k: v for k, v in info.items() if k != "history"}}


@dataclass
class _Later:
    """What the refinement of noisy labels adds after the first in-memory run."""

    params: Params
    objective: _Objective
    refined: list = field(default_factory=list)
    stages: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    rows_used: list = field(default_factory=list)
    reused: int = 0


def _noisy_refinement(store, objective, params, how):
    """The second in-memory run (up to ``how.rows_max`` rows), then the passes over every row.

    The Gauss-Newton curvature of the second run's rows, at the first
    run's parameters, serves both: Newton steps on those rows
    (:func:`_newton`; L-BFGS above ``P_DENSE_MAX`` reduced parameters,
    where no matrix is formed), then :func:`full_data_passes` when the
    labels still look noisy and the store holds more rows.
    """
    source, gauss = store.source, store.gauss
    out = _Later(params, objective)
    rows2 = min(source.n_samples, how.rows_max, settings.REFINE_MEMORY_BYTES // (8 * source.n_features))
    curv, info = None, {"target_reached": False, "rel_mse_end": np.inf}
    if rows2 > objective.used["rows"]:
        out.objective = _in_memory(source, gauss, rows2, params.n_hidden)
        fn = out.objective.fn
        curv = curvature(fn.z, fn.y, params, dense_max=P_DENSE_MAX)
        if curv.dense:
            out.params, info = _newton(out.objective, curv, params, gauss, how, store.progress)
        else:
            out.params, info = _refine(out.objective, params, gauss, how, store.progress)
        out.refined.append(_entry(out.objective, info))
        out.history += info["history"]
        out.rows_used.append(out.objective.used)
    noisy = info["rel_mse_end"] > settings.NOISY_REL_MSE and not info["target_reached"]
    if noisy and how.passes > 0 and source.n_samples > out.objective.used["rows"] and store.runner is not None:
        fn = out.objective.fn
        curv = curv or curvature(fn.z, fn.y, out.params, dense_max=P_DENSE_MAX)
        full = full_data_passes(store, curv, out.params, how.passes, how.target)
        out.params, out.stages["full_data"], out.reused = full.params, full.stages, full.reused_chunks
        out.rows_used.append({"rows": full.stages["rows"], "streamed": True, "passes": full.stages["passes"]})
    return out


def refinement_stage(source, runner, gauss, start, how, progress=False, search=False, folder=None):
    """Refine ``start`` (whitened coordinates in ``gauss``'s frame) as ``how`` (:class:`RefineSettings`) says.

    In memory, a first run uses ``how.rows`` rows; when its residual shows
    label noise (relative MSE above ``NOISY_REL_MSE``, target not reached) a
    second run uses up to ``how.rows_max`` rows (at most
    ``REFINE_MEMORY_BYTES`` of float64 inputs): the statistical error of the
    refined parameters shrinks like ``1 / rows``.  When the store holds
    more rows than that, up to ``how.passes`` Newton steps over every row
    follow (:func:`full_data_passes`; checkpointed in ``folder``).  The
    standard errors come last (:func:`model_stderr`).  ``progress`` reports
    the iterations and passes on stderr.
    """
    m = start.n_hidden
    objective = _in_memory(source, gauss, how.rows, m)
    stages = {"moment": {"rel_mse_train": _rel_mse(objective.fn, start, gauss.var_y)}, "refined": []}
    history, rows_used = [], [objective.used]
    params = start
    looks, reused = (), 0
    searching = search and how.enabled
    if how.enabled and (m > 0 or searching):
        info = {"rel_mse_end": stages["moment"]["rel_mse_train"], "target_reached": False}
        if m > 0:
            params, info = _refine(objective, start, gauss, how, progress)
            stages["refined"].append(_entry(objective, info))
            history += info["history"]
        rel_mse = info["rel_mse_end"]
        if searching:
            found = width_search(source, runner, gauss, params, objective, how, progress)
            params, looks, m = found.params, found.looks, found.params.n_hidden
            rel_mse = found.stages["rel_mse_train"]
            stages["width_search"] = found.stages
        if m > 0 and rel_mse > settings.NOISY_REL_MSE and not info["target_reached"]:
            later = _noisy_refinement(_Store(source, runner, gauss, progress, folder), objective, params, how)
            params, objective, reused = later.params, later.objective, later.reused
            stages["refined"] += later.refined
            stages.update(later.stages)
            history += later.history
            rows_used += later.rows_used
        params = oriented(params) if m > 0 else params
    if not how.enabled:
        stderr = {"available": False, "reason": "the model is the moment estimate (refinement off); the sandwich is that of least squares"}
    else:
        stderr = model_stderr(objective, gauss, params, rows_used[-1]["rows"])
    return Refinement(params, stages, history or None, rows_used, looks, stderr, reused)


def model_stderr(objective, gauss, params, n_rows):
    """Sandwich standard errors of the model's ``a, W, b, u, c`` in x coordinates, or why there are none.

    Bread and meat are those of the in-memory rows (at most
    :func:`~stream_relu.newton.curvature_rows` of them) at the final
    parameters, in the model's order and orientation
    (:func:`~stream_relu.newton.standard_errors`); ``n_rows`` are the rows
    the estimate used (every row after full-data passes).

    Returns
    -------
    dict
        ``available``; then ``a``, ``W``, ``b``, ``u``, ``c``, ``rows``,
        ``curvature_rows``, ``method``; or ``reason``.
    """
    d, m = params.n_features, params.n_hidden
    p = n_reduced(d, m)
    if p > P_DENSE_MAX:
        return {"available": False, "reason": f"{p} parameters is more than {P_DENSE_MAX}: no p x p matrix is formed"}
    model = ReluNetwork.from_params(params, gauss)
    n_c = curvature_rows(objective.fn.y.shape[0], p)
    x = objective.fn.z[:n_c] @ np.linalg.inv(gauss.whitener) + gauss.mean
    curv = curvature(x, objective.fn.y[:n_c], Params(model.a, model.W, model.b, model.u, model.c), meat=True)
    method = (f"sandwich H^-1 M H^-1 / n: H = J^T J and M = J^T diag(e^2) J over {n_c:,} in-memory rows at the final "
              f"parameters, n = {n_rows:,} rows; relative error about sqrt(p / {n_c:,}) = {np.sqrt(p / n_c):.2g}")
    return {"available": True, **standard_errors(curv, n_rows), "rows": int(n_rows), "curvature_rows": int(n_c), "method": method}


VALIDATION_ROWS = 1 << 17  # held-out rows of the width search (chunks the refinement did not read)
VALIDATION_MIN_ROWS = 1 << 14  # fewer rows in such chunks: every 8th refinement row is held out instead
HOLDOUT_EVERY = 8


@dataclass(frozen=True)
class _Split:
    """Training and held-out rows of the width search (whitened)."""

    z: np.ndarray
    y: np.ndarray
    z_val: np.ndarray
    y_val: np.ndarray


def _search_split(source, gauss, objective):
    """Held-out rows from chunks the refinement did not read (at least ``VALIDATION_MIN_ROWS``),
    else every ``HOLDOUT_EVERY``-th of its rows."""
    fn = objective.fn
    unused = sorted(set(range(source.n_chunks)) - set(objective.used.get("chunks", [])))
    if sum(source.chunk_len(i) for i in unused) >= VALIDATION_MIN_ROWS:
        rows = _refine_rows(source, VALIDATION_ROWS, unused)
        z_val = (rows.x - gauss.mean) @ gauss.whitener
        return _Split(fn.z, fn.y, z_val, rows.y)
    held = np.zeros(fn.y.shape[0], dtype=bool)
    held[HOLDOUT_EVERY - 1 :: HOLDOUT_EVERY] = True
    return _Split(fn.z[~held], fn.y[~held], fn.z[held], fn.y[held])


def _with_unit(params, unit):
    """``params`` with one more unit and the affine change that comes with it."""
    return Params(
        np.append(params.a, unit["a"]),
        np.column_stack([params.W, unit["w"]]),
        np.append(params.b, unit["b"]),
        params.u + unit["du"],
        params.c + unit["dc"],
    )


def _on_training_rows(split, params, gauss, how, progress):
    """``params`` refined on the split's training rows (as they are when there is nothing to refine)."""
    if params.n_hidden == 0:
        return params
    objective = _Objective(InMemoryObjective(split.z, split.y, params.n_hidden), {"rows": int(split.y.shape[0])})
    return _refine(objective, params, gauss, how, progress)[0]


def _try_unit(split, params, look, gauss, how, progress):
    """Refine ``params`` plus the residual's unit on the training rows; the held-out verdict.

    The network without the unit is refined again on the same rows with
    the same settings first, so neither rows nor iterations favour the
    trial: only the unit does.
    """
    base = _on_training_rows(split, params, gauss, how, progress)
    trial = _on_training_rows(split, _with_unit(base, unit_from_residual(look)), gauss, how, progress)
    gain = heldout_gain(split.y_val, base.predict(split.z_val), trial.predict(split.z_val))
    taken = gain["gain"] > HELDOUT_Z * gain["se"]
    verdict = f"held-out loss {'fell' if gain['gain'] > 0 else 'rose'} by {abs(gain['gain']) / max(gain['se'], 1e-300):.3g} standard errors"
    extra = {**look.candidate.extra, "heldout_gain": gain["gain"], "heldout_se": gain["se"]}
    cand = replace(look.candidate, taken=taken, reason=("added: " if taken else "left out: ") + verdict, extra=extra)
    return (trial if taken else params), cand


def _residual_floor(look, rel_mse):
    """Why the search stops at this look, or None when its candidate is worth a try.

    A relative MSE at most ``NOISY_REL_MSE`` is the numerical floor: the
    residual is rounding (of float32 data, say), which a unit may fit in
    part but no network explains.
    """
    cand = look.candidate
    if rel_mse <= settings.NOISY_REL_MSE:
        return f"the residual is at the numerical floor (relative MSE {rel_mse:.2g} <= {settings.NOISY_REL_MSE:g})"
    if not cand.stands_out:
        orders = ", ".join(f"order {k} {v:.3g}" for k, v in cand.z.items())
        return (
            f"the residual is at its measured floor off the units' span (T_2 eigenvalue {abs(cand.value) / cand.threshold:.3g}x "
            f"the threshold; standard errors: {orders})"
        )
    return None


def _streamed_look(source, runner, gauss, params, z, r, progress):
    """The residual look with ``T_2`` from one streamed pass over every row (:data:`~stream_relu.refine.RESIDUAL`)."""
    plan = ResidualPlan.build(gauss.mean, gauss.whitener, params, GROUPS)
    prog = Progress("residual pass (width search)", source.n_chunks, source.n_samples, enabled=progress)
    red = reduce_chunks(source, RESIDUAL, plan, runner, progress=prog, options=ChunkOptions(nonfinite="skip"))
    return residual_look(z, r, params.normalized().W, residual_t2(red.state))


@dataclass(frozen=True)
class _Look:
    """A look of the search: what it saw, why it ends the search (None: try its unit), whether it streamed."""

    look: object
    why: str = None
    streamed: bool = False


def _stop_or_stream(ctx, params, z, r, streamed):
    """The look at the residual ``r`` on rows ``z`` (a :class:`_Look`).

    A look that does not stand out, on a residual above the numerical floor
    and on rows that are under half of the store, is made again once with
    ``T_2`` over every row: the refinement rows may lack the power the
    store has.
    """
    source, runner, gauss, progress = ctx
    look = residual_look(z, r, params.normalized().W)
    rel_mse = float(np.mean(r * r)) / max(gauss.var_y, np.finfo(float).tiny)
    why = _residual_floor(look, rel_mse)
    more = source.n_samples >= 2 * z.shape[0] and runner is not None
    if why is not None and more and not streamed and rel_mse > settings.NOISY_REL_MSE:
        look, streamed = _streamed_look(source, runner, gauss, params, z, r, progress), True
        why = _residual_floor(look, rel_mse)
    if why is not None:
        floor = {**look.candidate.extra, "numerical_floor": why.startswith("the residual is at the numerical")}
        look = replace(look, candidate=replace(look.candidate, reason=why, extra=floor))
    return _Look(look, why, streamed)


def width_search(source, runner, gauss, params, objective, how, progress=False):
    """Residual deflation: add the units the residual's moments show and the held-out rows confirm.

    Each round computes the residual on the refinement rows, looks at its
    moments off the units' span (:func:`~stream_relu.width.residual_look`:
    the misfit of units already there vanishes there to first order), and,
    when they stand out of their measured floor, refines the network with
    one more unit started from the residual's moments; the unit stays when the
    loss on held-out rows (chunks the refinement did not read, else every
    ``HOLDOUT_EVERY``-th row) falls by more than ``HELDOUT_Z`` standard
    errors.  The search stops at the first round that adds nothing.  A look
    that is ambiguous on the refinement rows of a larger store is made again
    with one streamed pass over every row (:func:`_stop_or_stream`; at most
    one per search).  With ``how.target`` each refinement stops at the
    target, so the residual holds misfit as well: the held-out test still
    decides.  A residual at the numerical floor (relative MSE at most
    ``NOISY_REL_MSE``) ends the search: a unit missing then changes the
    relative MSE by less than that.

    Returns
    -------
    Refinement
        ``params`` (normalized, oriented), ``looks``, and in ``stages`` the
        last look's ``rel_mse_train`` (on the search's training rows) and
        ``residual_passes`` (streamed passes made).
    """
    split = None  # held-out rows are read once a look asks for a trial
    z, y = objective.fn.z, objective.fn.y
    looks, streamed = [], False
    while params.n_hidden < params.n_features and y.shape[0] >= 2 * GROUPS:
        seen = _stop_or_stream((source, runner, gauss, progress), params, z, y - params.predict(z), streamed)
        streamed, look = streamed or seen.streamed, seen.look
        if seen.why is not None:
            looks.append(look.candidate)
            break
        split = split or _search_split(source, gauss, objective)
        z, y = split.z, split.y
        params, cand = _try_unit(split, params, look, gauss, how, progress)
        looks.append(cand)
        log.info("width search: residual candidate %s", cand.reason)
        if not cand.taken:
            break
    stages = {"rel_mse_train": float(np.mean((y - params.predict(z)) ** 2)) / max(gauss.var_y, 1e-300),
              "residual_passes": int(streamed)}
    return Refinement(oriented(params), stages, looks=tuple(looks))
