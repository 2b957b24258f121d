"""Mergeable moment states: per-chunk kernels and the finalization into Hermite moments.

A :class:`MomentState` is a value: raw float64 sums and an integer count,
merged by ``+`` with ``0`` as the identity.  Division happens once, in the
``finalize`` functions.  Two passes over the data are used:

``gauss`` pass (no inputs)
    Sums that give the input mean and covariance, ``T_0``, ``T_1`` and the
    full ``d x d`` ``T_2`` in whitened coordinates.
``subspace`` pass (keyed by a :class:`SubspacePlan`)
    In the ``m``-dimensional span ``U`` found by the first pass: the order-2
    moment with the order-0/1 control variate, and the full symmetric order-3
    and order-4 moments with the order-0/1/2 control variate.

The state size is ``O(d^2)`` for the first pass and ``O(m^4)`` for the second
(``(m(m+1)/2)^2`` numbers); no array of ``d^3`` numbers ever exists.

This module imports numpy only.

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

Subspace pass.  With ``U`` (d x m, orthonormal columns), ``v = U^T z``,
``r2 = y - T_0 - <T_1, z>`` and ``r3 = r2 - (v^T M v - tr M) / 2`` (``M`` the
order-2 moment projected on ``U`` from the first pass)::

    M_2 = E[r2 (v v^T - I)]
    T_2 U = E[r2 (z v^T - U)]          (d x m, from sums of r2 x v^T)
    T_3 = E[r3 He_3(v)],  He_3(v)_ijk = v_i v_j v_k - (v_i d_jk + v_j d_ik + v_k d_ij)
    T_4 = E[r3 He_4(v)],  He_4(v)_ijkl = v_i v_j v_k v_l - (sum of 6 terms v_a v_b d_cd)
                                          + (d_ij d_kl + d_ik d_jl + d_il d_jk)

Hermite orthogonality makes the subtracted parts control variates: the
targets are unchanged (``He_3``, ``He_4`` are orthogonal to polynomials of
degree <= 2) and the variance drops.  ``He_k(z)[U, ..., U] = He_k(U^T z)``
holds for orthonormal ``U``, so ``T_k`` here is the full tensor projected on
``U`` whether or not the ``w_i`` lie exactly in its span.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from math import isfinite

import numpy as np

__all__ = [
    "MomentState",
    "SubspacePlan",
    "GaussMoments",
    "SubspaceMoments",
    "GaussPlan",
    "gauss_chunk",
    "subspace_chunk",
    "joint_chunk",
    "split_joint",
    "finalize_gauss",
    "finalize_subspace",
    "pair_indices",
    "digest",
    "normality_statistics",
    "projection_directions",
]

GAUSS_KEY = "gauss-v2"


class MomentState:
    """Raw float64 sums of one pass plus the row count; merged by ``+``.

    Parameters
    ----------
    kind : str
        ``"gauss"`` or ``"subspace"``.
    key : str
        Identity of the pass's inputs (a hash of the plan); states merge only
        with states of the same kind and key.
    count : int
        Number of rows summed.
    sums : dict of str to ndarray
        float64 arrays; the same names and shapes in every state of a pass.

    Notes
    -----
    ``0 + s`` is ``s`` so Python's ``sum`` works.  IEEE addition is
    commutative but not associative: combine states in a fixed order over
    chunk indices to get bitwise reproducible results.
    """

    __slots__ = ("kind", "key", "count", "sums")

    def __init__(self, kind, key, count, sums):
        self.kind = kind
        self.key = key
        self.count = int(count)
        self.sums = sums

    def __add__(self, other):
        if isinstance(other, int) and other == 0:
            return self
        if not isinstance(other, MomentState):
            return NotImplemented
        if (other.kind, other.key) != (self.kind, self.key):
            raise ValueError(
                f"cannot merge a {other.kind!r} state keyed {other.key!r} into a "
                f"{self.kind!r} state keyed {self.key!r}"
            )
        if other.sums.keys() != self.sums.keys():
            raise ValueError("cannot merge moment states with different sums")
        return MomentState(
            self.kind,
            self.key,
            self.count + other.count,
            {k: self.sums[k] + other.sums[k] for k in self.sums},
        )

    __radd__ = __add__

    def nbytes(self):
        """Size of the sums in bytes."""
        return sum(v.nbytes for v in self.sums.values())

    def to_arrays(self):
        """Flat mapping of plain arrays (for persistence without pickles)."""
        out = {f"sum/{k}": v for k, v in self.sums.items()}
        out["count"] = np.array(self.count, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, kind, key, arrays):
        """Inverse of :meth:`to_arrays`."""
        sums = {k[4:]: np.asarray(v, dtype=np.float64) for k, v in arrays.items() if k.startswith("sum/")}
        return cls(kind, key, int(arrays["count"]), sums)

    def __eq__(self, other):
        if not isinstance(other, MomentState):
            return NotImplemented
        return (
            (self.kind, self.key, self.count) == (other.kind, other.key, other.count)
            and self.sums.keys() == other.sums.keys()
            and all(np.array_equal(self.sums[k], other.sums[k]) for k in self.sums)
        )

    def __repr__(self):
        return f"MomentState(kind={self.kind!r}, key={self.key!r}, count={self.count}, sums={sorted(self.sums)})"


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _round32(a):
    """``a`` rounded to the nearest float32 values, as float64 (exact in either dtype)."""
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


N_PROJECTIONS = 8
BLOCK_BYTES = 1 << 22  # working set of one block of rows (inputs plus products)
MAX_BLOCK_ROWS = 4096


def projection_directions(n_features):
    """Fixed unit directions (seeded by ``n_features``) for the normality check, shape (d, 8)."""
    G = np.random.default_rng([n_features, 31337]).standard_normal((n_features, N_PROJECTIONS))
    return G / np.linalg.norm(G, axis=0)


def _work_dtype(x):
    """float32 products for float32 inputs, float64 otherwise."""
    return np.float32 if x.dtype == np.float32 else np.float64


def _block_rows(width, itemsize):
    """Rows per block: a power of two whose ``width`` columns fit in ``BLOCK_BYTES``."""
    rows = BLOCK_BYTES // max(width * itemsize, 1)
    return int(max(256, min(MAX_BLOCK_ROWS, 1 << (max(rows, 1).bit_length() - 1))))


def _signed_gram(acc, F, weights):
    """Add ``F^T diag(weights) F`` to the float64 ``acc`` with two symmetric rank-k products.

    Rows are split by the sign of their weight and scaled by ``sqrt|weight|``,
    so each half is ``A^T A`` (numpy uses the symmetric BLAS product for it):
    half the work of a general product and exactly symmetric.
    """
    scale = np.sqrt(np.abs(weights))
    A = F * scale[:, None]
    pos = weights > 0
    P = A[pos]
    N = A[~pos]
    if P.shape[0]:
        acc += P.T @ P
    if N.shape[0]:
        acc -= N.T @ N


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
        ``"gauss-v2-"`` and a digest of the shifts: states of different
        shifts never merge.
    """

    shift_x: np.ndarray
    shift_y: float
    key: str = field(default="", compare=False)

    @classmethod
    def from_shifts(cls, shift_x, shift_y):
        shift_x = _round32(np.atleast_1d(shift_x))
        shift_y = float(_round32(shift_y))
        return cls(shift_x, shift_y, GAUSS_KEY + "-" + digest(shift_x, np.array(shift_y)))

    @classmethod
    def from_sample(cls, x, y):
        """Shifts from a sample of rows (their finite rows' means; zero when there are none)."""
        x = _f64(x)
        y = _f64(y).reshape(-1)
        good = np.isfinite(y) & np.isfinite(x).all(axis=1)
        if not good.any():
            return cls.zero(x.shape[1])
        return cls.from_shifts(x[good].mean(axis=0), y[good].mean())

    @classmethod
    def zero(cls, n_features):
        return cls.from_shifts(np.zeros(n_features), 0.0)


