"""The first (``gauss``) pass: input mean and covariance, ``T_0``, ``T_1`` and the full ``T_2``.

The state holds ``O(d^2)`` numbers.  This module imports numpy only.

Notes
-----
Whitening.  With sample mean ``mu`` and covariance ``C`` of the rows and
``A = C^{-1/2}`` (symmetric), ``z = A (x - mu)`` has sample mean 0 and sample
covariance ``I`` exactly.  Then, with unnormalized ``He_k``
(``E[He_j He_k] = k! delta_jk``)::

    T_0 = E[y]
    T_1 = E[y z]                 = A (E[y x] - mu E[y])
    T_2 = E[y (z z^T - I)]       = A S A - E[y] I,
    S   = E[y (x-mu)(x-mu)^T]    = E[y x x^T] - mu E[y x]^T - E[y x] mu^T + E[y] mu mu^T

The constant part of ``y`` drops out of ``T_2`` exactly because the sample
``E[z z^T] = I``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace
from math import isfinite

import numpy as np

from ._blocks import (
    N_PROJECTIONS,
    _f64,
    _round32,
    _row_scratch,
    _shifted_blocks,
    _with_float64_fallback,
    projection_directions,
)
from .state import ChunkKernel, MomentState, digest

__all__ = [
    "GAUSS",
    "GaussPlan",
    "GaussMoments",
    "Normality",
    "AffineFit",
    "gauss_chunk",
    "finalize_gauss",
    "normality_statistics",
    "affine_least_squares",
]

GAUSS_KEY = "gauss-v2"
NORMALITY_EVERY = 8  # the normality sums use every 8th block of rows of a chunk (its first always)
SINGULAR_RTOL = {"float64": 1e-10, "float32": 1e-4}


@dataclass(frozen=True)
class GaussPlan:
    """The shift of the first pass: it sums ``x - shift_x`` and ``y - shift_y``.

    Sums of shifted data keep float32 products accurate when the data sit far
    from the origin (a mean of 1e4 would otherwise cost four digits of the
    covariance).  Any fixed shift gives the same moments; a rough mean (of
    the first chunk) is best.  Both shifts are rounded to float32 values, so
    the subtraction means the same in float32 and float64.

    Attributes
    ----------
    shift_x : ndarray of shape (d,)
    shift_y : float
    key : str
        ``"gauss-v2-"`` and a digest of the shifts (and ``-gK`` with
        groups): states of different shifts never merge.
    groups : int
        ``K > 0``: the rows of each chunk are summed in ``K`` groups by row
        index modulo ``K`` (the measured noise of ``T_2``,
        :attr:`GaussMoments.t2_groups`), the totals being the groups' sums;
        0: totals only.
    """

    shift_x: np.ndarray
    shift_y: float
    key: str = field(default="", compare=False)
    groups: int = 0

    @classmethod
    def from_shifts(cls, shift_x, shift_y, groups=0):
        shift_x = _round32(np.atleast_1d(shift_x))
        shift_y = float(_round32(shift_y))
        key = GAUSS_KEY + "-" + digest(shift_x, np.array(shift_y))
        if groups and (groups < 0 or 256 % int(groups)):
            raise ValueError(f"groups must divide 256 (blocks hold a multiple of 256 rows), got {groups}")
        if groups:
            key += f"-g{int(groups)}"
        return cls(shift_x, shift_y, key, int(groups))

    @classmethod
    def from_sample(cls, x, y, groups=0):
        """Shifts from a sample of rows (their finite rows' means; zero when there are none)."""
        x = _f64(x)
        y = _f64(y).reshape(-1)
        good = np.isfinite(y) & np.isfinite(x).all(axis=1)
        if not good.any():
            return cls.zero(x.shape[1], groups)
        return cls.from_shifts(x[good].mean(axis=0), y[good].mean(), groups)

    @classmethod
    def zero(cls, n_features, groups=0):
        return cls.from_shifts(np.zeros(n_features), 0.0, groups)

    def with_groups(self, groups):
        """The same shift with ``groups`` interleaved row groups summed beside the totals."""
        return type(self).from_shifts(self.shift_x, self.shift_y, groups)


def gauss_chunk(x, y, plan=None):
    """First-pass state of one chunk.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_features)
        Inputs, float32 or float64.
    y : ndarray of shape (n_rows,)
        Labels.
    plan : GaussPlan, optional
        The shift (zero when omitted).

    Returns
    -------
    MomentState
        With ``x'`` and ``y'`` the shifted rows: sums ``x`` (of ``x'``),
        ``xx`` (``X'^T X'``), ``y``, ``yy``, ``yx`` (``X'^T y'``), ``yxx``
        (``X'^T diag(y') X'``), and ``p3``, ``p4``: sums of the third and
        fourth powers of ``[x', x' G]`` (the columns and 8 fixed projections,
        :func:`projection_directions`) for the normality check; all float64.

    Notes
    -----
    The rows are taken in blocks of at most 4096.  Within a block the
    products run in the input's precision (float32 for float32 data), as
    one symmetric rank-k product of ``[1, x', y']`` and, for the
    ``y'``-weighted part, the product of ``x'`` with ``diag(y') x'``; the
    blocks' results are accumulated in float64.
    A block's float32 sum of ``b`` products has a relative rounding error of
    about ``sqrt(b) eps_32 ~ 4e-6`` of the sum of the terms' magnitudes
    (``eps_32 = 6e-8``), independent between blocks, so over ``n`` rows the
    error of a mean is about ``eps_32 / sqrt(n / b)`` of the terms' scale:
    far below the sampling error ``1 / sqrt(n)`` of any moment.  The shift
    keeps the terms' scale that of the data's spread, not of its offset.
    Should the float32 sums overflow (inputs beyond about 1e9), the chunk
    is summed again in float64.
    """
    x = np.asarray(x)
    if plan is None:
        plan = GaussPlan.zero(x.shape[1])
    return _with_float64_fallback(_gauss_sums, x, y, plan)


GAUSS = ChunkKernel("gauss", gauss_chunk)


def _normality_block(xb, ones, G, acc):
    """Add the power sums of ``t = [x', x' G]`` (column sums as products with a vector of ones)."""
    b, d = xb.shape
    T = np.empty((b, d + N_PROJECTIONS), dtype=xb.dtype)
    T2 = np.empty_like(T)
    T[:, :d] = xb
    np.matmul(xb, G, out=T[:, d:])
    np.multiply(T, T, out=T2)
    acc["norm_rows"] += b
    acc["p1"] += ones @ T
    acc["p2"] += ones @ T2
    np.multiply(T2, T, out=T)
    acc["p3"] += ones @ T
    np.multiply(T2, T2, out=T)
    acc["p4"] += ones @ T


@functools.lru_cache(maxsize=8)
def _group_order(rows, K):
    """Row order that puts each interleaved group's rows (block row index mod ``K``) together, and the group bounds."""
    order = np.concatenate([np.arange(g, rows, K) for g in range(K)])
    bounds = np.cumsum([0] + [len(range(g, rows, K)) for g in range(K)])
    return order, bounds


def _grouped_block(Fb, Yx, acc):
    """Add one block's products by interleaved row group (block row index mod ``K``) to ``acc``.

    Blocks hold a multiple of ``K`` rows (a power of two of at least 256)
    except a chunk's last, so a block's row index modulo ``K`` is the
    chunk's.  The rows are gathered group by group into contiguous copies;
    each group's products go to its own sums and, in group order, to the
    totals (so the totals' bits differ from those of a pass without
    groups, by rounding only).
    """
    K = acc["g_F"].shape[0]
    d = Fb.shape[1] - 2
    order, bounds = _group_order(Fb.shape[0], K)
    Fs, Ys = Fb[order], Yx[order]
    for g in range(K):
        lo, hi = bounds[g], bounds[g + 1]
        if hi > lo:
            FF = Fs[lo:hi].T @ Fs[lo:hi]
            Q = Fs[lo:hi, 1 : d + 1].T @ Ys[lo:hi]
            acc["g_F"][g] += FF
            acc["g_yxx"][g] += Q
            acc["F1F1"] += FF
            acc["yxx"] += Q


def _gauss_block(Fb, Yx, G, acc, normality):
    """Add one block's first-pass products to ``acc``; ``Fb = [1, x', y']`` in the work dtype."""
    d = Fb.shape[1] - 2
    xb = Fb[:, 1 : d + 1]
    np.multiply(xb, Fb[:, d + 1 : d + 2], out=Yx)
    if "g_F" in acc:
        _grouped_block(Fb, Yx, acc)
    else:
        acc["F1F1"] += Fb.T @ Fb
        acc["yxx"] += xb.T @ Yx
    if normality:
        _normality_block(xb, Fb[:, 0], G, acc)


def _gauss_acc(d, groups=0):
    if groups:
        return {**_gauss_acc(d), "g_F": np.zeros((groups, d + 2, d + 2)), "g_yxx": np.zeros((groups, d, d))}
    return {
        "F1F1": np.zeros((d + 2, d + 2)),
        "yxx": np.zeros((d, d)),
        "p1": np.zeros(d + N_PROJECTIONS),
        "p2": np.zeros(d + N_PROJECTIONS),
        "p3": np.zeros(d + N_PROJECTIONS),
        "p4": np.zeros(d + N_PROJECTIONS),
        "norm_rows": np.zeros(()),
    }


def _gauss_state(acc, n, d, dt, key):
    F = acc["F1F1"]
    yxx = acc["yxx"]
    sums = {
        "p1": acc["p1"],
        "p2": acc["p2"],
        "p3": acc["p3"],
        "p4": acc["p4"],
        "norm_rows": acc["norm_rows"],
        "x": F[0, 1 : d + 1].copy(),
        "xx": F[1 : d + 1, 1 : d + 1].copy(),
        "y": np.array(F[0, d + 1]),
        "yy": np.array(F[d + 1, d + 1]),
        "yx": F[1 : d + 1, d + 1].copy(),
        "yxx": 0.5 * (yxx + yxx.T),
        "lowp_rows": np.array(float(n) if dt == np.float32 else 0.0),
    }
    if "g_F" in acc:
        sums["g_F"] = acc["g_F"]
        sums["g_yxx"] = 0.5 * (acc["g_yxx"] + acc["g_yxx"].transpose(0, 2, 1))
    return MomentState("gauss", key, n, sums)


def _gauss_sums(x, y, plan, dt):
    n, d = x.shape
    G = projection_directions(d).astype(dt)
    acc = _gauss_acc(d, plan.groups)
    Yx = None
    for j, Fb in _shifted_blocks(x, y, plan.shift_x, plan.shift_y, dt, 3 * d + 2 * N_PROJECTIONS + 2):
        Yx = _row_scratch(Yx, Fb.shape[0], d, dt)
        _gauss_block(Fb, Yx, G, acc, j % NORMALITY_EVERY == 0)
    return _gauss_state(acc, n, d, dt, plan.key)


@dataclass(frozen=True)
class Normality:
    """Normality check of x: skewness and excess kurtosis of its columns and of 8 fixed projections.

    Attributes
    ----------
    max_abs_skew, max_abs_excess_kurtosis : float
        Largest absolute sample skewness and excess kurtosis.
    max_z : float
        The largest of ``|skew| / sqrt(6/n)`` and ``|kurt| / sqrt(24/n)``.
    worst : str
        Which variable reached ``max_z``.
    worst_skew, worst_excess_kurtosis : float
        That variable's skewness and excess kurtosis.
    rows : int
        The rows ``n`` of the normality sums.
    """

    max_abs_skew: float
    max_abs_excess_kurtosis: float
    max_z: float
    worst: str
    worst_skew: float
    worst_excess_kurtosis: float
    rows: int

    @classmethod
    def unchecked(cls, rows):
        """The statistics of a state with too few normality rows (a joint pass leaves the check to its pilot)."""
        return cls(0.0, 0.0, 0.0, "none (no rows checked)", 0.0, 0.0, int(rows))

    def as_dict(self):
        """The fields as a plain dict (the form of :attr:`GaussMoments.normality`)."""
        return asdict(self)

    def __getitem__(self, name):
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


def normality_statistics(state):
    """Skewness and excess kurtosis of the columns of x and of 8 fixed projections.

    For Gaussian x each of these ``d + 8`` variables is Gaussian, with
    sample skewness and excess kurtosis of standard errors ``sqrt(6/n)``
    and ``sqrt(24/n)``, ``n`` the rows of the normality sums (every
    ``NORMALITY_EVERY``-th block of each chunk; their own first four raw
    moments, so the statistics are those of that sample alone).

    Parameters
    ----------
    state : MomentState
        A ``gauss`` state.

    Returns
    -------
    Normality
        Also indexable by field name (``stats["max_z"]``).
    """
    n = float(state.sums["norm_rows"])
    d = state.sums["x"].shape[0]
    if n < 4:  # a joint pass leaves the check to its pilot
        return Normality.unchecked(n)
    m1 = state.sums["p1"] / n
    e2 = state.sums["p2"] / n
    var = e2 - m1 * m1
    e3 = state.sums["p3"] / n
    e4 = state.sums["p4"] / n
    c3 = e3 - 3 * m1 * e2 + 2 * m1**3
    c4 = e4 - 4 * m1 * e3 + 6 * m1**2 * e2 - 3 * m1**4
    var = np.maximum(var, np.finfo(float).tiny)
    skew = c3 / var**1.5
    kurt = c4 / var**2 - 3.0
    z = np.maximum(np.abs(skew) / np.sqrt(6.0 / n), np.abs(kurt) / np.sqrt(24.0 / n))
    j = int(np.argmax(z))
    return Normality(
        max_abs_skew=float(np.max(np.abs(skew))),
        max_abs_excess_kurtosis=float(np.max(np.abs(kurt))),
        max_z=float(z[j]),
        worst=f"column {j} of x" if j < d else f"projection {j - d} of x",
        worst_skew=float(skew[j]),
        worst_excess_kurtosis=float(kurt[j]),
        rows=int(n),
    )


@dataclass(frozen=True)
class GaussMoments:
    """Finalized first pass.

    Attributes
    ----------
    n_samples : int
    mean : ndarray of shape (d,)
        Sample mean of x.
    cov : ndarray of shape (d, d)
        Sample covariance of x (divided by n).
    whitener : ndarray of shape (d, d)
        ``A = cov^{-1/2}`` (symmetric); ``z = A (x - mean)``.
    cov_eigvals : ndarray of shape (d,)
        Eigenvalues of ``cov``, ascending.
    T0 : float
        ``E[y]``.
    T1 : ndarray of shape (d,)
        ``E[y z]`` (He_1 convention).
    T2 : ndarray of shape (d, d)
        ``E[y He_2(z)] = E[y (z z^T - I)]``.
    var_y : float
        Sample variance of y.
    normality : dict
        Skewness and excess kurtosis of every column of x and of 8 fixed
        projections (:func:`normality_statistics`, as :meth:`Normality.as_dict`).
    t2_groups : ndarray of shape (K, d, d) or None
        ``T_2`` of each interleaved row group (a :class:`GaussPlan` with
        ``groups = K``), in the whitening of all rows and with ``y``
        centred at its overall mean, so that their row-weighted mean is
        ``T2``: their spread measures the noise of ``T2``.
    group_rows : ndarray of shape (K,) or None
        Rows of each group.
    """

    n_samples: int
    mean: np.ndarray
    cov: np.ndarray
    whitener: np.ndarray
    cov_eigvals: np.ndarray
    T0: float
    T1: np.ndarray
    T2: np.ndarray
    var_y: float
    normality: dict = field(default_factory=dict)
    t2_groups: np.ndarray = None
    group_rows: np.ndarray = None

    @property
    def n_features(self):
        return self.mean.shape[0]

    @property
    def residual_var(self):
        """``E[(y - T_0 - <T_1, z>)^2]``: the variance left after the affine part."""
        return max(self.var_y - float(self.T1 @ self.T1), 0.0)

    def t2_noise_floor(self):
        """Typical operator norm of the sampling error of ``T2``.

        About ``2 sqrt(d Var(y) / n)``: the edge of the semicircle of a
        symmetric d x d matrix whose entries have variance ``Var(y)/n``.
        """
        return 2.0 * np.sqrt(self.n_features * max(self.var_y, 0.0) / self.n_samples)


def _singular_covariance_message(cov, evals, evecs):
    diag = np.diag(cov)
    scale = max(float(np.max(np.abs(diag))), np.finfo(float).tiny)
    constant = np.flatnonzero(diag <= 1e-12 * scale)
    if constant.size == cov.shape[0]:
        return "x is constant (every column has zero variance; all-zero x?): the covariance cannot be whitened"
    if constant.size:
        return (
            f"columns {constant.tolist()} of x are constant (zero variance): "
            "the covariance is singular and cannot be whitened; drop those columns"
        )
    v = evecs[:, 0]
    involved = np.flatnonzero(np.abs(v) > 0.1 * np.max(np.abs(v)))
    return (
        f"columns {involved.tolist()} of x are collinear (a combination of them has variance "
        f"{evals[0]:.3g} against a largest eigenvalue of {evals[-1]:.3g}): "
        "the covariance is singular and cannot be whitened; drop redundant columns"
    )


def _mean_cov(sums, n):
    """Sample mean and (symmetrized) covariance of the summed rows ``x'``."""
    mean = sums["x"] / n
    cov = sums["xx"] / n - np.outer(mean, mean)
    cov = 0.5 * (cov + cov.T)
    return mean, cov


def _whitening(cov, lowp):
    """Eigenvalues of ``cov`` and ``cov^{-1/2}``; raises ValueError when ``cov`` is not finite or singular."""
    evals, evecs = np.linalg.eigh(cov)
    if not isfinite(float(evals[-1])):
        raise ValueError("the sample covariance of x is not finite")
    rtol = SINGULAR_RTOL["float32" if lowp else "float64"]
    if not evals[0] > rtol * max(evals[-1], 0.0):
        raise ValueError(_singular_covariance_message(cov, evals, evecs))
    whitener = (evecs / np.sqrt(evals)) @ evecs.T
    whitener = 0.5 * (whitener + whitener.T)
    return evals, whitener


def _check_gauss_state(state, plan):
    """The state's plan (zero shift when ``plan`` is None) after checking kind, count and key."""
    if state.kind != "gauss":
        raise ValueError(f"expected a 'gauss' state, got {state.kind!r}")
    n = state.count
    if n < 2:
        raise ValueError(f"need at least 2 rows to estimate moments, got {n}")
    if plan is None:
        plan = GaussPlan.zero(state.sums["x"].shape[0])
    if plan.key != state.key:
        raise ValueError(f"state {state.key!r} was not summed with the shift {plan.key!r}")
    return plan


def finalize_gauss(state, plan=None):
    """Turn a merged ``gauss`` state into :class:`GaussMoments`.

    Parameters
    ----------
    state : MomentState
    plan : GaussPlan, optional
        The shift the state was summed with (zero when omitted; its key must
        match the state's).

    Raises
    ------
    ValueError
        If the state is empty or the covariance of x is singular: its
        smallest eigenvalue is below ``1e-10`` of the largest (``1e-4`` when
        any rows were summed in float32, whose rounding, about ``1e-6`` of
        the covariance, could not tell a smaller eigenvalue from zero).

    Notes
    -----
    With the shifted rows ``x' = x - s``, ``y' = y - t`` and their sample
    means ``m'``, ``ybar'``: ``mean = s + m'``, ``cov = E[x' x'^T] - m' m'^T``,
    ``T_0 = t + ybar'``, ``T_1 = A (E[y' x'] - m' ybar')`` and
    ``T_2 = A S' A - ybar' I`` with ``S'`` the module's ``S`` in the shifted
    variables: the sample whitening makes both shifts drop out exactly.
    """
    plan = _check_gauss_state(state, plan)
    n = state.count
    s = state.sums
    mean, cov = _mean_cov(s, n)
    evals, whitener = _whitening(cov, float(s.get("lowp_rows", 0.0)) > 0)
    ybar = float(s["y"]) / n
    eyx = s["yx"] / n
    T1 = whitener @ (eyx - mean * ybar)
    S = s["yxx"] / n - np.outer(mean, eyx) - np.outer(eyx, mean) + ybar * np.outer(mean, mean)
    T2 = whitener @ S @ whitener - ybar * np.eye(mean.shape[0])
    T2 = 0.5 * (T2 + T2.T)
    var_y = float(s["yy"]) / n - ybar * ybar
    normality = normality_statistics(state).as_dict()
    groups = _group_t2(s, mean, ybar, whitener) if "g_F" in s else (None, None)
    mean = mean + plan.shift_x
    ybar = ybar + plan.shift_y
    return GaussMoments(
        n_samples=n,
        mean=mean,
        cov=cov,
        whitener=whitener,
        cov_eigvals=evals,
        T0=ybar,
        T1=T1,
        T2=T2,
        var_y=max(var_y, 0.0),
        normality=normality,
        t2_groups=groups[0],
        group_rows=groups[1],
    )


def _group_t2(s, mean, ybar, whitener):
    """``T_2`` of each row group (the :class:`GaussMoments` attribute ``t2_groups``) and the groups' rows.

    With the group's sums over shifted rows and the overall mean ``m'`` of
    ``x'`` and ``ybar'`` of ``y'``: ``T_2^g = A E_g[(y' - ybar') (x' - m')
    (x' - m')^T] A - (E_g[y'] - ybar') I``.  Groups without rows get zeros.
    """
    F, Q = s["g_F"], s["g_yxx"]
    d = mean.shape[0]
    out = np.zeros_like(Q)
    rows = F[:, 0, 0].copy()
    for g in np.flatnonzero(rows > 0):
        n_g = rows[g]
        x_g, y_g, P_g, X_g = F[g, 0, 1 : d + 1], F[g, 0, d + 1], F[g, 1 : d + 1, d + 1], F[g, 1 : d + 1, 1 : d + 1]
        weighted = Q[g] - np.outer(mean, P_g) - np.outer(P_g, mean) + y_g * np.outer(mean, mean)
        spread = X_g - np.outer(mean, x_g) - np.outer(x_g, mean) + n_g * np.outer(mean, mean)
        M = whitener @ ((weighted - ybar * spread) / n_g) @ whitener - (y_g / n_g - ybar) * np.eye(d)
        out[g] = 0.5 * (M + M.T)
    return out, rows


@dataclass(frozen=True)
class AffineFit:
    """A least-squares affine fit ``y ~ x @ coef + intercept``.

    Attributes
    ----------
    coef : ndarray of shape (n_features,)
    intercept : float
    n_rows : int
        Rows summed.
    """

    coef: np.ndarray
    intercept: float
    n_rows: int = 0


def affine_least_squares(state, rcond=1e-10, plan=None):
    """Least squares of ``y`` on ``[x, 1]`` from a merged ``gauss`` state (the centred normal equations).

    Parameters
    ----------
    state : MomentState
        A ``gauss`` state (:func:`gauss_chunk` sums).
    rcond : float, default 1e-10
        Cut-off of small singular values of the covariance (``numpy.linalg.lstsq``).
    plan : GaussPlan, optional
        The shift the state was summed with.  When given (its key must match
        the state's), the intercept is moved back to the unshifted ``x`` and
        ``y``; when omitted, the fit is that of the summed rows (exact for
        states of :func:`gauss_chunk` without a plan).

    Returns
    -------
    AffineFit
        ``coef`` solves ``cov u = E[y x] - mean E[y]`` and
        ``intercept = E[y] - <mean, u>``.

    Notes
    -----
    Solving the normal equations squares the condition number of ``[x, 1]``:
    the fit agrees with a least-squares solve on the rows to about
    ``cond(cov) eps`` relative.
    """
    if state.kind != "gauss":
        raise ValueError(f"expected a 'gauss' state, got {state.kind!r}")
    if plan is not None and plan.key != state.key:
        raise ValueError(f"state {state.key!r} was not summed with the shift {plan.key!r}")
    n = state.count
    s = state.sums
    mean, cov = _mean_cov(s, n)
    ybar = float(s["y"]) / n
    cross = s["yx"] / n - mean * ybar
    u, *_ = np.linalg.lstsq(cov, cross, rcond=rcond)
    intercept = ybar - float(mean @ u)
    if plan is not None:
        intercept = intercept + plan.shift_y - float(plan.shift_x @ u)
    return AffineFit(u, intercept, n)


def refreshed_affine_moments(gauss, state):
    """``gauss`` with ``T_0``, ``T_1`` and ``Var(y)`` re-estimated from every row of ``state``.

    ``T_1 = A (E[y x] - mu E[y])`` in ``gauss``'s whitening ``(mu, A)``, so
    it lives in the same coordinates as subspace moments planned from
    ``gauss``, while the orders 0 and 1 (which settle the units' signs) use
    all the rows of ``state`` (an unshifted ``gauss`` state).
    """
    n = state.count
    s = state.sums
    ybar = float(s["y"]) / n
    T1 = gauss.whitener @ (s["yx"] / n - gauss.mean * ybar)
    var_y = max(float(s["yy"]) / n - ybar * ybar, 0.0)
    return replace(gauss, T0=ybar, T1=T1, var_y=var_y)
