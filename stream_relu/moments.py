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
    "gauss_chunk",
    "subspace_chunk",
    "finalize_gauss",
    "finalize_subspace",
    "pair_indices",
    "digest",
    "normality_statistics",
    "projection_directions",
]

GAUSS_KEY = "gauss-v1"


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


N_PROJECTIONS = 8


def projection_directions(n_features):
    """Fixed unit directions (seeded by ``n_features``) for the normality check, shape (d, 8)."""
    G = np.random.default_rng([n_features, 31337]).standard_normal((n_features, N_PROJECTIONS))
    return G / np.linalg.norm(G, axis=0)


def gauss_chunk(x, y):
    """First-pass state of one chunk.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_features)
        Inputs, float32 or float64.
    y : ndarray of shape (n_rows,)
        Labels.

    Returns
    -------
    MomentState
        Sums ``x``, ``xx`` (= X^T X), ``y``, ``yy``, ``yx`` (= X^T y),
        ``yxx`` (= X^T diag(y) X), and ``p3``, ``p4``: sums of the third and
        fourth powers of ``[x, x G]`` (the columns and 8 fixed projections,
        :func:`projection_directions`) for the normality check; all float64.
    """
    x = _f64(x)
    y = _f64(y)
    xy = x * y[:, None]
    t = np.hstack([x, x @ projection_directions(x.shape[1])])
    t2 = t * t
    sums = {
        "p3": np.einsum("ij,ij->j", t2, t),
        "p4": np.einsum("ij,ij->j", t2, t2),
        "x": x.sum(axis=0),
        "xx": x.T @ x,
        "y": np.array(y.sum()),
        "yy": np.array(y @ y),
        "yx": xy.sum(axis=0),
        "yxx": xy.T @ x,
    }
    return MomentState("gauss", GAUSS_KEY, x.shape[0], sums)


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


def normality_statistics(state, mean, cov):
    """Skewness and excess kurtosis of the columns of x and of 8 fixed projections.

    For Gaussian x each of these ``d + 8`` variables is Gaussian, with
    sample skewness and excess kurtosis of standard errors ``sqrt(6/n)``
    and ``sqrt(24/n)``.

    Returns
    -------
    dict
        ``max_abs_skew``, ``max_abs_excess_kurtosis``, ``max_z`` (the
        largest of ``|skew| / sqrt(6/n)`` and ``|kurt| / sqrt(24/n)``) and
        ``worst`` (which variable reached it).
    """
    n = state.count
    d = mean.shape[0]
    G = projection_directions(d)
    m1 = np.concatenate([mean, mean @ G])
    var = np.concatenate([np.diag(cov), np.einsum("ij,ik,kj->j", G, cov, G)])
    e2 = var + m1 * m1
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
    }


