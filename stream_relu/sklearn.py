"""A scikit-learn regressor over stream_relu's method of moments.

:class:`ReluNetworkRegressor` fits
``f(x) = sum_i a_i relu(<w_i, x> + b_i) + <u, x> + c`` with
:func:`stream_relu.fit` and follows the scikit-learn estimator contract
(``get_params``/``set_params``, ``clone``, fitted attributes ending in
``_``, input validation, ``score`` as R^2).  It accepts what
:func:`stream_relu.fit` accepts: numpy arrays (fitted in this process), dask
arrays (on the active dask scheduler or a given one) and zarr store paths.
:meth:`ReluNetworkRegressor.partial_fit` learns from a sequence of batches
by merging the moment states of :mod:`stream_relu.moments`.

This module needs scikit-learn (>= 1.6); ``import stream_relu`` does not
import it.
"""

from __future__ import annotations

import numbers
import os
import warnings
from dataclasses import dataclass, replace

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, validate_data
from threadpoolctl import threadpool_limits

from .api import fit as _stream_fit
from .data import open_store
from .engine import (
    NONFINITE_POLICIES,
    ArraySource,
    ChunkOptions,
    DaskArraySource,
    StoreSource,
    is_dask_array,
    open_runner,
    reduce_chunks,
)
from .errors import DataError, RecoveryError
from .moments import GAUSS, SUBSPACE, SubspacePlan, finalize_gauss, finalize_subspace
from .network import ReluNetwork, to_jsonable
from .recovery import canonical_flips, choose_width, recover, subspace_basis
from .refine import InMemoryObjective, Params
from .refine import refine as _refine_params

__all__ = ["ReluNetworkRegressor", "FallbackWarning"]

# Relative cutoff on the singular values of the covariance in the affine
# fallback from moment sums (the threshold under which finalize_gauss calls
# the covariance singular).
_AFFINE_RCOND = 1e-10
_CONSTANT_Y_RTOL = 1e-14  # the constant-label test of stream_relu.fit
_REFINE_MAXITER = 3000  # stream_relu.fit's default iteration cap of the refinement


class FallbackWarning(UserWarning):
    """The moments did not support a recovery; an affine model was fitted instead."""


def _is_path(obj):
    return isinstance(obj, (str, os.PathLike))


def _default_client():
    """dask.distributed's current default client, or None when there is none."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _seed(random_state):
    """An int seed for :func:`stream_relu.fit` from a scikit-learn style ``random_state``."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be a non-negative integer, got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    raise ValueError(
        "random_state must be None, a non-negative int, a numpy.random.RandomState or a "
        f"numpy.random.Generator, got {random_state!r}"
    )