def _with_float64_fallback(sums, x, y, plan, **kwargs):
    """``sums(x, y, plan, dtype)`` in the work dtype; again in float64 if float32 sums are not finite.

    Non-finite sums mean an overflow of float32 products (then float64
    helps) or NaN/infinity in the rows (then the engine drops those rows
    and calls again).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        state = sums(x, y, plan, _work_dtype(x), **kwargs)
        if state.count and x.dtype == np.float32 and not _finite(state):
            state = sums(x, y, plan, np.float64, **kwargs)
    return state


def _finite(state):
    return all(np.isfinite(v).all() for v in state.sums.values())


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
    ``y'``-weighted part, two on the rows split by the sign of ``y'``
    (:func:`_signed_gram`); the blocks' results are accumulated in float64.
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


NORMALITY_EVERY = 8  # the normality sums use every 8th block of rows of a chunk (its first always)


def _gauss_block(Fb, Yx, G, acc, normality):
    """Add one block's first-pass products to ``acc``; ``Fb = [1, x', y']`` in the work dtype."""
    d = Fb.shape[1] - 2
    xb = Fb[:, 1 : d + 1]
    acc["F1F1"] += Fb.T @ Fb
    np.multiply(xb, Fb[:, d + 1 : d + 2], out=Yx)
    acc["yxx"] += xb.T @ Yx
    if normality:
        # power sums of t = [x', x' G]: column sums as products with a vector of ones
        b = Fb.shape[0]
        T = np.empty((b, d + N_PROJECTIONS), dtype=Fb.dtype)
        T2 = np.empty_like(T)
        ones = Fb[:, 0]
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


