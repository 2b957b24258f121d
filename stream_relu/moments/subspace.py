"""The second (``subspace``) pass: order-2, 3 and 4 moments in the span ``U`` found by the first pass.

Keyed by a :class:`SubspacePlan`: in the ``m``-dimensional span ``U`` the
pass sums the order-2 moment with the order-0/1 control variate, and the full
symmetric order-3 and order-4 moments with the order-0/1/2 control variate.
The state holds ``O(m^4)`` numbers (``(m(m+1)/2)^2``); no array of ``d^3``
numbers ever exists.  This module imports numpy only.

Notes
-----
Control variates.  With ``z`` the whitened inputs of the first pass
(:mod:`stream_relu.moments.gauss`), ``U`` (d x m, orthonormal columns),
``v = U^T z``, ``r2 = y - T_0 - <T_1, z>`` and
``r3 = r2 - (v^T M v - tr M) / 2`` (``M`` the order-2 moment projected on
``U`` from the first pass)::

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

from dataclasses import dataclass, field

import numpy as np

from ._blocks import _round32, _shifted_blocks, _with_float64_fallback
from .gauss import GaussPlan
from .state import ChunkKernel, MomentState, digest

__all__ = [
    "SUBSPACE",
    "SubspacePlan",
    "SubspaceMoments",
    "pair_indices",
    "subspace_chunk",
    "finalize_subspace",
]


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
    groups : int
        Row groups of a joint pass's first-pass sums (:class:`GaussPlan`).
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
    groups: int = 0

    @classmethod
    def build(cls, gauss, basis, groups=0):
        """Plan the subspace pass from a first pass and a basis ``U``."""
        basis = np.ascontiguousarray(basis, dtype=np.float64)
        M2 = basis.T @ gauss.T2 @ basis
        return cls.from_parts(gauss.mean, gauss.whitener, basis, gauss.T0, gauss.T1, M2, groups)

    @classmethod
    def from_parts(cls, mean, whitener, basis, T0, T1, M2, groups=0):
        whitener, basis, T1, M2 = (np.ascontiguousarray(a, dtype=np.float64) for a in (whitener, basis, T1, M2))
        mean = _round32(mean)
        T0 = float(_round32(T0))
        key = "subspace-v2-" + digest(mean, whitener, basis, np.array(T0), T1, M2)
        if groups:
            key += f"-g{int(groups)}"
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
            groups=int(groups),
        )

    @property
    def n_hidden(self):
        return self.basis.shape[1]

    @property
    def gauss_plan(self):
        """The first-pass shift of a joint pass: this plan's centre and ``T0``."""
        return GaussPlan.from_shifts(self.mean, self.T0, self.groups)


def pair_indices(m):
    """Index arrays ``(i, j)`` of the pairs ``i <= j`` of ``range(m)``, row-major."""
    return np.triu_indices(m)


def _n_pairs(m):
    """Pairs ``i <= j`` of the ``m + 1`` homogeneous coordinates ``vt = (1, v)``."""
    return (m + 1) * (m + 2) // 2


def _subspace_width(d, m):
    """Columns of the working set of one block of rows (for the block size)."""
    return 2 * d + 2 * (m + 2) + _n_pairs(m)


def _subspace_acc(d, m):
    k = _n_pairs(m)
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
    DL, M2, trM2 = ops.DL, ops.M2, ops.trM2
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


@dataclass(frozen=True)
class _SubspaceOps:
    """A plan's operands in the work dtype: ``DL = [0, proj, lin]``, ``M2`` and its trace."""

    DL: np.ndarray
    M2: np.ndarray
    trM2: object


def _subspace_ops(plan, dt):
    DL = np.hstack([np.zeros((plan.proj.shape[0], 1)), plan.proj, plan.lin[:, None]])
    return _SubspaceOps(np.ascontiguousarray(DL, dtype=dt), plan.M2.astype(dt), dt(np.trace(plan.M2)))


def _subspace_state(acc, n, key):
    sums = {k: np.asarray(v) for k, v in acc.items() if k != "r2gxT"}
    sums["r2gx"] = np.ascontiguousarray(acc["r2gxT"].T)
    return MomentState("subspace", key, n, sums)