def _affine_lstsq(X, y):
    """Least squares of ``y`` on ``[X, 1]`` over the finite rows.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)

    Returns
    -------
    u : ndarray of shape (n_features,)
    c : float
    n_rows : int
        Rows used (those without NaN or infinity).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    good = np.isfinite(y) & np.isfinite(X).all(axis=1)
    X, y = X[good], y[good]
    design = np.column_stack([X, np.ones(X.shape[0])])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coef[:-1], float(coef[-1]), int(y.shape[0])


def _affine_from_state(state):
    """Least squares of ``y`` on ``[x, 1]`` from a merged pass-1 state (the normal equations, centred).

    Parameters
    ----------
    state : MomentState
        A ``gauss`` state (:func:`stream_relu.moments.gauss_chunk` sums).

    Returns
    -------
    u : ndarray of shape (n_features,)
    c : float
    n_rows : int
    """
    n = state.count
    s = state.sums
    mean = s["x"] / n
    ybar = float(s["y"]) / n
    cov = s["xx"] / n - np.outer(mean, mean)
    cov = 0.5 * (cov + cov.T)
    cross = s["yx"] / n - mean * ybar
    u, *_ = np.linalg.lstsq(cov, cross, rcond=_AFFINE_RCOND)
    return u, ybar - float(mean @ u), n


def _refreshed_affine_moments(plan_gauss, merged):
    """``plan_gauss`` with ``T_0``, ``T_1`` and ``Var(y)`` re-estimated from every row of ``merged``.

    ``T_1 = A (E[y x] - mu E[y])`` in the plan's whitening ``(mu, A)``, so
    that it lives in the same coordinates as the plan's subspace moments.
    """
    n = merged.count
    s = merged.sums
    ybar = float(s["y"]) / n
    T1 = plan_gauss.whitener @ (s["yx"] / n - plan_gauss.mean * ybar)
    var_y = max(float(s["yy"]) / n - ybar * ybar, 0.0)
    return replace(plan_gauss, T0=ybar, T1=T1, var_y=var_y)


@dataclass(frozen=True)
class _PartialState:
    """What :meth:`ReluNetworkRegressor.partial_fit` carries from one call to the next.

    Attributes
    ----------
    gauss_state : MomentState
        Pass-1 sums over every batch seen.
    plan : SubspacePlan or None
        The current pass-2 plan (None while the data support no recovery).
    plan_gauss : GaussMoments or None
        The pass-1 moments the plan was built from.
    sub_state : MomentState or int
        Pass-2 sums under ``plan`` over the batches since the plan was made
        (``0`` when there is no plan).
    width : dict or None
        The width choice made with the plan.
    n_calls : int
    plan_calls : tuple of int
        The calls (counted from 1) that made a new plan.
    """

    gauss_state: object
    plan: object
    plan_gauss: object
    sub_state: object
    width: object
    n_calls: int
    plan_calls: tuple


class ReluNetworkRegressor(RegressorMixin, BaseEstimator):
    """Depth-2 ReLU network with biases, learned by the method of moments.

    Fits ``f(x) = sum_i a_i relu(<w_i, x> + b_i) + <u, x> + c`` with
    :func:`stream_relu.fit`: Hermite moments of orders 0-4 are accumulated
    in mergeable chunk states, decomposed into the units, and the estimate
    is refined by L-BFGS on the squared loss.

    Parameters
    ----------
    n_hidden : int, optional
        Number of units ``m`` (at most ``n_features``).  When None, the
        number of eigenvalues of ``T_2`` above the noise floor.
    random_state : int, numpy.random.RandomState, numpy.random.Generator or None, default=0
        Seeds the random slices of the decomposition.  None draws a fresh
        seed at every fit.
    refine : bool, default=True
        Polish the moment estimate by L-BFGS on the squared loss.
    refine_rows : int, default=250_000
        Rows of the in-memory refinement subsample.
    chunk_rows : int, default=65536
        Rows per chunk for numpy input.
    scheduler : str, optional
        Where dask arrays and stores are processed: a scheduler address
        (``"tcp://host:8786"``), ``"synchronous"`` (this process) or
        ``"local"`` (a local cluster for stores, the active dask scheduler
        for dask arrays).  None: dask.distributed's current default client
        when one exists, else the defaults of :func:`stream_relu.fit`
        (a local cluster for stores, the active dask scheduler for dask
        arrays).  numpy input always runs in this process.
    nonfinite : {"error", "skip"}, default="error"
        Rows holding NaN or infinity: refuse them (``ValueError``), or drop
        them from the fit (their predictions are NaN).
    progress : bool, default=False
        Report progress of the passes on stderr.

    Attributes
    ----------
    model_ : ReluNetwork
        The fitted network (its ``diagnostics`` and ``provenance`` as
        :func:`stream_relu.fit` fills them).
    a_ : ndarray of shape (n_hidden_,)
        Output weights.
    W_ : ndarray of shape (n_features_in_, n_hidden_)
        Column ``i`` is the unit vector ``w_i``.
    b_ : ndarray of shape (n_hidden_,)
        Biases.
    u_ : ndarray of shape (n_features_in_,)
        Linear part of the affine term.
    c_ : float
        Constant of the affine term.
    n_hidden_ : int
        Units in the fitted model (0 for an affine model).
    diagnostics_ : dict
        :attr:`stream_relu.FitResult.diagnostics`, plus ``"fallback"``
        (None, or why an affine model was fitted) and, after
        :meth:`partial_fit`, ``"partial_fit"`` (the state of the merged
        passes).
    n_features_in_ : int
        Number of features seen in :meth:`fit` or the first :meth:`partial_fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when ``X`` was a data frame with string column names.

    See Also
    --------
    stream_relu.fit : the pipeline this estimator runs.

    Notes
    -----
    **Input.**  ``X`` is a numpy array (or anything ``numpy.asarray``
    takes; validated as scikit-learn does: 2-D, numeric, finite unless
    ``nonfinite="skip"``, ``y`` 1-D), a dask array (with ``y`` a dask
    array; validated by shape and dtype only, values are checked as the
    chunks are read), or a zarr store path (``str`` or ``os.PathLike``,
    arrays ``x`` and ``y``; ``y`` must then be None).

    **Small or degenerate data.**  The moment method needs many rows,
    about ``2000 * n_features * m`` for the accuracy stated in the README,
    and Gaussian inputs.  When :func:`stream_relu.fit` raises
    :class:`~stream_relu.RecoveryError` or :class:`~stream_relu.DataError`
    because the moments cannot support a recovery (no eigenvalue of ``T_2``
    above the noise floor, a singular covariance of ``x`` from too few rows
    or collinear columns, constant labels, a singular order-2 moment in
    the subspace), the estimator fits an affine model instead: least
    squares of ``y`` on ``[X, 1]`` (``numpy.linalg.lstsq``) for numpy input;
    for dask arrays and stores, the same least squares from one more pass
    of moment sums (the centred normal equations, singular values below
    ``1e-10`` of the largest cut off).  It then sets ``n_hidden_ = 0``,
    records the reason in ``diagnostics_["fallback"]`` and emits a
    :class:`FallbackWarning` (a ``UserWarning``).  Invalid input still
    raises ``ValueError``: NaN or infinity with ``nonfinite="error"``
    (for dask arrays and stores the extra pass meets them again and raises
    :class:`~stream_relu.DataError`, a ``ValueError``), wrong shapes, fewer than
    2 samples, ``n_hidden`` larger than ``n_features``.  A requested
    ``n_hidden`` on few rows is not a fallback case: the estimate is
    returned, with the library's warning in ``diagnostics_["warnings"]``
    (and on the ``stream_relu`` logger).

    **Incremental learning.**  :meth:`partial_fit` keeps two merged moment
    states.  The pass-1 state (:func:`~stream_relu.moments.gauss_chunk`
    sums: mean, covariance, ``T_0``, ``T_1``, ``T_2``) covers every batch.
    The pass-2 state (:func:`~stream_relu.moments.subspace_chunk` sums
    under a :class:`~stream_relu.moments.SubspacePlan`) needs a plan, and a
    plan needs the pass-1 moments: on the first call, and whenever the rows
    seen have at least doubled since the current plan was made, the plan
    is rebuilt from the merged pass-1 moments and the pass-2 state restarts
    from the current batch.  Batches before a re-plan no longer contribute
    to pass 2 (their rows are not kept).  So the plan always rests on more
    than half of the rows seen, and pass 2 covers the batch that triggered
    the plan and every batch since, which right after a re-plan is only
    the latest batch: with equal batches, plans are made at calls 1, 2, 4,
    8, ... and after call ``k`` pass 2 covers batches ``2^floor(log2 k)``
    to ``k`` (after call 4 only batch 4, after call 7 batches 4 to 7).
    After each call the model is recovered from the two states (width
    from the plan, :func:`~stream_relu.recovery.recover` with ``T_0``,
    ``T_1`` re-estimated from every row in the plan's whitening,
    :func:`~stream_relu.recovery.canonical_flips`), refined on up to
    ``refine_rows`` evenly spaced rows of the latest batch when ``refine``
    is true and the model has units, and mapped to ``x`` coordinates.
    Batches much smaller than ``2000 * n_features * m`` rows make a noisy
    refinement set; ``refine=False`` then keeps the moment estimate.
    ``diagnostics_["partial_fit"]`` counts the calls, rows and plans
    (``n_calls``, ``rows_seen``, ``plan_calls``, ``n_plans``,
    ``plan_rows``, ``pass2_rows``, ``plan_key``, ``replanned``).  The same
    affine fallback applies, from the merged pass-1 state; a single row
    gives a constant model.  The first call fixes ``n_features_in_``;
    :meth:`fit` discards the incremental state, so a later
    :meth:`partial_fit` starts afresh.

    **Prediction.**  :meth:`predict` returns a numpy array for numpy input
    and a lazy dask array for a dask array; a store path is read chunk by
    chunk (array ``x``; the store must be a sample store, its ``y`` is not
    used) and a numpy array of predictions is returned.
    """

    def __init__(
        self,
        n_hidden=None,
        *,
        random_state=0,
        refine=True,
        refine_rows=250_000,
        chunk_rows=65536,
        scheduler=None,
        nonfinite="error",
        progress=False,
    ):
        self.n_hidden = n_hidden
        self.random_state = random_state
        self.refine = refine
        self.refine_rows = refine_rows
        self.chunk_rows = chunk_rows
        self.scheduler = scheduler
        self.nonfinite = nonfinite
        self.progress = progress

    # ------------------------------------------------------------------ checks

    def _check_params(self):
        n = self.n_hidden
        if n is not None and (not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1):
            raise ValueError(f"n_hidden must be None or a positive integer, got {n!r}")
        for name in ("refine_rows", "chunk_rows"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {self.nonfinite!r}")
        if self.scheduler is not None and not isinstance(self.scheduler, str):
            raise ValueError(
                "scheduler must be None, 'synchronous', 'local' or a scheduler address string, "
                f"got {type(self.scheduler).__name__}"
            )
        if not isinstance(self.refine, (bool, np.bool_)):
            raise ValueError(f"refine must be a bool, got {self.refine!r}")

    def _check_width(self, n_features):
        if self.n_hidden is not None and self.n_hidden > n_features:
            raise ValueError(
                f"n_hidden={self.n_hidden} is larger than n_features={n_features}: the moment method "
                "recovers at most as many units as there are features"
            )
        return None if self.n_hidden is None else int(self.n_hidden)

    def _validate_xy(self, X, y, *, reset, min_samples):
        """Validate numpy-like ``X``, ``y`` (scikit-learn conventions) and set or check the features."""
        finite = self.nonfinite == "error"
        X, y = validate_data(
            self,
            X,
            y,
            reset=reset,
            validate_separately=(
                {"dtype": (np.float64, np.float32), "ensure_all_finite": finite, "ensure_min_samples": min_samples},
                {"dtype": np.float64, "ensure_2d": False, "ensure_all_finite": finite},
            ),
        )
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        return X, y

    def _check_dask(self, X, y, *, reset, min_samples):
        """Check dask ``X``, ``y`` by shape and dtype; set or check ``n_features_in_``."""
        import dask.array as da

        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, but the target y is None.")
        X = da.asarray(X)
        y = da.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected; it is read as a vector.",
                DataConversionWarning,
                stacklevel=3,
            )
            y = y[:, 0]
        if X.ndim != 2:
            raise ValueError(f"Expected a 2-D dask array X of shape (n_samples, n_features), got shape {X.shape}")
        if y.ndim != 1:
            raise ValueError(f"y should be a 1d array, got an array of shape {y.shape} instead.")
        if any(np.isnan(s) for s in (*X.shape, *y.shape)):
            raise ValueError("dask arrays with unknown chunk sizes: call compute_chunk_sizes() first")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X and y have different numbers of rows: {X.shape[0]} and {y.shape[0]}")
        if X.shape[0] < min_samples:
            raise ValueError(
                f"Found array with {X.shape[0]} sample(s) while a minimum of {min_samples} is required "
                f"by {type(self).__name__}."
            )
        if X.shape[1] < 1:
            raise ValueError("Found array with 0 feature(s) while a minimum of 1 is required.")
        if X.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
            raise ValueError(f"X and y must hold real numbers; got dtypes {X.dtype} and {y.dtype}")
        self._set_or_check_features(int(X.shape[1]), reset)
        return X, y

    def _set_or_check_features(self, n_features, reset):
        if reset:
            self.n_features_in_ = n_features
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )

    # ----------------------------------------------------------------- runners

    def _client(self, numpy_input):
        return None if numpy_input or self.scheduler is not None else _default_client()

    # --------------------------------------------------------------------- fit

    def fit(self, X, y=None):
        """Learn the network from samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask.array.Array or str or os.PathLike
            Inputs, or the path of a zarr store holding arrays ``x`` and ``y``.
        y : array-like or dask.array.Array of shape (n_samples,), optional
            Labels; required for arrays, must be None for a store path.

        Returns
        -------
        self : ReluNetworkRegressor
            The fitted estimator.

        Raises
        ------
        ValueError
            Invalid parameters or input (see the class Notes).
        stream_relu.StoreNotFoundError, stream_relu.StoreFormatError
            A store path that is not a readable sample store.
        """
        self._check_params()
        self._partial = None
        seed = _seed(self.random_state)
        if _is_path(X):
            if y is not None:
                raise ValueError("y must be None when X is a store path: the store holds y")
            path = os.fspath(X)
            store = open_store(path)
            self._set_or_check_features(store.n_features, reset=True)
            n_hidden = self._check_width(store.n_features)
            client = self._client(False)
            result, exc = self._call_fit(path, None, n_hidden, client, seed)
            if exc is not None:
                source = StoreSource.from_store(store)
                return self._fallback_from_pass(source, client, exc)
        elif is_dask_array(X) or is_dask_array(y):
            X, y = self._check_dask(X, y, reset=True, min_samples=2)
            n_hidden = self._check_width(X.shape[1])
            client = self._client(False)
            result, exc = self._call_fit(X, y, n_hidden, client, seed)
            if exc is not None:
                return self._fallback_from_pass(DaskArraySource(X, y), client, exc)
        else:
            X, y = self._validate_xy(X, y, reset=True, min_samples=2)
            n_hidden = self._check_width(X.shape[1])
            result, exc = self._call_fit(X, y, n_hidden, None, seed)
            if exc is not None:
                u, c, n_rows = _affine_lstsq(X, y)
                if n_rows < 2:
                    raise ValueError(
                        f"only {n_rows} sample(s) without NaN or infinity; a minimum of 2 is required"
                    ) from exc
                return self._set_affine(u, c, n_rows, exc, "least squares of y on [X, 1] (numpy.linalg.lstsq)")
        model = result.model
        if not all(np.isfinite(v).all() for v in (model.a, model.W, model.b, model.u, model.c)):
            raise ValueError("the fitted parameters are not finite (values of x or y too large?)")
        self._set_model(model, {**result.diagnostics, "fallback": None})
        return self

    def _call_fit(self, data, y, n_hidden, client, seed):
        """Run :func:`stream_relu.fit`; returns ``(result, None)`` or ``(None, error)`` for the fallback cases."""
        try:
            result = _stream_fit(
                data,
                y,
                n_hidden=n_hidden,
                client=client,
                scheduler=self.scheduler,
                refine_model=bool(self.refine),
                refine_rows=int(self.refine_rows),
                random_state=seed,
                chunk_rows=int(self.chunk_rows),
                nonfinite=self.nonfinite,
                progress=bool(self.progress),
            )
        except (RecoveryError, DataError) as exc:
            return None, exc
        return result, None

    def _fallback_from_pass(self, source, client, exc):
        """Affine fallback for dask arrays and stores: one pass of moment sums, then least squares.

        A genuine data error (non-finite values with ``nonfinite="error"``,
        unreadable chunks) raises again in this pass.
        """
        with open_runner(source, client, self.scheduler) as runner, threadpool_limits(limits=1, user_api="blas"):
            state = reduce_chunks(source, GAUSS, None, runner, options=ChunkOptions(nonfinite=self.nonfinite)).state
        n_rows = 0 if state == 0 else state.count
        if n_rows < 2:
            raise ValueError(f"only {n_rows} usable sample(s); a minimum of 2 is required") from exc
        u, c, _ = _affine_from_state(state)
        return self._set_affine(u, c, n_rows, exc, "least squares of y on [x, 1] from moment sums", stacklevel=4)

    # ----------------------------------------------------------------- results

    def _set_model(self, model, diagnostics):
        self.model_ = model
        self.a_ = model.a
        self.W_ = model.W
        self.b_ = model.b
        self.u_ = model.u
        self.c_ = model.c
        self.n_hidden_ = int(model.n_hidden)
        self.diagnostics_ = diagnostics

    def _set_affine(self, u, c, n_rows, exc, method, extra=None, stacklevel=3):
        """Install the affine fallback model and warn."""
        u = np.asarray(u, dtype=np.float64)
        if not (np.isfinite(u).all() and np.isfinite(c)):
            raise ValueError("the affine least-squares fit is not finite (values of x or y too large?)") from exc
        reason = str(exc)
        fallback = {"reason": reason, "error": type(exc).__name__, "model": method}
        diagnostics = to_jsonable(
            {"fallback": fallback, "n_samples": int(n_rows), "n_features": int(u.shape[0]), **(extra or {})}
        )
        d = u.shape[0]
        model = ReluNetwork(a=np.zeros(0), W=np.zeros((d, 0)), b=np.zeros(0), u=u, c=c, diagnostics=diagnostics)
        self._set_model(model, diagnostics)
        warnings.warn(
            f"{type(self).__name__}: the moments do not support a recovery ({type(exc).__name__}: {reason}); "
            "fitted an affine model instead (n_hidden_ = 0)",
            FallbackWarning,
            stacklevel=stacklevel,
        )
        return self

    # ------------------------------------------------------------- partial_fit

    def partial_fit(self, X, y):
        """Update the model with one batch of samples.

        See the class Notes (Incremental learning) for what is kept between
        calls.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or dask.array.Array
            Inputs of the batch.
        y : array-like or dask.array.Array of shape (n_samples,)
            Labels of the batch.

        Returns
        -------
        self : ReluNetworkRegressor
            The estimator, with the model recovered from every batch so far.

        Raises
        ------
        ValueError
            Invalid parameters or input, or a batch whose number of features
            differs from the first batch's.
        """
        self._check_params()
        if _is_path(X):
            raise ValueError("partial_fit takes numpy or dask arrays; fit a store with fit(path)")
        previous = getattr(self, "_partial", None)
        first = previous is None
        if is_dask_array(X) or is_dask_array(y):
            X, y = self._check_dask(X, y, reset=first, min_samples=1)
            source = DaskArraySource(X, y)
            client = self._client(False)
        else:
            X, y = self._validate_xy(X, y, reset=first, min_samples=1)
            source = ArraySource(X, y, int(self.chunk_rows))
            client = None
        n_hidden = self._check_width(self.n_features_in_)
        call = 1 if first else previous.n_calls + 1
        seed = _seed(self.random_state)
        with open_runner(source, client, self.scheduler) as runner, threadpool_limits(limits=1, user_api="blas"):
            batch = reduce_chunks(source, GAUSS, None, runner, options=ChunkOptions(nonfinite=self.nonfinite)).state
            merged = batch if first else previous.gauss_state + batch
            if merged == 0 or merged.count == 0:
                raise ValueError("no usable rows (every row holds NaN or infinity)")
            replan = first or previous.plan is None or merged.count >= 2 * previous.plan_gauss.n_samples
            if replan:
                plan, plan_gauss, width, why = self._plan(merged, n_hidden)
                plan_calls = (() if first else previous.plan_calls) + ((call,) if plan is not None else ())
                sub_state = 0
            else:
                plan, plan_gauss, width, why = previous.plan, previous.plan_gauss, previous.width, None
                plan_calls = previous.plan_calls
                sub_state = previous.sub_state
            if plan is not None:
                sub_state = sub_state + reduce_chunks(
                    source, SUBSPACE, plan, runner, options=ChunkOptions(nonfinite="skip")
                ).state
            state = _PartialState(merged, plan, plan_gauss, sub_state, width, call, plan_calls)
            info = {
                "n_calls": call,
                "rows_seen": merged.count,
                "n_plans": len(plan_calls),
                "plan_calls": list(plan_calls),
                "replanned": bool(replan and plan is not None),
                "plan_rows": None if plan is None else plan_gauss.n_samples,
                "pass2_rows": 0 if plan is None else sub_state.count,
                "plan_key": None if plan is None else plan.key,
            }
            if plan is None:
                u, c, n_rows = _affine_from_state(merged)
                self._set_affine(
                    u, c, n_rows, why, "least squares of y on [x, 1] from moment sums",
                    extra={"partial_fit": info}, stacklevel=3,
                )
            else:
                self._recover_partial(state, info, X, y, seed)
        self._partial = state
        return self

    def _plan(self, merged, n_hidden):
        """A pass-2 plan from merged pass-1 sums.

        Returns
        -------
        plan, gauss, width, why
            ``(SubspacePlan, GaussMoments, dict, None)``, or
            ``(None, None, None, error)`` with the error :func:`stream_relu.fit`
            would raise (:class:`DataError` or :class:`RecoveryError`).
        """
        if merged.count < 2:
            return None, None, None, DataError(f"fewer than 2 usable rows ({merged.count})")
        try:
            gauss = finalize_gauss(merged)
        except ValueError as exc:
            return None, None, None, DataError(str(exc))
        if gauss.var_y <= _CONSTANT_Y_RTOL * max(gauss.T0**2, np.finfo(float).tiny):
            why = f"y is constant (every row is {gauss.T0:.6g}): there is nothing to learn"
            return None, None, None, DataError(why)
        width = choose_width(gauss, n_hidden)
        if width.n_hidden == 0:
            return None, None, None, RecoveryError(
                f"no eigenvalue of T_2 stands above the noise floor ({width.threshold:.3g}): the data look affine"
            )
        plan = SubspacePlan.build(gauss, subspace_basis(gauss.T2, width.n_hidden))
        width_info = {
            "chosen": width.n_hidden,
            "requested": width.requested,
            "n_above_threshold": width.n_above,
            "t2_spectrum": width.spectrum,
            "noise_floor": width.noise_floor,
            "threshold": width.threshold,
        }
        return plan, gauss, width_info, None

    def _refinement_rows(self, X, y, gauss):
        """Up to ``refine_rows`` evenly spaced finite rows of the batch, whitened: ``(z, y)``."""
        n = int(X.shape[0])
        step = max(1, -(-n // int(self.refine_rows)))
        xs, ys = X[::step], y[::step]
        if is_dask_array(xs):
            import dask

            kwargs = {"scheduler": "synchronous"} if self.scheduler == "synchronous" else {}
            xs, ys = dask.compute(xs, ys, **kwargs)
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys, dtype=np.float64)
        good = np.isfinite(ys) & np.isfinite(xs).all(axis=1)
        return (xs[good] - gauss.mean) @ gauss.whitener, ys[good]

    def _recover_partial(self, state, info, X, y, seed):
        """Model from the merged states of :meth:`partial_fit`; sets the fitted attributes."""
        plan_gauss = state.plan_gauss
        gauss = _refreshed_affine_moments(plan_gauss, state.gauss_state)
        sub = finalize_subspace(state.sub_state, state.plan, plan_gauss)
        try:
            est = recover(gauss, sub, rng=np.random.default_rng(seed))
        except np.linalg.LinAlgError as exc:
            u, c, n_rows = _affine_from_state(state.gauss_state)
            err = RecoveryError(f"the order-2 moment in the subspace is singular ({exc})")
            return self._set_affine(
                u, c, n_rows, err, "least squares of y on [x, 1] from moment sums",
                extra={"partial_fit": info}, stacklevel=4,
            )
        W, b, u, c, _ = canonical_flips(est.a, est.W, est.b, est.u, est.c)
        params = Params(est.a, W, b, u, c)
        stages = {"refined": None}
        if self.refine and params.n_hidden > 0:
            z, yr = self._refinement_rows(X, y, plan_gauss)
            if yr.shape[0] > 0:
                objective = InMemoryObjective(z, yr, params.n_hidden)
                params, refined = _refine_params(objective, params, var_y=gauss.var_y, maxiter=_REFINE_MAXITER)
                W, b, u, c, _ = canonical_flips(params.a, params.W, params.b, params.u, params.c)
                params = Params(params.a, W, b, u, c)
                stages["refined"] = {"rows": int(yr.shape[0]), **{k: v for k, v in refined.items() if k != "history"}}
        diagnostics = to_jsonable(
            {
                "fallback": None,
                "n_samples": state.gauss_state.count,
                "n_features": plan_gauss.n_features,
                "width": state.width,
                "recovery": est.diagnostics,
                "stages": stages,
                "partial_fit": info,
            }
        )
        model = ReluNetwork.from_whitened(
            params.a, params.W, params.b, params.u, params.c, plan_gauss.mean, plan_gauss.whitener,
            diagnostics=diagnostics,
        )
        if not all(np.isfinite(v).all() for v in (model.a, model.W, model.b, model.u, model.c)):
            raise ValueError("the recovered parameters are not finite (values of x or y too large?)")
        self._set_model(model, diagnostics)
        return self

    # ----------------------------------------------------------------- predict

    def predict(self, X):
        """Evaluate the fitted network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask.array.Array or str or os.PathLike
            Inputs, or the path of a sample store (its array ``x`` is read
            chunk by chunk; its ``y`` is not used).

        Returns
        -------
        y_pred : ndarray or dask.array.Array of shape (n_samples,)
            float64; a lazy dask array for dask input, a numpy array
            otherwise (also for a store path).
        """
        check_is_fitted(self)
        if _is_path(X):
            return self._predict_store(os.fspath(X))
        if is_dask_array(X):
            if X.ndim != 2:
                raise ValueError(f"Expected a 2-D dask array X of shape (n_samples, n_features), got shape {X.shape}")
            self._set_or_check_features(int(X.shape[1]), reset=False)
            return self.model_.predict(X)
        X = validate_data(
            self, X, reset=False, dtype=(np.float64, np.float32), ensure_all_finite=self.nonfinite == "error"
        )
        return self.model_.predict(X)

    def _predict_store(self, path):
        store = open_store(path)
        self._set_or_check_features(store.n_features, reset=False)
        out = np.empty(store.n_samples, dtype=np.float64)
        for i in range(store.n_chunks):
            start, stop = store.chunk_bounds(i)
            x, _ = store.read_chunk(i)
            if self.nonfinite == "error" and not np.isfinite(x).all():
                raise ValueError(f"Input X contains NaN or infinity (store {path!r}, rows {start}-{stop - 1})")
            out[start:stop] = self.model_.predict(x)
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.nonfinite == "skip"
        tags.input_tags.sparse = False
        tags.input_tags.positive_only = False
        tags.target_tags.required = True
        tags.target_tags.multi_output = False
        tags.non_deterministic = self.random_state is None
        return tags