def finalize_gauss(state):
    """Turn a merged ``gauss`` state into :class:`GaussMoments`.

    Raises
    ------
    ValueError
        If the state is empty or the covariance of x is singular.
    """
    if state.kind != "gauss":
        raise ValueError(f"expected a 'gauss' state, got {state.kind!r}")
    n = state.count
    if n < 2:
        raise ValueError(f"need at least 2 rows to estimate moments, got {n}")
    s = state.sums
    mean = s["x"] / n
    cov = s["xx"] / n - np.outer(mean, mean)
    cov = 0.5 * (cov + cov.T)
    evals, evecs = np.linalg.eigh(cov)
    if not isfinite(float(evals[-1])):
        raise ValueError("the sample covariance of x is not finite")
    if not evals[0] > 1e-10 * max(evals[-1], 0.0):
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
        normality=normality_statistics(state, mean, cov),
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
    """Inputs of the subspace pass, all fixed by the first pass.

    Attributes
    ----------
    mean : ndarray of shape (d,)
    whitener : ndarray of shape (d, d)
    basis : ndarray of shape (d, m)
        ``U``, orthonormal columns in whitened coordinates.
    T0 : float
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
    # Derived once: x -> v is affine, v = x @ proj - offset.
    proj: np.ndarray = field(default=None, repr=False, compare=False)
    offset: np.ndarray = field(default=None, repr=False, compare=False)
    lin: np.ndarray = field(default=None, repr=False, compare=False)
    lin_offset: float = field(default=0.0, repr=False, compare=False)

    @classmethod
    def build(cls, gauss, basis):
        """Plan the subspace pass from a first pass and a basis ``U``."""
        basis = np.ascontiguousarray(basis, dtype=np.float64)
        M2 = basis.T @ gauss.T2 @ basis
        return cls.from_parts(gauss.mean, gauss.whitener, basis, gauss.T0, gauss.T1, M2)

    @classmethod
    def from_parts(cls, mean, whitener, basis, T0, T1, M2):
        mean, whitener, basis, T1, M2 = (
            np.ascontiguousarray(a, dtype=np.float64) for a in (mean, whitener, basis, T1, M2)
        )
        key = "subspace-v1-" + digest(mean, whitener, basis, np.array(T0), T1, M2)
        proj = whitener @ basis
        lin = whitener @ T1
        return cls(
            mean=mean,
            whitener=whitener,
            basis=basis,
            T0=float(T0),
            T1=T1,
            M2=M2,
            key=key,
            proj=proj,
            offset=mean @ proj,
            lin=lin,
            lin_offset=float(mean @ lin),
        )

    @property
    def n_hidden(self):
        return self.basis.shape[1]


def pair_indices(m):
    """Index arrays ``(i, j)`` of the pairs ``i <= j`` of ``range(m)``, row-major."""
    return np.triu_indices(m)


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
        Sums ``r2``, ``r2r2``, ``r2v``, ``r2vv``, ``r2xv`` (d x m, raw x),
        ``r3``, ``r3r3``, ``r3v``,
        ``r3vv``, ``r3pv`` (pairs x m) and ``r3pp`` (pairs x pairs), where
        ``p`` holds the products ``v_i v_j``, ``i <= j``.
    """
    x = _f64(x)
    y = _f64(y)
    v = x @ plan.proj - plan.offset
    r2 = y - plan.T0 - (x @ plan.lin - plan.lin_offset)
    q = 0.5 * (np.einsum("ni,ni->n", v @ plan.M2, v) - np.trace(plan.M2))
    r3 = r2 - q
    i, j = pair_indices(v.shape[1])
    p = v[:, i] * v[:, j]
    r3p = p * r3[:, None]
    sums = {
        "r2": np.array(r2.sum()),
        "r2r2": np.array(r2 @ r2),
        "r2v": r2 @ v,
        "r2vv": (v * r2[:, None]).T @ v,
        "r2xv": (x * r2[:, None]).T @ v,
        "r3": np.array(r3.sum()),
        "r3r3": np.array(r3 @ r3),
        "r3v": r3 @ v,
        "r3vv": (v * r3[:, None]).T @ v,
        "r3pv": r3p.T @ v,
        "r3pp": r3p.T @ p,
    }
    return MomentState("subspace", plan.key, x.shape[0], sums)


@dataclass(frozen=True)
class SubspaceMoments:
    """Finalized subspace pass (coordinates ``v = U^T z``).

    Attributes
    ----------
    n_samples : int
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


def finalize_subspace(state, plan):
    """Turn a merged ``subspace`` state into :class:`SubspaceMoments`."""
    if state.kind != "subspace" or state.key != plan.key:
        raise ValueError(f"state {state.key!r} was not computed with plan {plan.key!r}")
    n = state.count
    m = plan.n_hidden
    s = state.sums
    eye = np.eye(m)
    M2 = s["r2vv"] / n - (float(s["r2"]) / n) * eye
    M2 = 0.5 * (M2 + M2.T)
    # E[r2 z v^T] with z = A (x - mu): A (E[r2 x v^T] - mu E[r2 v]^T)
    T2U = plan.whitener @ (s["r2xv"] / n - np.outer(plan.mean, s["r2v"] / n)) - (float(s["r2"]) / n) * plan.basis
    e3 = float(s["r3"]) / n
    e3v = s["r3v"] / n
    e3vv = s["r3vv"] / n
    F3 = _sym_pairs_to_full(s["r3pv"] / n, m)  # E[r3 v_i v_j v_k]
    T3 = (
        F3
        - np.einsum("i,jk->ijk", e3v, eye)
        - np.einsum("j,ik->ijk", e3v, eye)
        - np.einsum("k,ij->ijk", e3v, eye)
    )
    # E[r3 v_i v_j v_k v_l]; the gemm behind r3pp need not be bitwise symmetric.
    F4 = _sym_pairs_to_full(_sym_pairs_to_full(s["r3pp"] / n, m).transpose(2, 0, 1), m)
    F4 = 0.5 * (F4 + F4.transpose(2, 3, 0, 1))
    T4 = (
        F4
        - np.einsum("ij,kl->ijkl", e3vv, eye)
        - np.einsum("ik,jl->ijkl", e3vv, eye)
        - np.einsum("il,jk->ijkl", e3vv, eye)
        - np.einsum("jk,il->ijkl", e3vv, eye)
        - np.einsum("jl,ik->ijkl", e3vv, eye)
        - np.einsum("kl,ij->ijkl", e3vv, eye)
        + e3
        * (
            np.einsum("ij,kl->ijkl", eye, eye)
            + np.einsum("ik,jl->ijkl", eye, eye)
            + np.einsum("il,jk->ijkl", eye, eye)
        )
    )
    return SubspaceMoments(
        n_samples=n,
        M2=M2,
        T2U=T2U,
        T3=T3,
        T4=T4,
        var_r2=float(s["r2r2"]) / n,
        var_r3=float(s["r3r3"]) / n,
    )