def _subspace_sums(x, y, plan, dt):
    n, d = x.shape
    ops = _subspace_ops(plan, dt)
    acc = _subspace_acc(d, plan.n_hidden)
    for _, Fb in _shifted_blocks(x, y, plan.mean, plan.T0, dt, _subspace_width(d, plan.n_hidden)):
        _subspace_block(Fb, ops, acc)
    return _subspace_state(acc, n, plan.key)


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
    accumulation across blocks, as in :func:`~stream_relu.moments.gauss_chunk`;
    ``r3ff`` is summed as two symmetric rank-k products of the rows split by
    the sign of ``r3`` and scaled by ``sqrt|r3|``.  Homogeneous coordinates
    ``vt = (1, v)`` let :func:`finalize_subspace` move the sums to any
    affine frame of ``v``: the plan's centre and whitening need not be the
    final ones.
    """
    x = np.asarray(x)
    return _with_float64_fallback(_subspace_sums, x, y, plan)


SUBSPACE = ChunkKernel("subspace", subspace_chunk)


@dataclass(frozen=True)
class SubspaceMoments:
    """Finalized subspace pass (coordinates ``v = U^T z`` of the final whitening).

    Attributes
    ----------
    n_samples : int
    basis : ndarray of shape (d, m)
        ``U``: orthonormal columns in the whitened coordinates ``z`` of the
        first pass's :class:`~stream_relu.moments.GaussMoments` (the plan's
        directions, re-whitened).
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


@dataclass(frozen=True)
class _Frame:
    """The map of the plan's homogeneous coordinates to the final ones: ``v = B vt``, ``U'``."""

    B: np.ndarray
    basis: np.ndarray


def _final_frame(plan, gauss, delta):
    """``B = [-L c, L]`` and ``U' = C A D L`` for the rows of ``gauss`` (see :func:`finalize_subspace`)."""
    D = plan.proj
    c = D.T @ delta
    S = D.T @ gauss.cov @ D
    evals, evecs = np.linalg.eigh(0.5 * (S + S.T))
    if not evals[0] > 0:
        raise np.linalg.LinAlgError("the plan's directions are degenerate over these rows")
    L = (evecs / np.sqrt(evals)) @ evecs.T
    B = np.hstack([-(L @ c)[:, None], L])
    basis = gauss.cov @ gauss.whitener @ D @ L
    return _Frame(B, basis)


@dataclass(frozen=True)
class _HigherOrder:
    """The order-3 and order-4 Hermite moments of :func:`_orders_3_4`."""

    T3: np.ndarray
    T4: np.ndarray


def _orders_3_4(r3ff, B, m):
    """``T_3`` and ``T_4`` from the mean ``r3ff`` sums, with the order-0/1/2 control variate ``r3``."""
    eye = np.eye(m)
    # Q[a,b,c,d] = E[r3 vt_a vt_b vt_c vt_d]
    Q = _sym_pairs_to_full(_sym_pairs_to_full(r3ff, m + 1).transpose(2, 0, 1), m + 1)
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
    return _HigherOrder(T3, T4)


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
    delta = gauss.mean - plan.mean
    frame = _final_frame(plan, gauss, delta)
    B = frame.B
    # order 2, with the order-0/1 control variate r2
    R2 = s["r2vv"] / n
    e2 = float(R2[0, 0])
    M2 = B @ R2 @ B.T - e2 * np.eye(m)
    M2 = 0.5 * (M2 + M2.T)
    Rx = s["r2gx"] / n  # E[r2 (x - mu_p) vt^T]
    T2U = gauss.whitener @ (Rx @ B.T - np.outer(delta, B @ R2[:, 0])) - e2 * frame.basis
    high = _orders_3_4(s["r3ff"] / n, B, m)
    return SubspaceMoments(
        n_samples=n,
        basis=frame.basis,
        M2=M2,
        T2U=T2U,
        T3=high.T3,
        T4=high.T4,
        var_r2=float(s["r2r2"]) / n,
        var_r3=float(s["r3r3"]) / n,
    )