def _gauss_acc(d):
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
    return MomentState("gauss", key, n, sums)


def _shifted_blocks(x, y, shift_x, shift_y, dt, width):
    """Yield ``(j, Fb)`` with ``Fb = [1, x - shift_x, y - shift_y]`` for each block ``j`` of rows."""
    n, d = x.shape
    y = np.asarray(y).reshape(-1)
    rows = _block_rows(width, np.dtype(dt).itemsize)
    F = np.empty((max(min(rows, n), 0), d + 2), dtype=dt)
    F[:, 0] = 1
    sx = shift_x.astype(dt)
    sy = dt(shift_y)
    for j, lo in enumerate(range(0, n, rows)):
        hi = min(lo + rows, n)
        Fb = F[: hi - lo]
        np.subtract(x[lo:hi], sx, out=Fb[:, 1 : d + 1], casting="unsafe")
        np.subtract(y[lo:hi], sy, out=Fb[:, d + 1], casting="unsafe")
        yield j, Fb


def _gauss_sums(x, y, plan, dt):
    n, d = x.shape
    G = projection_directions(d).astype(dt)
    acc = _gauss_acc(d)
    Yx = None
    for j, Fb in _shifted_blocks(x, y, plan.shift_x, plan.shift_y, dt, 3 * d + 2 * N_PROJECTIONS + 2):
        if Yx is None or Yx.shape[0] != Fb.shape[0]:
            Yx = np.empty((Fb.shape[0], d), dtype=dt)
        _gauss_block(Fb, Yx, G, acc, j % NORMALITY_EVERY == 0)
    return _gauss_state(acc, n, d, dt, plan.key)


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
        projections (:func:`normality_statistics`).
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


def normality_statistics(state):
    """Skewness and excess kurtosis of the columns of x and of 8 fixed projections.

    For Gaussian x each of these ``d + 8`` variables is Gaussian, with
    sample skewness and excess kurtosis of standard errors ``sqrt(6/n)``
    and ``sqrt(24/n)``, ``n`` the rows of the normality sums (every
    ``NORMALITY_EVERY``-th block of each chunk; their own first four raw
    moments, so the statistics are those of that sample alone).

    Returns
    -------
    dict
        ``max_abs_skew``, ``max_abs_excess_kurtosis``, ``max_z`` (the
        largest of ``|skew| / sqrt(6/n)`` and ``|kurt| / sqrt(24/n)``),
        ``worst`` (which variable reached it) and ``rows``.
    """
    n = float(state.sums["norm_rows"])
    d = state.sums["x"].shape[0]
    if n < 4:  # a joint pass leaves the check to its pilot
        return {
            "max_abs_skew": 0.0,
            "max_abs_excess_kurtosis": 0.0,
            "max_z": 0.0,
            "worst": "none (no rows checked)",
            "worst_skew": 0.0,
            "worst_excess_kurtosis": 0.0,
            "rows": int(n),
        }
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
    worst = f"column {j} of x" if j < d else f"projection {j - d} of x"
    return {
        "max_abs_skew": float(np.max(np.abs(skew))),
        "max_abs_excess_kurtosis": float(np.max(np.abs(kurt))),
        "max_z": float(z[j]),
        "worst": worst,
        "worst_skew": float(skew[j]),
        "worst_excess_kurtosis": float(kurt[j]),
        "rows": int(n),
    }


