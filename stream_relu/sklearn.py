"""A scikit-learn regressor over stream_relu's method of moments.

:class:`ReluNetworkRegressor` follows the scikit-learn estimator contract
(``get_params``/``set_params``, ``clone``, fitted attributes ending in
``_``, input validation, tags, ``score`` as R^2) and holds nothing else but
the affine fallback: every stage of a fit is the library's public pipeline
(:func:`stream_relu.fit`, :class:`stream_relu.MomentAccumulator`).  Needs
scikit-learn (>= 1.6); ``import stream_relu`` does not import it.
"""

from __future__ import annotations

import numbers
import os
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, validate_data

from . import DataError, DataPolicy, MomentAccumulator, RecoveryError, RefineSettings, ReluNetwork  # isort: skip
from . import affine_fit, fit, open_input, open_store, predict_store

__all__ = ["ReluNetworkRegressor", "FallbackWarning"]


class FallbackWarning(UserWarning):
    """The moments did not support a recovery; an affine model was fitted instead."""


def _is_path(obj):
    return isinstance(obj, (str, os.PathLike))


def _is_dask(obj):
    return type(obj).__module__.startswith("dask.array")


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
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool) and random_state >= 0:
        return int(random_state)
    if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
        draw = getattr(random_state, "integers", None) or random_state.randint
        return int(draw(2**31 - 1))
    raise ValueError(
        "random_state must be None, a non-negative int, a numpy.random.RandomState or a "
        f"numpy.random.Generator, got {random_state!r}"
    )


