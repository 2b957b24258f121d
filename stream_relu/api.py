"""The public fitting pipeline: data -> moments -> decomposition -> recovery -> refinement -> model.

:func:`fit` accepts a zarr store (path or URL), numpy arrays, or dask
arrays, and runs the same kernels on each:

* a store path runs on a local cluster of one single-threaded worker per
  core, unless ``client`` or ``scheduler`` says otherwise
  (``scheduler="synchronous"`` runs in this process);
* numpy input runs in this process;
* dask arrays run on the active dask scheduler unless a client is given.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_limits

from . import __version__
from .data import StoreSpec
from .engine import (
    NONFINITE_POLICIES,
    ArraySource,
    ChunkOptions,
    DaskArraySource,
    Progress,
    StoreSource,
    SubsetSource,
    is_dask_array,
    open_runner,
    reduce_chunks,
)
from .errors import DataError, InputError, RecoveryError, StoreFormatError
from .moments import GAUSS, JOINT, SUBSPACE, GaussPlan, SubspacePlan, finalize_gauss, finalize_subspace, split_joint
from .network import ReluNetwork, to_jsonable
from .recovery import UNRELIABLE_STRENGTH, canonical_flips, choose_width, recover, subspace_basis
from .refine import REFINE, InMemoryObjective, Params, RefinePlan, refine

__all__ = ["FitResult", "fit", "predict_store", "CheckReport", "check"]

log = logging.getLogger("stream_relu")

DEFAULT_REFINE_ROWS = 250_000
DEFAULT_REFINE_ROWS_MAX = 1_000_000
REFINE_MEMORY_BYTES = 1 << 30
# Noiseless float32 data refine to a relative MSE of about 1e-15; a residual
# above this says the labels are noisy and more rows will help.
NOISY_REL_MSE = 1e-10


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Parameters
    ----------
    model : ReluNetwork
        The fitted network in the original coordinates (refined unless
        ``refine=False``), with provenance and diagnostics attached.
    moment_model : ReluNetwork
        The pure moment estimate (what ``refine=False`` returns).
    diagnostics : dict
        Same as ``model.diagnostics``.
    timings : dict
        Wall seconds per stage.  Kept out of the model file, which is
        byte-identical whatever the cluster did.
    run : dict
        How this run went (chunks reused from ``state`` per pass).  Kept
        out of the model file for the same reason.
    """

    model: ReluNetwork
    moment_model: ReluNetwork
    diagnostics: dict
    timings: dict
    run: dict = None


def _make_source(data, y, x_name, y_name, chunk_rows, storage_options, missing_chunks="error"):
    if isinstance(data, (str, os.PathLike)):
        if y is not None:
            raise InputError("y must not be given when fitting a store (the store holds y)")
        spec = StoreSpec.make(
            os.fspath(data), x=x_name, y=y_name, storage_options=storage_options, missing_chunks=missing_chunks
        )
        store = spec.open()
        for note in store.notes:
            log.warning("%s", note)
        return StoreSource.from_store(store), store
    if y is None:
        raise InputError("y is required when x is an array")
    if is_dask_array(data) or is_dask_array(y):
        import dask.array as da

        dx, dy = da.asarray(data), da.asarray(y)
        if dy.ndim == 2 and dy.shape[1] == 1:
            dy = dy[:, 0]
        if dx.ndim != 2 or dy.ndim != 1 or dx.shape[0] != dy.shape[0]:
            raise StoreFormatError(
                f"expected x of shape (n_samples, n_features) and y of shape (n_samples,); got {dx.shape} and {dy.shape}"
            )
        return DaskArraySource(dx, dy), None
    x = np.asarray(data)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise StoreFormatError(
            f"expected x of shape (n_samples, n_features) and y of shape (n_samples,); got {x.shape} and {y.shape}"
        )
    if x.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
        raise StoreFormatError(f"x and y must be real numbers; got dtypes {x.dtype} and {y.dtype}")
    return ArraySource(x, y, chunk_rows), None


def _refine_rows(source, n_rows):
    """Evenly spaced whole chunks holding at least ``n_rows`` rows (or all), read in this process."""
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
    return np.concatenate(xs), np.concatenate(ys), [int(i) for i in picks[: len(xs)]]