SINGULAR_RTOL = {"float64": 1e-10, "float32": 1e-4}


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
    if state.kind != "gauss":
        raise ValueError(f"expected a 'gauss' state, got {state.kind!r}")
    n = state.count
    if n < 2:
        raise ValueError(f"need at least 2 rows to estimate moments, got {n}")
    s = state.sums
    d = s["x"].shape[0]
    if plan is None:
        plan = GaussPlan.zero(d)
    if plan.key != state.key:
        raise ValueError(f"state {state.key!r} was not summed with the shift {plan.key!r}")
    mean = s["x"] / n
    cov = s["xx"] / n - np.outer(mean, mean)
    cov = 0.5 * (cov + cov.T)
    evals, evecs = np.linalg.eigh(cov)
    if not isfinite(float(evals[-1])):
        raise ValueError("the sample covariance of x is not finite")
    rtol = SINGULAR_RTOL["float32" if float(s.get("lowp_rows", 0.0)) > 0 else "float64"]
    if not evals[0] > rtol * max(evals[-1], 0.0):
        raise ValueError(_singular_covariance_message(cov, evals, evecs))
    whitener = (evecs / np.sqrt(evals)) @ evecs.T
    whitener = 0.5 * (whitener + whitener.T)
    ybar = float(s["y"]) / n
    eyx = s["yx"] / n
    T1 = whitener @ (eyx - mean * ybar)
    S = s["yxx"] / n - np.outer(mean, eyx) - np.outer(eyx, mean) + ybar * np.outer(mean, mean)
    T2 = whitener @ S @ whitener - ybar * np.eye(mean.shape[0])
    T2 = 0.5 * (T2 + T2.T)
    var_y = float(s["yy"]) / n - ybar * ybar
    normality = normality_statistics(state)
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
    )


def digest(*arrays):
    """Short sha256 digest of float64 arrays (shapes included): the key of a plan."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class SubspacePlan:
    """Inputs of the subspace pass, fixed by a first pass (over all rows or a pilot sample).

    Attributes
    ----------
    mean : ndarray of shape (d,)
        The centre ``mu_p`` of the pass (rounded to float32 values).
    whitener : ndarray of shape (d, d)
    basis : ndarray of shape (d, m)
        ``U``, orthonormal columns in the plan's whitened coordinates.
    T0 : float
        (Rounded to a float32 value.)
    T1 : ndarray of shape (d,)
    M2 : ndarray of shape (m, m)
        ``U^T T_2 U`` from the first pass (the order-2 control variate).
    key : str
        Digest of all of the above: states of different plans never merge.
    """

    mean: np.ndarray
    whitener: np.ndarray
    basis: np.ndarray
    T0: float
    T1: np.ndarray
    M2: np.ndarray
    key: str = field(default="", compare=False)
    # Derived once: v = (x - mean) @ proj, the linear part (x - mean) @ lin.
    proj: np.ndarray = field(default=None, repr=False, compare=False)
    lin: np.ndarray = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, gauss, basis):
        """Plan the subspace pass from a first pass and a basis ``U``."""
        basis = np.ascontiguousarray(basis, dtype=np.float64)
        M2 = basis.T @ gauss.T2 @ basis
        return cls.from_parts(gauss.mean, gauss.whitener, basis, gauss.T0, gauss.T1, M2)

    @classmethod
    def from_parts(cls, mean, whitener, basis, T0, T1, M2):
        whitener, basis, T1, M2 = (np.ascontiguousarray(a, dtype=np.float64) for a in (whitener, basis, T1, M2))
        mean = _round32(mean)
        T0 = float(_round32(T0))
        key = "subspace-v2-" + digest(mean, whitener, basis, np.array(T0), T1, M2)
        return cls(
            mean=mean,
            whitener=whitener,
            basis=basis,
            T0=T0,
            T1=T1,
            M2=M2,
            key=key,
            proj=whitener @ basis,
            lin=whitener @ T1,
        )

    @property
    def n_hidden(self):
        return self.basis.shape[1]

    @property
    def gauss_plan(self):
        """The first-pass shift of a joint pass: this plan's centre and ``T0``."""
        return GaussPlan.from_shifts(self.mean, self.T0)


def pair_indices(m):
    """Index arrays ``(i, j)`` of the pairs ``i <= j`` of ``range(m)``, row-major."""
    return np.triu_indices(m)


def _subspace_acc(d, m):
    k = (m + 1) * (m + 2) // 2
    return {
        "r2gxT": np.zeros((m + 1, d)),
        "r2vv": np.zeros((m + 1, m + 1)),
        "r3ff": np.zeros((k, k)),
        "r2r2": np.zeros(()),
        "r3r3": np.zeros(()),
    }