def _affine_lstsq(X, y):
    """Least squares of ``y`` on ``[X, 1]`` over the finite rows: ``(coef, intercept)`` and the rows used."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    good = np.isfinite(y) & np.isfinite(X).all(axis=1)
    design = np.column_stack([X[good], np.ones(int(good.sum()))])
    coef, *_ = np.linalg.lstsq(design, y[good], rcond=None)
    return coef, int(good.sum())


class ReluNetworkRegressor(RegressorMixin, BaseEstimator):
    """Depth-2 ReLU network with biases, learned by the method of moments.

    Fits ``f(x) = sum_i a_i relu(<w_i, x> + b_i) + <u, x> + c`` with
    :func:`stream_relu.fit`: Hermite moments of orders 0-4 are accumulated
    in mergeable chunk states, decomposed into the units, and the estimate
    is refined by L-BFGS on the squared loss.

    Parameters
    ----------
    n_hidden : int, optional
        Number of units ``m`` (at most ``n_features``).  When None, measured
        as :func:`stream_relu.fit` does (the ``T_2`` spectrum against its
        measured noise, then the residual's moments); ``partial_fit`` keeps
        no rows beyond the latest batch, so its residual look runs on that
        batch (every 8th row held out).
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
        when one exists, else the defaults of :func:`stream_relu.fit`.
        numpy input always runs in this process.
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
    a_, W_, b_, u_, c_ : ndarray or float
        Output weights, unit vectors (columns), biases, and the affine term ``<u, x> + c``.
    n_hidden_ : int
        Units in the fitted model (0 for an affine model).
    stderr_ : dict
        Standard errors of ``a_, W_, b_, u_, c_`` (``stderr_["a"]`` etc.,
        same shapes, same unit order and orientation; sandwich form) when
        ``stderr_["available"]``, else ``stderr_["reason"]``
        (:attr:`stream_relu.ReluNetwork.stderr`).  After :meth:`partial_fit`
        they are those of the refinement on the latest batch, which sets
        the estimate.
    diagnostics_ : dict
        :attr:`stream_relu.FitResult.diagnostics`, plus ``"fallback"``
        (None, or why an affine model was fitted) and, after
        :meth:`partial_fit`, ``"partial_fit"``
        (:meth:`stream_relu.MomentAccumulator.info`).
    n_features_in_ : int
        Number of features seen in :meth:`fit` or the first :meth:`partial_fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when ``X`` was a data frame with string column names.

    See Also
    --------
    stream_relu.fit : the pipeline this estimator runs.
    stream_relu.MomentAccumulator : what :meth:`partial_fit` keeps between calls.

    Notes
    -----
    Input: numpy arrays (validated as scikit-learn does), dask arrays
    (validated by shape and dtype; values are checked as chunks are read),
    or a zarr store path (``y`` then None).  Prediction returns a numpy
    array, a lazy dask array for dask input, and a numpy array for a store
    path (:func:`stream_relu.predict_store`).

    No unit, small or degenerate data: when the measured width is 0 (no
    unit stands out of the measured noise), :meth:`fit` keeps
    :func:`stream_relu.fit`'s affine model (with its diagnostics); when the
    library raises :class:`~stream_relu.RecoveryError` or
    :class:`~stream_relu.DataError` (a singular covariance, constant
    labels, a singular order-2 moment), the estimator fits an affine model
    instead (least squares of ``y`` on ``[X, 1]`` for numpy input,
    :func:`stream_relu.affine_fit` from moment sums otherwise).  Either
    way it sets ``n_hidden_ = 0``, records why in
    ``diagnostics_["fallback"]`` and emits a :class:`FallbackWarning`.  Invalid input still raises
    ``ValueError``.  The method needs about ``2000 * n_features * m`` rows
    for the accuracy stated in the README.

    :meth:`partial_fit` merges each batch into a
    :class:`stream_relu.MomentAccumulator` (its docs say when the subspace
    plan is rebuilt) and recovers the model with the stages of
    :func:`stream_relu.fit`, refining on the latest batch; :meth:`fit`
    discards that state.
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
        """Validate the parameters; the library's :class:`~stream_relu.DataPolicy` for them."""
        n = self.n_hidden
        if n is not None and (not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1):
            raise ValueError(f"n_hidden must be None or a positive integer, got {n!r}")
        for name in ("refine_rows", "chunk_rows"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.scheduler is not None and not isinstance(self.scheduler, str):
            kind = type(self.scheduler).__name__
            raise ValueError(f"scheduler must be None, 'synchronous', 'local' or a scheduler address string, got {kind}")
        if not isinstance(self.refine, (bool, np.bool_)):
            raise ValueError(f"refine must be a bool, got {self.refine!r}")
        return DataPolicy(chunk_rows=int(self.chunk_rows), nonfinite=self.nonfinite)

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
        """Check dask ``X``, ``y`` as :func:`stream_relu.open_input` does; set or check ``n_features_in_``."""
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, but the target y is None.")
        source = open_input(X, y).source
        if source.n_samples < min_samples:
            raise ValueError(f"Found array with {source.n_samples} sample(s) while a minimum of {min_samples} is required.")
        self._set_or_check_features(source.n_features, reset)
        return source.x, source.y

    def _checked_input(self, X, y, *, reset, min_samples):
        if _is_dask(X) or _is_dask(y):
            return self._check_dask(X, y, reset=reset, min_samples=min_samples)
        return self._validate_xy(X, y, reset=reset, min_samples=min_samples)

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

    def _client(self):
        return None if self.scheduler is not None else _default_client()

    def _refine_settings(self):
        return RefineSettings(enabled=bool(self.refine), rows=int(self.refine_rows))

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
        """
        policy = self._check_params()
        self._partial = None
        seed = _seed(self.random_state)
        if _is_path(X):
            if y is not None:
                raise ValueError("y must be None when X is a store path: the store holds y")
            X = os.fspath(X)
            self._set_or_check_features(open_store(X).n_features, reset=True)
        else:
            X, y = self._checked_input(X, y, reset=True, min_samples=2)
        how = self._refine_settings()
        try:
            result = fit(
                X, y, n_hidden=self.n_hidden, client=self._client(), scheduler=self.scheduler,
                refine_model=how.enabled, refine_rows=how.rows, random_state=seed,
                chunk_rows=policy.chunk_rows, nonfinite=policy.nonfinite, progress=bool(self.progress),
            )
        except (RecoveryError, DataError) as exc:
            return self._fallback(X, y, policy, exc)
        if result.model.n_hidden == 0:  # the measured width is 0: fit's own affine model, with the warning
            why = next((w for w in result.diagnostics["warnings"] if w.startswith("no structure found")), "no unit found")
            exc = RecoveryError(why)
            fallback = {"reason": why, "error": type(exc).__name__, "model": "fit's affine model (least squares from moment sums)"}
            self._install(result.model, {**result.diagnostics, "fallback": fallback})
            self._warn_fallback(exc, stacklevel=3)
            return self
        return self._install(result.model, {**result.diagnostics, "fallback": None})

    def _fallback(self, X, y, policy, exc):
        """The affine fallback: least squares on numpy rows, or from one pass of moment sums."""
        if isinstance(X, np.ndarray):
            coef, n_rows = _affine_lstsq(X, y)
            if n_rows < 2:
                raise ValueError(f"only {n_rows} sample(s) without NaN or infinity; a minimum of 2 is required") from exc
            return self._set_affine(coef[:-1], coef[-1], n_rows, exc, "least squares of y on [X, 1] (numpy.linalg.lstsq)")
        # a genuine data error (NaN with nonfinite="error", unreadable chunks) raises again in this pass
        affine = affine_fit(X, y, policy=policy, client=self._client(), scheduler=self.scheduler)
        if affine.n_rows < 2:
            raise ValueError(f"only {affine.n_rows} usable sample(s); a minimum of 2 is required") from exc
        return self._set_affine(affine.coef, affine.intercept, affine.n_rows, exc, "least squares of y on [x, 1] from moment sums")

    # ----------------------------------------------------------------- results

    def _install(self, model, diagnostics):
        if not all(np.isfinite(v).all() for v in (model.a, model.W, model.b, model.u, model.c)):
            raise ValueError("the fitted parameters are not finite (values of x or y too large?)")
        self.model_ = model
        self.a_, self.W_, self.b_, self.u_, self.c_ = model.a, model.W, model.b, model.u, model.c
        self.n_hidden_ = int(model.n_hidden)
        self.stderr_ = model.stderr or {"available": False, "reason": "the affine fallback's least squares reports none"}
        self.diagnostics_ = diagnostics
        return self

    def _set_affine(self, u, c, n_rows, exc, method, extra=None):
        """Install the affine fallback model and warn."""
        u, c = np.asarray(u, dtype=np.float64), float(c)
        if not (np.isfinite(u).all() and np.isfinite(c)):
            raise ValueError("the affine least-squares fit is not finite (values of x or y too large?)") from exc
        fallback = {"reason": str(exc), "error": type(exc).__name__, "model": method}
        diagnostics = {"fallback": fallback, "n_samples": int(n_rows), "n_features": int(u.shape[0]), **(extra or {})}
        d = u.shape[0]
        model = ReluNetwork(a=np.zeros(0), W=np.zeros((d, 0)), b=np.zeros(0), u=u, c=c, diagnostics=diagnostics)
        self._install(model, model.diagnostics)
        self._warn_fallback(exc)
        return self

    def _warn_fallback(self, exc, stacklevel=4):
        warnings.warn(
            f"{type(self).__name__}: the moments do not support a recovery ({type(exc).__name__}: {exc}); "
            "fitted an affine model instead (n_hidden_ = 0)",
            FallbackWarning,
            stacklevel=stacklevel,
        )

    # ------------------------------------------------------------- partial_fit

    def partial_fit(self, X, y):
        """Update the model with one batch of samples (see the class Notes).

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
        """
        policy = self._check_params()
        if _is_path(X):
            raise ValueError("partial_fit takes numpy or dask arrays; fit a store with fit(path)")
        acc = getattr(self, "_partial", None) or MomentAccumulator()
        X, y = self._checked_input(X, y, reset=acc.n_calls == 0, min_samples=1)
        where = {"policy": policy, "client": self._client(), "scheduler": self.scheduler}
        acc = acc.update(X, y, n_hidden=self.n_hidden, **where)
        try:
            est = acc.estimate(X, y, random_state=_seed(self.random_state), refine=self._refine_settings(), **where)
        except (RecoveryError, DataError) as exc:
            affine = acc.affine()
            method = "least squares of y on [x, 1] from moment sums"
            self._set_affine(affine.coef, affine.intercept, affine.n_rows, exc, method, {"partial_fit": acc.info()})
        else:
            self._install(est.model, {**est.diagnostics, "fallback": None, "partial_fit": acc.info()})
        self._partial = acc
        return self

    # ----------------------------------------------------------------- predict

    def predict(self, X):
        """Evaluate the fitted network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask.array.Array or str or os.PathLike
            Inputs, or the path of a sample store (its ``x`` is read chunk by chunk).

        Returns
        -------
        y_pred : ndarray or dask.array.Array of shape (n_samples,)
            float64; a lazy dask array for dask input, a numpy array otherwise.
        """
        check_is_fitted(self)
        if _is_path(X):
            self._set_or_check_features(open_store(os.fspath(X)).n_features, reset=False)
            nonfinite = "error" if self.nonfinite == "error" else "propagate"
            return predict_store(self.model_, os.fspath(X), client=self._client(), nonfinite=nonfinite)
        if _is_dask(X):
            if X.ndim != 2:
                raise ValueError(f"Expected a 2-D dask array X of shape (n_samples, n_features), got shape {X.shape}")
            self._set_or_check_features(int(X.shape[1]), reset=False)
            return self.model_.predict(X)
        X = validate_data(
            self, X, reset=False, dtype=(np.float64, np.float32), ensure_all_finite=self.nonfinite == "error"
        )
        return self.model_.predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.nonfinite == "skip"
        tags.input_tags.sparse = False
        tags.input_tags.positive_only = False
        tags.target_tags.required = True
        tags.target_tags.multi_output = False
        tags.non_deterministic = self.random_state is None
        return tags
