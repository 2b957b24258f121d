"""The public pipeline: data -> moments -> decomposition -> recovery -> refinement -> model.

:func:`fit` is a short composition of typed stages: settings parsed once
(:mod:`stream_relu.settings`), the input opened as a chunk source, the
moment passes (:mod:`stream_relu.passes`), recovery and refinement
(:mod:`stream_relu.stages`), and the diagnostics
(:mod:`stream_relu.diagnostics`).  It accepts a zarr store (path or URL),
numpy arrays, or dask arrays, and runs the same kernels on each:

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
from .diagnostics import FitDiagnostics, data_warnings, envelope_warnings, width_warnings
from .engine import (
    ArraySource,
    ChunkOptions,
    DaskArraySource,
    StoreSource,
    is_dask_array,
    open_client,
    open_runner,
    reduce_chunks,
)
from .errors import DataError, InputError, StoreFormatError
from .moments import GAUSS, AffineFit, affine_least_squares
from .network import ReluNetwork, to_jsonable
from .passes import PassContext, first_pass, first_plan, moment_passes, state_folder, width_of
from .settings import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_REFINE_MAXITER,
    DEFAULT_REFINE_PASSES,
    DEFAULT_REFINE_ROWS,
    DEFAULT_REFINE_ROWS_MAX,
    DataPolicy,
    FitSettings,
    RefineSettings,
    check_n_hidden,
)
from .refine import Params
from .stages import MomentStage, recover_stage, refinement_stage

__all__ = ["FitResult", "fit", "predict_store", "CheckReport", "check", "open_input", "Input", "affine_fit"]

log = logging.getLogger("stream_relu")


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


@dataclass(frozen=True)
class Input:
    """The data of a fit as a chunk source, and the store behind it.

    Parameters
    ----------
    source : StoreSource, ArraySource or DaskArraySource
        The chunks.
    store : SampleStore, optional
        The opened store (None for arrays).
    """

    source: object
    store: object = None


def _store_input(data, y, policy):
    if y is not None:
        raise InputError("y must not be given when fitting a store (the store holds y)")
    spec = StoreSpec.make(
        os.fspath(data),
        x=policy.x_name,
        y=policy.y_name,
        storage_options=policy.storage_options,
        missing_chunks=policy.missing_chunks,
    )
    store = spec.open()
    for note in store.notes:
        log.warning("%s", note)
    return Input(StoreSource.from_store(store), store)


def _column(y):
    return y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y


def _check_arrays(x, y):
    if any(np.isnan(s) for s in (*x.shape, *y.shape)):
        raise StoreFormatError("dask arrays with unknown chunk sizes: call compute_chunk_sizes() first")
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise StoreFormatError(
            f"expected x of shape (n_samples, n_features) and y of shape (n_samples,); got {x.shape} and {y.shape}"
        )
    if x.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
        raise StoreFormatError(f"x and y must be real numbers; got dtypes {x.dtype} and {y.dtype}")


def open_input(data, y=None, policy=DataPolicy()):
    """The data of a fit as a chunk source: a store path or URL, numpy arrays, or dask arrays.

    Parameters
    ----------
    data : str, path-like, ndarray or dask.array.Array
        A store, or the inputs ``x`` of shape (n_samples, n_features).
    y : ndarray or dask.array.Array of shape (n_samples,), optional
        Labels, when ``data`` is an array.
    policy : DataPolicy
        Array names, chunk rows for numpy input, storage options, missing chunks.

    Returns
    -------
    Input
        The chunk source and the opened store (None for arrays).

    Raises
    ------
    InputError
        ``y`` given with a store, or missing with arrays.
    StoreFormatError
        Shapes or dtypes that are not ``x`` (n, d) and ``y`` (n,) of real numbers.
    """
    if isinstance(data, (str, os.PathLike)):
        return _store_input(data, y, policy)
    if y is None:
        raise InputError("y is required when x is an array")
    if is_dask_array(data) or is_dask_array(y):
        import dask.array as da

        dx, dy = da.asarray(data), _column(da.asarray(y))
        _check_arrays(dx, dy)
        return Input(DaskArraySource(dx, dy))
    x, y = np.asarray(data), _column(np.asarray(y))
    _check_arrays(x, y)
    return Input(ArraySource(x, y, policy.chunk_rows))


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
    refine_passes=DEFAULT_REFINE_PASSES,
    refine_maxiter=DEFAULT_REFINE_MAXITER,
    refine_target=None,
    random_state=0,
    chunk_rows=DEFAULT_CHUNK_ROWS,
    storage_options=None,
    nonfinite="error",
    missing_chunks="error",
    state=None,
    two_pass=False,
    progress=True,
    local_cluster=None,
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
    refine_passes : int
        At most this many passes of Newton steps over every row after the
        in-memory refinement, when its residual shows label noise and the
        store holds more rows than it read (:func:`stages.full_data_passes
        <stream_relu.stages.full_data_passes>`: gradients over every row,
        curvature of the in-memory rows; usually 2 or 3 passes).  0 keeps
        the in-memory estimate.  Noiseless fits make none.
    refine_maxiter : int
        Iteration cap of each in-memory refinement run.
    refine_target : float, optional
        Stop the refinement once the relative training MSE (mean squared
        error over ``Var(y)`` on the refinement rows) is at most this,
        instead of going on to convergence (on noiseless float32 data, to
        about 1e-16); no full-data pass follows then.
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
    local_cluster : LocalClusterSettings, optional
        Size of the local cluster started when neither ``client`` nor
        ``scheduler`` says where to run (default: dask config
        ``stream-relu.local-cluster.*``, else one single-threaded worker per core).

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
    policy = DataPolicy(x_name, y_name, chunk_rows, storage_options, nonfinite, missing_chunks)
    how = RefineSettings(refine_model, refine_rows, refine_rows_max, refine_passes, refine_maxiter, refine_target)
    inputs = open_input(data, y, policy)
    n_hidden = check_n_hidden(n_hidden, inputs.source.n_features)
    request = FitSettings(n_hidden, policy, how, two_pass, random_state)
    rng = np.random.default_rng(random_state)
    # BLAS pinned to one thread in the driver too: the recovery and the
    # refinement then give the same bits whatever the machine's core count.
    runner_cm = open_runner(inputs.source, client, scheduler, local_cluster)
    with runner_cm as runner, threadpool_limits(limits=1, user_api="blas"):
        folder = None if state is None else state_folder(state, inputs.store, policy)
        passes = moment_passes(PassContext(inputs.source, runner, folder, progress, nonfinite), n_hidden, two_pass=two_pass)
        timings = dict(passes.timings)
        t0 = time.perf_counter()
        moment = _moment_stage(passes, rng)
        timings["recovery_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        search = not passes.width.requested
        refinement = refinement_stage(inputs.source, runner, passes.first.gauss, moment.params, how, progress, search, folder)
        timings["refinement_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    return _fit_result(inputs, request, passes, moment, refinement, timings)


def _moment_stage(passes, rng):
    """The moment estimate: the recovered units, or the affine model when the width is 0."""
    gauss = passes.first.gauss
    if passes.width.n_hidden == 0:
        d = gauss.n_features
        return MomentStage(Params(np.zeros(0), np.zeros((d, 0)), np.zeros(0), gauss.T1.copy(), float(gauss.T0)), None)
    log.info("decomposing the moments (%d units)", passes.width.n_hidden)
    t0 = time.perf_counter()
    moment = recover_stage(gauss, passes.sub, rng)
    log.info("recovered %d units in %.1f s", moment.params.n_hidden, time.perf_counter() - t0)
    return moment


def _fit_result(inputs, request, passes, moment, refinement, timings):
    """Assemble the model, its provenance and diagnostics, and log the warnings."""
    gauss = passes.first.gauss
    provenance = {
        "package_version": __version__,
        "store": inputs.store.identity() if inputs.store is not None else None,
        "rows_used": {"refinement": refinement.rows_used, "moments": inputs.source.n_samples},
        **request.provenance(),
    }
    moment_model = ReluNetwork.from_params(moment.params, gauss)
    width = passes.width
    if not width.requested:
        width = replace(width, n_hidden=refinement.params.n_hidden, residual=refinement.looks)
    warnings = passes.first.warnings + width_warnings(width, refinement.params.n_hidden)
    warnings += envelope_warnings(gauss, width, moment.estimate, moment_model)
    for text in warnings:
        log.warning("%s", text)
    run = dict(passes.run)
    run["data_passes"] += refinement.stages.get("width_search", {}).get("residual_passes", 0)
    run["refine_passes"] = refinement.stages.get("full_data", {}).get("passes", 0)
    run["refine_reused_chunks"] = refinement.reused_chunks
    run["data_passes"] += run["refine_passes"]
    diagnostics = FitDiagnostics(
        warnings=warnings,
        n_samples=inputs.source.n_samples,
        gauss=gauss,
        nonfinite_rows=passes.first.report.nonfinite_rows,
        duplicate_chunks=passes.first.report.duplicate_groups(),
        width=width,
        moments={k: run[k] for k in ("data_passes", "pilot_chunks", "pilot_span_sine") if k in run},
        recovery=moment.estimate.diagnostics if moment.estimate is not None else {},
        refinement=refinement,
        moment_model=moment_model,
        n_units=int(refinement.params.a.shape[0]),
    ).to_dict()
    model = ReluNetwork.from_params(
        refinement.params, gauss, provenance=to_jsonable(provenance), diagnostics=diagnostics, stderr=refinement.stderr
    )
    return FitResult(model=model, moment_model=moment_model, diagnostics=diagnostics, timings=timings, run=run)


def affine_fit(data, y=None, *, policy=DataPolicy(), client=None, scheduler=None):
    """Least squares of ``y`` on ``[x, 1]`` from one pass of moment sums (the centred normal equations).

    The affine model of data that support no recovery.

    Parameters
    ----------
    data : str, path-like, ndarray or dask.array.Array
        What :func:`fit` takes.
    y : ndarray or dask.array.Array, optional
        Labels, when ``data`` is an array.
    policy : DataPolicy
        How rows are read (non-finite rows, chunking, array names).
    client : dask.distributed.Client, optional
        Cluster to run on.
    scheduler : str, optional
        As for :func:`fit`.

    Returns
    -------
    AffineFit
        ``coef``, ``intercept`` and ``n_rows`` (singular values of the
        covariance below ``1e-10`` of the largest are cut off).

    Raises
    ------
    DataError
        NaN or infinity with ``policy.nonfinite == "error"``, unreadable chunks.
    """
    source = open_input(data, y, policy).source
    with open_runner(source, client, scheduler) as runner, threadpool_limits(limits=1, user_api="blas"):
        red = reduce_chunks(source, GAUSS, None, runner, options=ChunkOptions(nonfinite=policy.nonfinite))
    if red.state == 0:
        return AffineFit(np.zeros(source.n_features), 0.0, 0)
    return affine_least_squares(red.state)


def _predictions(source, index, model, check_finite):
    x, _ = source.read(index)
    if check_finite and not np.isfinite(x).all():
        raise DataError(f"x holds NaN or infinity in {source.describe(index)}")
    return model.predict(x)


def _predict_chunk(source, index, model, out_spec, check_finite):
    from .data import open_output_array

    pred = _predictions(source, index, model, check_finite)
    start = index * source.chunk_rows
    open_output_array(out_spec)[start : start + pred.shape[0]] = pred
    return pred.shape[0]


def predict_store(
    model,
    store,
    out=None,
    *,
    x_name="x",
    y_name="y",
    client=None,
    overwrite=False,
    storage_options=None,
    nonfinite="propagate",
    scheduler=None,
    local_cluster=None,
):
    """Score a store out of core: ``model.predict(x)`` chunk by chunk, into array ``y_pred`` of a new store.

    Parameters
    ----------
    model : ReluNetwork
        The model to evaluate.
    store : str
        Path or URL of the store holding ``x``.
    out : str, optional
        Path or URL of the zarr group to create; it gets a float64 array
        ``y_pred`` chunked like ``x``'s rows, with a crc32c checksum.  When
        None, the predictions are returned as a numpy array instead (they
        must fit in memory).
    x_name, y_name : str
        Array names in the input store.
    client : dask.distributed.Client, optional
        Where to run.
    overwrite : bool
        Replace an existing store at ``out``.
    storage_options : dict, optional
        fsspec options for both URLs.
    nonfinite : {"propagate", "error"}
        Rows of ``x`` holding NaN or infinity: predict NaN for them, or
        raise :class:`~stream_relu.DataError` naming the chunk.
    scheduler : str, optional
        Without ``client``: dask's threads in this process (None, the
        default), ``"synchronous"``, ``"local"`` (a local cluster) or a
        scheduler address.
    local_cluster : LocalClusterSettings, optional
        Size of the local cluster for ``scheduler="local"``.

    Returns
    -------
    int or ndarray
        Rows written, or the predictions when ``out`` is None.
    """
    import dask

    if nonfinite not in ("propagate", "error"):
        raise InputError(f"nonfinite must be 'propagate' or 'error', got {nonfinite!r}")
    spec = StoreSpec.make(os.fspath(store), x=x_name, y=y_name, storage_options=storage_options)
    opened = spec.open()
    if opened.n_features != model.n_features:
        raise InputError(
            f"the model has {model.n_features} features but x in {store!r} has {opened.n_features} columns"
        )
    source = StoreSource.from_store(opened)
    check_finite = nonfinite == "error"
    if out is None:
        tasks = [dask.delayed(_predictions, pure=False)(source, i, model, check_finite) for i in range(source.n_chunks)]
    else:
        out_spec = _output_array(out, source, overwrite, storage_options)
        tasks = [
            dask.delayed(_predict_chunk, pure=False)(source, i, model, out_spec, check_finite)
            for i in range(source.n_chunks)
        ]
    with open_client(client, scheduler, local_cluster) as c:
        if c is not None:
            results = c.gather(c.compute(tasks))
        else:
            results = dask.compute(*tasks, scheduler="synchronous" if scheduler == "synchronous" else "threads")
    if out is None:
        return np.concatenate(results) if results else np.zeros(0)
    return int(sum(results))


def _output_array(out, source, overwrite, storage_options):
    from .data import create_output_array

    return create_output_array(
        os.fspath(out),
        "y_pred",
        n_samples=source.n_samples,
        chunk_rows=source.chunk_rows,
        overwrite=overwrite,
        storage_options=storage_options,
    )


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
    local_cluster=None,
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
    x_name, y_name, storage_options, client, scheduler, nonfinite, missing_chunks, progress, local_cluster
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
    policy = DataPolicy(x_name, y_name, DEFAULT_CHUNK_ROWS, storage_options, nonfinite, missing_chunks)
    inputs = open_input(store, None, policy)
    source, opened = inputs.source, inputs.store
    with open_runner(source, client, scheduler, local_cluster) as runner, threadpool_limits(limits=1, user_api="blas"):
        ctx = PassContext(source, runner, None, progress, nonfinite)
        first = first_pass(ctx, collect_errors=True, gplan=first_plan(source, n_hidden))
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
        width = width_of(gauss, n_hidden)
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
        if not width.requested and width.candidates:
            stats["width_rule"] = width.rule
            stats["width_candidates"] = [c.as_dict() for c in width.candidates]
        if width.n_hidden > source.n_features:
            first.errors.append(f"--hidden {width.n_hidden} is larger than n_features = {source.n_features}")
        else:
            warnings += data_warnings(gauss, width)
    return CheckReport(errors=first.errors, warnings=warnings, notes=list(opened.notes), stats=to_jsonable(stats))