def _pair_products(vtT, scale):
    """Rows ``(scale * vt_i) * vt_j`` for the pairs ``i <= j`` (row-major), one row each.

    Works on the transposed layout (one contiguous row per coordinate), so
    every product is a long contiguous vector operation.
    """
    m1 = vtT.shape[0]
    sv = vtT * scale
    FT = np.empty((m1 * (m1 + 1) // 2, vtT.shape[1]), dtype=vtT.dtype)
    off = 0
    for i in range(m1):
        np.multiply(vtT[i:], sv[i], out=FT[off : off + m1 - i])
        off += m1 - i
    return FT


def _subspace_block(Fb, ops, acc):
    """Add one block's second-pass products; ``Fb = [1, x', y']`` shifted by the plan's centre and ``T0``."""
    DL, M2, trM2 = ops
    d = Fb.shape[1] - 2
    m = M2.shape[0]
    xb = Fb[:, 1 : d + 1]
    PT = np.ascontiguousarray((xb @ DL).T)  # rows: 0, v, lin (the row-major product is the faster one)
    PT[0] = 1
    vtT = PT[: m + 1]
    vT = PT[1 : m + 1]
    r2 = Fb[:, d + 1] - PT[m + 1]
    r3 = r2 - 0.5 * (np.einsum("ib,ib->b", M2 @ vT, vT) - trM2)
    RT = vtT * r2
    acc["r2gxT"] += RT @ xb
    acc["r2vv"] += vtT @ RT.T
    acc["r2r2"] += r2 @ r2
    acc["r3r3"] += r3 @ r3
    pos = r3 > 0
    for cols, sign in ((np.flatnonzero(pos), 1.0), (np.flatnonzero(~pos), -1.0)):
        if cols.size:
            # np.take keeps the gathered rows C-contiguous (fancy indexing here would not)
            FT = _pair_products(np.take(vtT, cols, axis=1), np.sqrt(np.abs(np.take(r3, cols))))
            if sign > 0:
                acc["r3ff"] += FT @ FT.T
            else:
                acc["r3ff"] -= FT @ FT.T


def _subspace_ops(plan, dt):
    DL = np.hstack([np.zeros((plan.proj.shape[0], 1)), plan.proj, plan.lin[:, None]])
    return np.ascontiguousarray(DL, dtype=dt), plan.M2.astype(dt), dt(np.trace(plan.M2))


def _subspace_state(acc, n, key):
    sums = {k: np.asarray(v) for k, v in acc.items() if k != "r2gxT"}
    sums["r2gx"] = np.ascontiguousarray(acc["r2gxT"].T)
    return MomentState("subspace", key, n, sums)


def _subspace_sums(x, y, plan, dt, joint):
    n, d = x.shape
    m = plan.n_hidden
    ops = _subspace_ops(plan, dt)
    acc = _subspace_acc(d, m)
    k = (m + 1) * (m + 2) // 2
    width = 2 * d + 2 * (m + 2) + k + (d if joint else 0)
    gacc = _gauss_acc(d) if joint else None
    Yx = None
    for _, Fb in _shifted_blocks(x, y, plan.mean, plan.T0, dt, width):
        _subspace_block(Fb, ops, acc)
        if joint:
            if Yx is None or Yx.shape[0] != Fb.shape[0]:
                Yx = np.empty((Fb.shape[0], d), dtype=dt)
            _gauss_block(Fb, Yx, None, gacc, False)
    sub = _subspace_state(acc, n, plan.key)
    if not joint:
        return sub
    gauss = _gauss_state(gacc, n, d, dt, plan.gauss_plan.key)
    sums = {f"g/{k}": v for k, v in gauss.sums.items()}
    sums.update({f"s/{k}": v for k, v in sub.sums.items()})
    return MomentState("joint", plan.key, n, sums)


def subspace_chunk(x, y, plan):
    """Second-pass state of one chunk.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_features)
    y : ndarray of shape (n_rows,)
    plan : SubspacePlan

    Returns
    -------
    MomentState
        With ``x' = x - mu_p``, ``v = x' proj`` (``proj = A_p U``),
        ``vt = (1, v)``, ``r2 = y - T0_p - x' lin`` and
        ``r3 = r2 - (v^T M v - tr M) / 2``: sums ``r2gx`` (``X'^T diag(r2) Vt``,
        d x (m+1)), ``r2vv`` (``Vt^T diag(r2) Vt``), ``r3ff``
        (``Ft^T diag(r3) Ft`` where ``Ft`` holds the products
        ``vt_i vt_j``, ``i <= j``: every moment of ``r3`` against monomials
        of ``v`` of degree <= 4), ``r2r2`` and ``r3r3``.

    Notes
    -----
    Blocks of rows, products in the input's precision and float64
    accumulation across blocks, as in :func:`gauss_chunk`; ``r3ff`` is
    summed as two symmetric rank-k products of the rows split by the sign
    of ``r3`` and scaled by ``sqrt|r3|``.  Homogeneous coordinates
    ``vt = (1, v)`` let :func:`finalize_subspace` move the sums to any
    affine frame of ``v``: the plan's centre and whitening need not be the
    final ones.
    """
    x = np.asarray(x)
    return _with_float64_fallback(_subspace_sums, x, y, plan, joint=False)


def joint_chunk(x, y, plan):
    """Both passes' sums of one chunk in one read: the first pass shifted by the plan's centre.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_features)
    y : ndarray of shape (n_rows,)
    plan : SubspacePlan
        Usually planned from a pilot sample of chunks.

    Returns
    -------
    MomentState
        Kind ``"joint"``: the sums of :func:`gauss_chunk` under
        ``plan.gauss_plan`` prefixed ``g/`` and those of
        :func:`subspace_chunk` prefixed ``s/``; :func:`split_joint` parts them.
    """
    x = np.asarray(x)
    return _with_float64_fallback(_subspace_sums, x, y, plan, joint=True)


def split_joint(state, plan):
    """The ``gauss`` and ``subspace`` states inside a merged ``joint`` state."""
    if state.kind != "joint" or state.key != plan.key:
        raise ValueError(f"state {state.kind!r} {state.key!r} is not a joint state of plan {plan.key!r}")
    g = {k[2:]: v for k, v in state.sums.items() if k.startswith("g/")}
    s = {k[2:]: v for k, v in state.sums.items() if k.startswith("s/")}
    return (
        MomentState("gauss", plan.gauss_plan.key, state.count, g),
        MomentState("subspace", plan.key, state.count, s),
    )


@dataclass(frozen=True)
class SubspaceMoments:
    """Finalized subspace pass (coordinates ``v = U^T z`` of the final whitening).

    Attributes
    ----------
    n_samples : int
    basis : ndarray of shape (d, m)
        ``U``: orthonormal columns in the whitened coordinates ``z`` of the
        first pass's :class:`GaussMoments` (the plan's directions, re-whitened).
    M2 : ndarray of shape (m, m)
        ``E[y He_2(v)]`` with the order-0/1 control variate.
    T2U : ndarray of shape (d, m)
        ``T_2 U = E[y He_2(z)[:, U]] = E[r2 (z v^T - U)]``, the full-dimensional
        order-2 moment against the subspace, with the order-0/1 control
        variate (it locates the ``w_i`` outside ``span U``).
    T3 : ndarray of shape (m, m, m)
        ``E[y He_3(v)]`` (unnormalized He convention).
    T4 : ndarray of shape (m, m, m, m)
        ``E[y He_4(v)]``.
    var_r2, var_r3 : float
        Mean squares of the two residuals (noise levels of the estimates).
    """

    n_samples: int
    basis: np.ndarray
    M2: np.ndarray
    T2U: np.ndarray
    T3: np.ndarray
    T4: np.ndarray
    var_r2: float
    var_r3: float


def _sym_pairs_to_full(pairs_first, m):
    """Map an array indexed by pair (i<=j) along axis 0 to (m, m, ...) symmetric in (i, j)."""
    idx = np.empty((m, m), dtype=np.intp)
    i, j = pair_indices(m)
    idx[i, j] = np.arange(i.size)
    idx[j, i] = idx[i, j]
    return pairs_first[idx]


def _multilinear(T, B):
    """``T`` with the matrix ``B`` applied along every axis: ``T'_{i..} = B_ia ... T_{a..}``."""
    for _ in range(T.ndim):
        T = np.tensordot(T, B, axes=([0], [1]))
    return T


def _sym_outer_eye(V, eye):
    """Sum over the 6 placements of the symmetric matrix ``V`` and ``I`` in a 4-index tensor."""
    return (
        np.einsum("ij,kl->ijkl", V, eye)
        + np.einsum("ik,jl->ijkl", V, eye)
        + np.einsum("il,jk->ijkl", V, eye)
        + np.einsum("jk,il->ijkl", V, eye)
        + np.einsum("jl,ik->ijkl", V, eye)
        + np.einsum("kl,ij->ijkl", V, eye)
    )


def finalize_subspace(state, plan, gauss):
    """Turn a merged ``subspace`` state into :class:`SubspaceMoments`.

    Parameters
    ----------
    state : MomentState
    plan : SubspacePlan
        The plan the state was summed under.
    gauss : GaussMoments
        The first pass over the same rows: its mean and whitening define
        the final coordinates.

    Notes
    -----
    The plan's coordinates are ``v_p = D^T (x - mu_p)``, ``D = A_p U``.  Over
    the rows of ``gauss`` (mean ``mu``, covariance ``C``, whitener ``A``)
    they have mean ``c = D^T (mu - mu_p)`` and covariance ``S = D^T C D``;
    ``v = L (v_p - c)`` with ``L = S^{-1/2}`` then has sample mean 0 and
    covariance ``I`` exactly, and ``v = U'^T z`` for the orthonormal
    ``U' = C^{1/2} D L``.  In homogeneous coordinates ``vt = (1, v_p)``,
    ``v = B vt`` with ``B = [-L c, L]``, so every sum of ``r vt^(x)k``
    maps to ``E[r v^(x)k]`` by applying ``B`` along each axis; the Hermite
    tensors follow as in the module Notes.  With a plan from the same rows,
    ``c = 0`` and ``L = I`` up to rounding.
    """
    if state.kind != "subspace" or state.key != plan.key:
        raise ValueError(f"state {state.key!r} was not computed with plan {plan.key!r}")
    n = state.count
    m = plan.n_hidden
    s = state.sums
    eye = np.eye(m)
    D = plan.proj
    delta = gauss.mean - plan.mean
    c = D.T @ delta
    S = D.T @ gauss.cov @ D
    evals, evecs = np.linalg.eigh(0.5 * (S + S.T))
    if not evals[0] > 0:
        raise np.linalg.LinAlgError("the plan's directions are degenerate over these rows")
    L = (evecs / np.sqrt(evals)) @ evecs.T
    B = np.hstack([-(L @ c)[:, None], L])
    basis = gauss.cov @ gauss.whitener @ D @ L
    # order 2, with the order-0/1 control variate r2
    R2 = s["r2vv"] / n
    e2 = float(R2[0, 0])
    M2 = B @ R2 @ B.T - e2 * eye
    M2 = 0.5 * (M2 + M2.T)
    Rx = s["r2gx"] / n  # E[r2 (x - mu_p) vt^T]
    T2U = gauss.whitener @ (Rx @ B.T - np.outer(delta, B @ R2[:, 0])) - e2 * basis
    # orders 3 and 4, with the order-0/1/2 control variate r3: Q[a,b,c,d] = E[r3 vt_a vt_b vt_c vt_d]
    Q = _sym_pairs_to_full(_sym_pairs_to_full(s["r3ff"] / n, m + 1).transpose(2, 0, 1), m + 1)
    Q = (Q + Q.transpose(0, 2, 1, 3) + Q.transpose(0, 3, 2, 1)) / 3.0
    F4 = _multilinear(Q, B)
    F3 = _multilinear(Q[0], B)
    e3vv = B @ Q[0, 0] @ B.T
    e3v = B @ Q[0, 0, 0]
    e3 = float(Q[0, 0, 0, 0])
    T3 = (
        F3
        - np.einsum("i,jk->ijk", e3v, eye)
        - np.einsum("j,ik->ijk", e3v, eye)
        - np.einsum("k,ij->ijk", e3v, eye)
    )
    T4 = F4 - _sym_outer_eye(e3vv, eye) + e3 * (
        np.einsum("ij,kl->ijkl", eye, eye) + np.einsum("ik,jl->ijkl", eye, eye) + np.einsum("il,jk->ijkl", eye, eye)
    )
    return SubspaceMoments(
        n_samples=n,
        basis=basis,
        M2=M2,
        T2U=T2U,
        T3=T3,
        T4=T4,
        var_r2=float(s["r2r2"]) / n,
        var_r3=float(s["r3r3"]) / n,
    )