def _in_memory_objective(source, gauss, n_rows, n_hidden):
    xs, ys, picks = _refine_rows(source, min(n_rows, source.n_samples))
    z = (xs - gauss.mean) @ gauss.whitener
    return InMemoryObjective(z, ys, n_hidden), {"chunks": picks, "rows": int(ys.shape[0])}


def _rel_mse(objective, params, var_y):
    state = objective(params)
    return 2.0 * float(state.sums["loss"]) / (state.count * max(var_y, np.finfo(float).tiny))


def _refinement(source, runner, gauss, start, *, enabled, rows, rows_max, passes, maxiter, target=None):
    """Refine ``start`` (whitened coordinates); returns (params, diagnostics, rows used)."""
    m = start.n_hidden
    if passes:

        def objective(params):
            plan = RefinePlan.build(gauss.mean, gauss.whitener, params)
            return reduce_chunks(source, REFINE, plan, runner, options=ChunkOptions(nonfinite="skip")).state

        used = {"rows": source.n_samples, "streamed": True}
    else:
        objective, used = _in_memory_objective(source, gauss, rows, m)
    stages = {"moment": {"rel_mse_train": _rel_mse(objective, start, gauss.var_y)}, "refined": []}
    history = []
    rows_used = {"refinement": [used]}
    params = start
    if enabled and m > 0:
        params, info = refine(objective, start, var_y=gauss.var_y, maxiter=maxiter, target=target)
        stages["refined"].append({"rows": used["rows"], **{k: v for k, v in info.items() if k != "history"}})
        history += info["history"]
        rows2 = min(source.n_samples, rows_max, REFINE_MEMORY_BYTES // (8 * source.n_features))
        noisy = info["rel_mse_end"] > NOISY_REL_MSE and not info["target_reached"]
        if not passes and noisy and rows2 > used["rows"]:
            objective2, used2 = _in_memory_objective(source, gauss, rows2, m)
            params, info2 = refine(objective2, params, var_y=gauss.var_y, maxiter=maxiter, target=target)
            stages["refined"].append({"rows": used2["rows"], **{k: v for k, v in info2.items() if k != "history"}})
            history += info2["history"]
            rows_used["refinement"].append(used2)
        W, b, u, c, _ = canonical_flips(params.a, params.W, params.b, params.u, params.c)
        params = Params(params.a, W, b, u, c)
    return params, {"stages": stages, "history": history or None}, rows_used


ROWS_PER_PARAMETER_PAIR = 2000  # the envelope's n >= 1e6 at d m = 500


def _data_warnings(gauss, width):
    """Envelope warnings that pass 1 alone can give (shared by ``fit`` and ``check``)."""
    d, m, n = gauss.n_features, width.n_hidden, gauss.n_samples
    out = []
    cond = float(gauss.cov_eigvals[-1] / gauss.cov_eigvals[0])
    if cond > 100:
        out.append(f"cond(Sigma) = {cond:.3g} > 100: outside the supported envelope, accuracy is not guaranteed")
    needed = ROWS_PER_PARAMETER_PAIR * d * m
    if n < needed:
        out.append(f"{n} rows for d = {d}, m = {m}: about {needed} are needed for the stated accuracy")
    if width.requested and m > width.n_above:
        spectrum = np.array2string(np.abs(width.spectrum[: m + 2]), precision=3)
        out.append(
            f"only {width.n_above} of the {m} requested units stand above the T_2 noise floor "
            f"(threshold {width.threshold:.3g}; |eigenvalues| {spectrum}); the weakest units are unreliable"
        )
    return out


def _envelope_warnings(gauss, width, est, moment_model):
    """Plain-language warnings when the fit leaves the supported envelope."""
    out = _data_warnings(gauss, width)
    unreliable = est.diagnostics["unreliable_units"]
    if unreliable:
        out.append(
            f"units {unreliable} (moment-estimate order) are weak in the Hermite moments "
            f"(fewer than {UNRELIABLE_STRENGTH:g} noise levels in order 2, or in both orders 3 and 4): "
            "more rows are needed to trust them"
        )
    for unit in est.diagnostics["folded_units"]:
        out.append(
            f"a unit with b = {unit['b']:.3g} is invisible in every Hermite order "
            f"(strength {unit['max_strength']:.2g} noise levels) and was folded into the affine term"
        )
    big_b = np.flatnonzero(np.abs(moment_model.b) > 2)
    if big_b.size:
        out.append(f"units {big_b.tolist()} have |b| > 2: outside the supported envelope, their recovery costs many more rows")
    if moment_model.n_hidden > 1:
        C = np.abs(moment_model.W.T @ moment_model.W) - np.eye(moment_model.n_hidden)
        if C.max() > 0.9:
            out.append(f"two units have |cos(w_i, w_j)| = {C.max():.3f} > 0.9: outside the supported envelope")
    return out


NORMALITY_Z = 8.0  # |z| of skewness or excess kurtosis above which x is called non-Gaussian


@dataclass
class FirstPass:
    """Pass 1 finalized, with what was found on the way (errors stop a fit; ``check`` lists them)."""

    gauss: object
    report: object
    errors: list
    warnings: list


def _state_folder(url, store, nonfinite, missing_chunks, storage_options=None):
    """The state folder of a fit, bound to the store's identity (all but its row count) and settings."""
    from .checkpoint import StateFolder

    if store is None:
        raise InputError("state= (--state) needs a zarr store as input, not arrays")
    identity = {k: v for k, v in store.identity().items() if k not in ("x_shape", "y_shape")}
    identity["n_features"] = store.n_features
    identity["settings"] = {"nonfinite": nonfinite, "missing_chunks": missing_chunks}
    # a local state folder needs no options; a remote one shares the store's credentials
    options = storage_options if "://" in str(url) and not str(url).startswith("file://") else None
    return StateFolder(url, identity, storage_options=options)


def _gauss_plan(source):
    """The first pass's shift: the means of the first readable chunk's first rows (zero if none reads)."""
    for i in range(min(source.n_chunks, 4)):
        try:
            x, y = source.read(i)
        except DataError:
            continue
        return GaussPlan.from_sample(np.asarray(x[:4096]), np.asarray(y[:4096]))
    return GaussPlan.zero(source.n_features)


PILOT_MIN_ROWS = 1 << 22  # a pilot holds the first chunks of at least this many rows (about 4.2 million)
PILOT_MAX_SIN = 0.25  # largest sine of the angles between the pilot's span and the full T_2's top span


def _pilot_indices(source):
    """The pilot chunks of a one-pass fit, or None when two passes are the better plan.

    The pilot is the leading chunks holding at least ``PILOT_MIN_ROWS``
    rows; a one-pass fit is planned when they are at most half of the
    store.  Leading chunks, not a sample spread over the store: rows
    appended later leave the pilot, hence the plan, unchanged, so a state
    folder is reused after an append and the result stays bitwise that of
    a fresh fit.
    """
    if isinstance(source, DaskArraySource) or source.n_chunks < 2:
        return None
    k = max(1, -(-PILOT_MIN_ROWS // max(source.chunk_len(0), 1)))
    if 2 * k > source.n_chunks:
        return None
    return tuple(range(k))


def _check_leading_pass(folder, kind, key):
    """Refuse a state folder whose leading pass was keyed by other first chunks (a changed store)."""
    from .checkpoint import CheckpointMismatchError

    if folder is None:
        return
    others = [p for p in folder.passes() if p.startswith(f"{kind}-") and p != f"{kind}-{key}"]
    if others:
        raise CheckpointMismatchError(
            f"the first chunks of the store changed since the state was written (the {kind} pass in "
            f"{folder.url} was planned from other rows); use a new --state folder for a changed store"
        )


def _reduce_first(source, runner, kernel, plan, *, nonfinite, progress, label, collect_errors=False, checkpoint=None):
    """Reduce a pass that holds the first-pass sums; returns (state, report, errors)."""
    options = ChunkOptions(nonfinite=nonfinite, fingerprint=True, collect_errors=collect_errors)
    prog = Progress(label, source.n_chunks, source.n_samples, enabled=progress)
    errors = []
    try:
        red = reduce_chunks(source, kernel, plan, runner, progress=prog, options=options, checkpoint=checkpoint)
    except DataError as exc:
        if not collect_errors:
            raise
        errors.append(str(exc))
        options = ChunkOptions(nonfinite="skip", fingerprint=True, collect_errors=True)
        red = reduce_chunks(source, kernel, plan, runner, options=options)
    for i, text in sorted(red.report.errors.items()):
        errors.append(f"{source.describe(i)}: {text}")
    return red.state, red.report, errors


def _validate_first(state, gplan, report, errors, nonfinite, normality=None):
    """Finalize first-pass sums and run every check they allow; returns a :class:`FirstPass`."""
    warnings = []
    if report.nonfinite and nonfinite == "skip":
        warnings.append(
            f"dropped {report.nonfinite_rows} rows holding NaN or infinity (in {len(report.nonfinite)} chunks)"
        )
    for group in report.duplicate_groups():
        warnings.append(
            f"chunks {group} have identical content (a duplicated ingest?): their rows count "
            f"{len(group)} times in the moments"
        )
    gauss = None
    if state == 0 or state.count < 2:
        errors.append(f"fewer than 2 usable rows ({0 if state == 0 else state.count})")
    else:
        try:
            gauss = finalize_gauss(state, gplan)
        except ValueError as exc:
            errors.append(str(exc))
    if gauss is not None:
        if normality is not None:
            gauss = replace(gauss, normality=normality)
        if gauss.var_y <= 1e-14 * max(gauss.T0**2, np.finfo(float).tiny):
            errors.append(f"y is constant (every row is {gauss.T0:.6g}): there is nothing to learn")
        norm = gauss.normality
        if norm["max_z"] > NORMALITY_Z:
            warnings.append(
                f"x does not look Gaussian: {norm['worst']} has skewness {norm['worst_skew']:.3g} and "
                f"excess kurtosis {norm['worst_excess_kurtosis']:.3g} ({norm['max_z']:.1f} standard errors "
                "from 0); the recovery guarantees assume Gaussian inputs"
            )
    return FirstPass(gauss, report, errors, warnings)


def _first_pass(source, runner, *, nonfinite, progress, collect_errors=False, checkpoint=None, gplan=None, label=None):
    """Run pass 1 over ``source`` and every validation that its sums allow."""
    gplan = _gauss_plan(source) if gplan is None else gplan
    state, report, errors = _reduce_first(
        source,
        runner,
        GAUSS,
        gplan,
        nonfinite=nonfinite,
        progress=progress,
        label=label or "pass 1/2 (moments)",
        collect_errors=collect_errors,
        checkpoint=checkpoint,
    )
    return _validate_first(state, gplan, report, errors, nonfinite)


def _network(params, gauss, **kwargs):
    return ReluNetwork.from_whitened(
        params.a, params.W, params.b, params.u, params.c, gauss.mean, gauss.whitener, **kwargs
    )


def _checked_width(gauss, n_hidden):
    """``choose_width`` on ``gauss``, logged; refuses data with no unit above the noise floor."""
    width = choose_width(gauss, n_hidden)
    log.info(
        "T_2 spectrum: %s; noise floor %.3g; %d units%s",
        np.array2string(np.abs(width.spectrum[: min(gauss.n_features, width.n_hidden + 4)]), precision=3),
        width.noise_floor,
        width.n_hidden,
        " (requested)" if width.requested else " (estimated)",
    )
    if width.n_hidden == 0:
        raise RecoveryError(
            "no eigenvalue of T_2 stands above the noise floor "
            f"({width.threshold:.3g}): the data look affine; nothing to recover"
        )
    return width


def _subspace_pass(source, runner, plan, gauss, *, progress, folder, label):
    prog = Progress(label, source.n_chunks, source.n_samples, enabled=progress)
    red = reduce_chunks(
        source,
        SUBSPACE,
        plan,
        runner,
        progress=prog,
        options=ChunkOptions(nonfinite="skip"),
        checkpoint=None if folder is None else folder.pass_checkpoint("subspace", plan.key),
    )
    return finalize_subspace(red.state, plan, gauss), red.report


def _span_sine(gauss, basis, m):
    """Largest sine of the principal angles between ``span basis`` and the top-``m`` span of ``gauss.T2``."""
    top = subspace_basis(gauss.T2, m)
    return float(np.linalg.norm(top - basis @ (basis.T @ top), 2))


def _moment_passes(source, runner, n_hidden, *, nonfinite, progress, folder, two_pass, timings):
    """Pass 1 and pass 2, or a pilot and one joint pass; returns (first, width, sub, run_info).

    One pass: a pilot of leading chunks (:func:`_pilot_indices`) plans
    the subspace; one pass over every chunk then sums both passes'
    moments (:func:`stream_relu.moments.joint_chunk`), and the subspace
    moments are moved to the full rows' whitening
    (:func:`stream_relu.moments.finalize_subspace`).  If the full ``T_2``
    disagrees with the pilot (another width, or a span more than
    ``PILOT_MAX_SIN`` away), a subspace pass planned from the full ``T_2``
    follows, so the result never rests on a poor pilot.
    """
    gplan = _gauss_plan(source)
    pilot = None if two_pass else _pilot_indices(source)
    run_info = {"n_chunks": source.n_chunks, "data_passes": 2, "pilot_chunks": 0}
    t0 = time.perf_counter()
    if pilot is None:
        _check_leading_pass(folder, "gauss", gplan.key)
        first = _first_pass(
            source,
            runner,
            nonfinite=nonfinite,
            progress=progress,
            gplan=gplan,
            checkpoint=None if folder is None else folder.pass_checkpoint("gauss", gplan.key),
        )
        run_info["pass1_reused_chunks"] = first.report.reused
        if first.errors:
            raise DataError(first.errors[0])
        timings["pass1_s"] = time.perf_counter() - t0
        width = _checked_width(first.gauss, n_hidden)
        sub, keep, label = None, {f"gauss-{gplan.key}"}, "pass 2/2 (subspace moments)"
    else:
        pilot_first = _first_pass(
            SubsetSource(source, pilot),
            runner,
            nonfinite="skip",
            progress=progress,
            gplan=gplan,
            label=f"pilot ({len(pilot)} of {source.n_chunks} chunks)",
        )
        if pilot_first.errors:
            raise DataError(pilot_first.errors[0])
        timings["pilot_s"] = time.perf_counter() - t0
        pwidth = choose_width(pilot_first.gauss, n_hidden)
        if pwidth.n_hidden == 0:
            pwidth = choose_width(pilot_first.gauss, 1)  # the full rows decide; a width of 1 plans the pass
        plan = SubspacePlan.build(pilot_first.gauss, subspace_basis(pilot_first.gauss.T2, pwidth.n_hidden))
        _check_leading_pass(folder, "joint", plan.key)
        t0 = time.perf_counter()
        state, report, errors = _reduce_first(
            source,
            runner,
            JOINT,
            plan,
            nonfinite=nonfinite,
            progress=progress,
            label="moments (one pass)",
            checkpoint=None if folder is None else folder.pass_checkpoint("joint", plan.key),
        )
        gstate, sstate = split_joint(state, plan) if state != 0 else (0, 0)
        first = _validate_first(
            gstate, plan.gauss_plan, report, errors, nonfinite, normality=pilot_first.gauss.normality
        )
        run_info.update({"pass1_reused_chunks": report.reused, "data_passes": 1, "pilot_chunks": len(pilot)})
        if first.errors:
            raise DataError(first.errors[0])
        timings["pass1_s"] = time.perf_counter() - t0
        width = _checked_width(first.gauss, n_hidden)
        sub = finalize_subspace(sstate, plan, first.gauss)
        sine = _span_sine(first.gauss, sub.basis, width.n_hidden) if width.n_hidden == plan.n_hidden else 1.0
        run_info["pilot_span_sine"] = sine
        keep, label = {f"joint-{plan.key}"}, "pass 2 (re-planned)"
        if width.n_hidden != plan.n_hidden or sine > PILOT_MAX_SIN:
            log.info(
                "the pilot's plan (width %d, span sine %.3g) does not match the full T_2 (width %d): "
                "a second pass in the full rows' subspace follows",
                plan.n_hidden,
                sine,
                width.n_hidden,
            )
            sub = None
    if sub is None:  # two passes, or a pilot the full rows overruled
        plan = SubspacePlan.build(first.gauss, subspace_basis(first.gauss.T2, width.n_hidden))
        t0 = time.perf_counter()
        sub, report2 = _subspace_pass(source, runner, plan, first.gauss, progress=progress, folder=folder, label=label)
        run_info.update({"data_passes": 2, "pass2_reused_chunks": report2.reused})
        timings["pass2_s"] = time.perf_counter() - t0
        keep.add(f"subspace-{plan.key}")
    if folder is not None:
        folder.prune(keep)
        log.info(
            "state %s: %s",
            folder.url,
            ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in run_info.items() if k.endswith("reused_chunks")),
        )
    return first, width, sub, run_info


def fit(
    data,
    y=None,
    *,
    n_hidden=None,
    x_name="x",
    y_name="y",
    client=None,
    scheduler=None,
    refine_model=True,
    refine_rows=DEFAULT_REFINE_ROWS,
    refine_rows_max=DEFAULT_REFINE_ROWS_MAX,
    refine_passes=False,
    refine_maxiter=3000,
    refine_target=None,
    random_state=0,
    chunk_rows=65536,
    storage_options=None,
    nonfinite="error",
    missing_chunks="error",
    state=None,
    two_pass=False,
    progress=True,
):
    """Learn ``f(x) = sum_i a_i relu(<w_i, x> + b_i) + <u, x> + c`` from samples.

    Parameters
    ----------
    data : str, path-like, ndarray or dask.array.Array
        A zarr store (path or URL) holding ``x`` and ``y``, or the inputs
        ``x`` of shape (n_samples, n_features).
    y : ndarray or dask.array.Array of shape (n_samples,), optional
        Labels, when ``data`` is an array.
    n_hidden : int, optional
        Number of units; estimated from the spectrum of ``T_2`` when omitted.
    x_name, y_name : str
        Array names inside the store.
    client : dask.distributed.Client, optional
        Cluster to run on.
    scheduler : str, optional
        A scheduler address (``"tcp://host:8786"``), ``"local"`` (a local
        cluster, the default for stores) or ``"synchronous"`` (this process).
    refine_model : bool
        Polish the moment estimate by L-BFGS on the squared loss.
    refine_rows : int
        Size of the in-memory refinement subsample (evenly spaced chunks).
    refine_rows_max : int
        When the first refinement leaves a residual that shows label noise,
        a second refinement runs on up to this many rows (and at most
        ``REFINE_MEMORY_BYTES`` of float64 inputs): the statistical error
        of the refined parameters shrinks like ``1 / rows``.
    refine_passes : bool
        Refine over whole streamed passes of the data instead of a subsample.
    refine_maxiter : int
        Iteration cap of the refinement.
    refine_target : float, optional
        Stop the refinement once the relative training MSE (mean squared
        error over ``Var(y)`` on the refinement rows) is at most this,
        instead of going on to convergence (on noiseless float32 data, to
        about 1e-16).
    random_state : int
        Seeds the random slices of the decomposition.
    chunk_rows : int
        Rows per chunk for numpy input.
    storage_options : dict, optional
        fsspec options for a store URL.
    nonfinite : {"error", "skip"}
        Rows holding NaN or infinity: fail naming the chunks, or drop them
        (the count is in ``diagnostics["data"]``).
    missing_chunks : {"error", "fill"}
        A chunk absent from storage: fail naming it, or read the fill value.
    state : str, optional
        A folder (path or fsspec URL) where the passes' progress persists
        (:mod:`stream_relu.checkpoint`): a rerun after a crash computes only
        the missing chunks, and a rerun after rows were appended computes
        the new chunks of pass 1 and pass 2 again; the result is bitwise the
        same as an uninterrupted fresh fit.  Stores only.
    two_pass : bool
        Read the data twice (pass 1 over every row, then the subspace pass)
        even when the store is large enough for one pass after a pilot (its
        leading chunks of ``PILOT_MIN_ROWS`` = 2^22 rows are at most half of
        it, about 2^23 rows or more): the default then reads the pilot,
        then every chunk once, and reads again only when the full ``T_2``
        disagrees with the pilot.
    progress : bool
        Report progress on stderr.

    Returns
    -------
    FitResult

    Raises
    ------
    InputError
        ``n_hidden`` larger than ``n_features`` or not positive.
    RecoveryError
        The moments do not support a decomposition.
    """
    t_start = time.perf_counter()
    if nonfinite not in NONFINITE_POLICIES:
        raise InputError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    source, store = _make_source(data, y, x_name, y_name, chunk_rows, storage_options, missing_chunks)
    d = source.n_features
    if n_hidden is not None:
        n_hidden = int(n_hidden)
        if n_hidden < 1:
            raise InputError(f"n_hidden (--hidden) must be a positive integer, got {n_hidden}")
        if n_hidden > d:
            raise InputError(
                f"--hidden {n_hidden} is larger than n_features = {d}: stream_relu 0.1 recovers at most "
                "as many units as there are features (m <= d; n_hidden in the Python API)"
            )
    rng = np.random.default_rng(random_state)
    timings = {}
    # BLAS pinned to one thread in the driver too: the recovery and the
    # refinement then give the same bits whatever the machine's core count.
    with open_runner(source, client, scheduler) as runner, threadpool_limits(limits=1, user_api="blas"):
        folder = None
        if state is not None:
            folder = _state_folder(state, store, nonfinite, missing_chunks, storage_options)
        first, width, sub, run_info = _moment_passes(
            source, runner, n_hidden, nonfinite=nonfinite, progress=progress, folder=folder, two_pass=two_pass,
            timings=timings,
        )
        gauss = first.gauss
        m = width.n_hidden
        t0 = time.perf_counter()
        try:
            est = recover(gauss, sub, rng=rng)
        except np.linalg.LinAlgError as exc:
            raise RecoveryError(f"the order-2 moment in the subspace is singular ({exc}); try a smaller --hidden") from None
        timings["recovery_s"] = time.perf_counter() - t0
        W_m, b_m, u_m, c_m, _ = canonical_flips(est.a, est.W, est.b, est.u, est.c)
        moment_params = Params(est.a, W_m, b_m, u_m, c_m)

        t0 = time.perf_counter()
        final_params, refinement, rows_used = _refinement(
            source,
            runner,
            gauss,
            moment_params,
            enabled=refine_model,
            rows=refine_rows,
            rows_max=refine_rows_max,
            passes=refine_passes,
            maxiter=refine_maxiter,
            target=refine_target,
        )
        timings["refinement_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    rows_used["moments"] = source.n_samples
    provenance = {
        "package_version": __version__,
        "store": store.identity() if store is not None else None,
        "rows_used": rows_used,
        "settings": {
            "n_hidden": n_hidden,
            "refine": bool(refine_model),
            "refine_rows": int(refine_rows),
            "refine_rows_max": int(refine_rows_max),
            "refine_passes": bool(refine_passes),
            "refine_maxiter": int(refine_maxiter),
            "refine_target": None if refine_target is None else float(refine_target),
            "two_pass": bool(two_pass),
            "x": x_name,
            "y": y_name,
        },
        "seeds": {"random_state": random_state if isinstance(random_state, (int, np.integer)) else repr(random_state)},
    }
    moment_model = _network(moment_params, gauss)
    warnings = first.warnings + _envelope_warnings(gauss, width, est, moment_model)
    for text in warnings:
        log.warning("%s", text)
    diagnostics = {
        "warnings": warnings,
        "data": {
            "nonfinite_rows_dropped": first.report.nonfinite_rows,
            "duplicate_chunks": first.report.duplicate_groups(),
            "normality": gauss.normality,
        },
        "n_samples": source.n_samples,
        "n_features": d,
        "input": {
            "mean_norm": float(np.linalg.norm(gauss.mean)),
            "cov_condition": float(gauss.cov_eigvals[-1] / gauss.cov_eigvals[0]),
        },
        "labels": {"mean": gauss.T0, "var": gauss.var_y, "residual_var_after_affine": gauss.residual_var},
        "width": {
            "chosen": m,
            "requested": width.requested,
            "n_above_threshold": width.n_above,
            "t2_spectrum": width.spectrum,
            "noise_floor": width.noise_floor,
            "threshold": width.threshold,
            "eigen_gaps": width.gaps,
        },
        "moments": {k: run_info[k] for k in ("data_passes", "pilot_chunks", "pilot_span_sine") if k in run_info},
        "n_units_returned": int(final_params.a.shape[0]),
        "recovery": est.diagnostics,
        "stages": refinement["stages"],
        "refinement_history": refinement["history"],
        "moment_estimate": {
            "a": moment_model.a,
            "W": moment_model.W,
            "b": moment_model.b,
            "u": moment_model.u,
            "c": moment_model.c,
        },
    }
    diagnostics = to_jsonable(diagnostics)
    model = _network(final_params, gauss, provenance=to_jsonable(provenance), diagnostics=diagnostics)
    return FitResult(model=model, moment_model=moment_model, diagnostics=diagnostics, timings=timings, run=run_info)


def _predict_chunk(source, index, model, out_spec):
    from .data import open_output_array

    x, _ = source.read(index)
    start = index * source.chunk_rows
    arr = open_output_array(out_spec)
    arr[start : start + x.shape[0]] = model.predict(x)
    return x.shape[0]


def predict_store(model, store, out, *, x_name="x", y_name="y", client=None, overwrite=False, storage_options=None):
    """Score a store out of core: write ``model.predict(x)`` to array ``y_pred`` of a new store.

    Parameters
    ----------
    model : ReluNetwork
        The model to evaluate.
    store : str
        Path or URL of the store holding ``x``.
    out : str
        Path or URL of the zarr group to create; it gets a float64 array
        ``y_pred`` chunked like ``x``'s rows, with a crc32c checksum.
    x_name, y_name : str
        Array names in the input store.
    client : dask.distributed.Client, optional
        Where to run; the local threaded scheduler when omitted.
    overwrite : bool
        Replace an existing store at ``out``.
    storage_options : dict, optional
        fsspec options for both URLs.

    Returns
    -------
    int
        Rows written.
    """
    import dask

    from .data import create_output_array

    spec = StoreSpec.make(os.fspath(store), x=x_name, y=y_name, storage_options=storage_options)
    opened = spec.open()
    if opened.n_features != model.n_features:
        raise InputError(
            f"the model has {model.n_features} features but x in {store!r} has {opened.n_features} columns"
        )
    source = StoreSource.from_store(opened)
    out_spec = create_output_array(
        os.fspath(out),
        "y_pred",
        n_samples=source.n_samples,
        chunk_rows=source.chunk_rows,
        overwrite=overwrite,
        storage_options=storage_options,
    )
    tasks = [dask.delayed(_predict_chunk, pure=False)(source, i, model, out_spec) for i in range(source.n_chunks)]
    counts = client.gather(client.compute(tasks)) if client is not None else dask.compute(*tasks, scheduler="threads")
    return int(sum(counts))


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check` found.

    Parameters
    ----------
    errors : list of str
        Problems that make a fit fail (or would make it wrong).
    warnings : list of str
        Problems a fit works around or reports.
    notes : list of str
        Conversions and facts about the store.
    stats : dict
        Rows, features, chunks, label variance, normality statistics, the
        T_2 spectrum and the width it suggests.
    """

    errors: list
    warnings: list
    notes: list
    stats: dict

    @property
    def ok(self):
        return not self.errors


def check(
    store,
    *,
    x_name="x",
    y_name="y",
    n_hidden=None,
    client=None,
    scheduler=None,
    storage_options=None,
    nonfinite="error",
    missing_chunks="error",
    progress=True,
):
    """Run every validation of :func:`fit` over a store without fitting.

    Reads every chunk once (pass 1): format checks, unreadable chunks
    (checksum failures, chunks missing from storage), non-finite values,
    duplicated chunks, singular covariance (constant or collinear columns),
    constant labels, non-Gaussian inputs, and the rows needed for the width
    given or suggested by the ``T_2`` spectrum.

    Parameters
    ----------
    store : str
        Path or URL of the store.
    x_name, y_name, storage_options, client, scheduler, nonfinite, missing_chunks, progress
        As for :func:`fit`.
    n_hidden : int, optional
        The width you intend to fit (for the rows-needed estimate).

    Returns
    -------
    CheckReport

    Raises
    ------
    StoreNotFoundError, StoreFormatError
        When the store cannot be opened as a sample store at all.
    """
    source, opened = _make_source(store, None, x_name, y_name, 65536, storage_options, missing_chunks)
    with open_runner(source, client, scheduler) as runner, threadpool_limits(limits=1, user_api="blas"):
        first = _first_pass(source, runner, nonfinite=nonfinite, progress=progress, collect_errors=True)
    warnings = list(first.warnings)
    stats = {
        "n_samples": source.n_samples,
        "n_features": source.n_features,
        "n_chunks": source.n_chunks,
        "chunk_rows": source.chunk_rows,
        "nonfinite_rows": first.report.nonfinite_rows,
    }
    gauss = first.gauss
    if gauss is not None and not first.errors:
        width = choose_width(gauss, n_hidden)
        stats.update(
            {
                "label_variance": gauss.var_y,
                "cov_condition": float(gauss.cov_eigvals[-1] / gauss.cov_eigvals[0]),
                "normality": gauss.normality,
                "t2_spectrum_top": np.abs(width.spectrum[: min(source.n_features, width.n_above + 3)]).tolist(),
                "t2_threshold": width.threshold,
                "suggested_width": width.n_above,
            }
        )
        if width.n_hidden > source.n_features:
            first.errors.append(f"--hidden {width.n_hidden} is larger than n_features = {source.n_features}")
        else:
            warnings += _data_warnings(gauss, width)
    return CheckReport(errors=first.errors, warnings=warnings, notes=list(opened.notes), stats=to_jsonable(stats))
