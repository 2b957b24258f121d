"""Joint decomposition of Hermite moments of orders 2, 3 and 4 in ``m`` dimensions.

Given estimates of

    M_2 = sum_i lam2_i v_i v_i^T,  T_3 = sum_i lam3_i v_i^(x)3,  T_4 = sum_i lam4_i v_i^(x)4

with ``lam_k = a c_k(b)`` (unnormalized ``He_k`` convention, see
:mod:`stream_relu.hermite`), find the unit vectors ``v_i`` and the per-unit
``(a_i, b_i)``.  Imports numpy and scipy only.

Notes
-----
Simultaneous diagonalization (Jennrich).  For a random matrix slice
``S = alpha T_3[., ., g] + beta T_4[., ., g', h'] = V diag(s) V^T`` the matrix
``S M_2^{-1} = V diag(s / lam2) V^{-1}`` has the ``v_i`` as eigenvectors, with
eigenvalues ``alpha (-b_i) <v_i, g> + beta (b_i^2 - 1) <v_i, g'><v_i, h'>``
(up to the normalizations): ``a_i`` cancels, so mixed signs do not matter.
A single order can carry no signal (``c_3(0) = 0``, ``c_4(+-1) = 0``), so
draws of three kinds are tried (order 3 only, order 4 only, mixed) and the
draw whose eigenvectors explain the moments best is kept: for fixed ``V`` the
best weights solve a linear least-squares problem per order, and the score is
``sum_k w_k ||T_k - sum_i lam_k,i v_i^(x)k||_F^2`` with ``w_k = 1 / k!`` (the
sampling variance of an entry of ``E[y He_k]`` grows like ``k!``).  Choosing
by eigen-gap instead fails when one order is pure noise.

Moment-space fit.  The same weighted loss, now over ``(a, b, V)`` with
``lam_k,i = a_i c_k(b_i)``, is minimized by L-BFGS from the Jennrich
estimate.  Expanding the norm keeps every term small:

    ||T - sum lam_i v_i^k||^2 = ||T||^2 - 2 sum_i lam_i T[v_i, ..., v_i]
                                 + sum_ij lam_i lam_j <v_i, v_j>^k

and ``d c_k / db = c_{k+1}`` gives the gradient in ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from .hermite import relu_coefficients

__all__ = [
    "Decomposition",
    "contract_all_but_one",
    "fit_weights",
    "jennrich",
    "unit_parameters",
    "moment_fit",
    "moment_loss",
]

ORDERS = (2, 3, 4)
ORDER_WEIGHTS = {k: 1.0 / factorial(k) for k in ORDERS}


def contract_all_but_one(T, V):
    """``out[:, i] = T[v_i, ..., v_i, :]`` for a symmetric tensor ``T``.

    Parameters
    ----------
    T : ndarray of shape (m,) * k, k in {2, 3, 4}
    V : ndarray of shape (m, r)

    Returns
    -------
    ndarray of shape (m, r)
    """
    k = T.ndim
    if k == 2:
        return T @ V
    if k == 3:
        return np.einsum("abc,bi,ci->ai", T, V, V, optimize=True)
    if k == 4:
        return np.einsum("abcd,bi,ci,di->ai", T, V, V, V, optimize=True)
    raise ValueError(f"order {k} is not supported")


def _grams(V):
    G = V.T @ V
    return {k: G**k for k in ORDERS}, G


def fit_weights(tensors, V):
    """Least-squares weights of each order for fixed unit vectors.

    Parameters
    ----------
    tensors : dict of int to ndarray
        ``{2: M_2, 3: T_3, 4: T_4}``.
    V : ndarray of shape (m, r)
        Unit columns.

    Returns
    -------
    lams : dict of int to ndarray of shape (r,)
        Best weights per order.
    residuals : dict of int to float
        ``||T_k - sum_i lam_i v_i^k||_F^2`` at the best weights.
    """
    grams, _ = _grams(V)
    lams, residuals = {}, {}
    for k, T in tensors.items():
        rhs = np.einsum("ai,ai->i", V, contract_all_but_one(T, V))
        lam, *_ = np.linalg.lstsq(grams[k], rhs, rcond=1e-12)
        lams[k] = lam
        residuals[k] = max(float(np.sum(T * T)) - float(rhs @ lam), 0.0)
    return lams, residuals


def _score(residuals):
    return sum(ORDER_WEIGHTS[k] * r for k, r in residuals.items())


@dataclass(frozen=True)
class Decomposition:
    """Result of :func:`jennrich` (unit vectors and the diagnostics of the choice).

    Attributes
    ----------
    V : ndarray of shape (m, m)
        Unit columns ``v_i``.
    lams : dict of int to ndarray of shape (m,)
        Least-squares weights per order for these ``V``.
    score : float
        Weighted residual of the chosen draw.
    kind : str
        Kind of the chosen draw: ``"order3"``, ``"order4"`` or ``"mixed"``.
    scores_by_kind : dict of str to float
        Best score reached by each kind of draw.
    min_eig_gap : float
        Smallest gap between the chosen draw's eigenvalues, relative to
        their spread.
    max_imag : float
        Largest imaginary part of the chosen draw's eigenvalues relative to
        their spread (large values mean the slices are too noisy).
    """

    V: np.ndarray
    lams: dict
    score: float
    kind: str
    scores_by_kind: dict
    min_eig_gap: float
    max_imag: float


def _normalize_columns(V):
    norms = np.linalg.norm(V, axis=0)
    norms[norms == 0] = 1.0
    return V / norms


def jennrich(M2, T3, T4, *, rng, n_draws=60):
    """Best-of-draws simultaneous diagonalization of ``(M_2, T_3, T_4)``.

    Parameters
    ----------
    M2 : ndarray of shape (m, m)
    T3 : ndarray of shape (m, m, m)
    T4 : ndarray of shape (m, m, m, m)
    rng : numpy.random.Generator
        Source of the random slice directions.
    n_draws : int
        Number of draws, shared evenly by the three kinds.

    Returns
    -------
    Decomposition

    Raises
    ------
    numpy.linalg.LinAlgError
        If ``M_2`` is singular.
    """
    m = M2.shape[0]
    M2_inv = np.linalg.inv(M2)
    tensors = {2: M2, 3: T3, 4: T4}
    n3 = np.sqrt(np.sum(T3 * T3)) or 1.0
    n4 = np.sqrt(np.sum(T4 * T4)) or 1.0
    best = None
    scores_by_kind = {}
    kinds = ("order3", "order4", "mixed")
    for draw in range(n_draws):
        kind = kinds[draw % 3]
        g, g2, h = rng.standard_normal((3, m))
        slice3 = np.tensordot(T3, g, axes=([2], [0])) / n3
        slice4 = np.tensordot(np.tensordot(T4, g2, axes=([3], [0])), h, axes=([2], [0])) / n4
        S = {"order3": slice3, "order4": slice4, "mixed": slice3 + slice4}[kind]
        evals, evecs = np.linalg.eig(S @ M2_inv)
        V = _normalize_columns(np.real(evecs))
        lams, residuals = fit_weights(tensors, V)
        score = _score(residuals)
        scores_by_kind[kind] = min(score, scores_by_kind.get(kind, np.inf))
        if best is None or score < best[0]:
            spread = float(np.ptp(evals.real)) or 1.0
            sorted_re = np.sort(evals.real)
            gap = float(np.min(np.diff(sorted_re))) / spread if m > 1 else 1.0
            best = (score, V, lams, kind, gap, float(np.max(np.abs(evals.imag))) / spread)
    score, V, lams, kind, gap, imag = best
    return Decomposition(
        V=V,
        lams=lams,
        score=score,
        kind=kind,
        scores_by_kind=scores_by_kind,
        min_eig_gap=gap,
        max_imag=imag,
    )


def unit_parameters(lams, *, b_max=6.0):
    """Per-unit ``(a, b)`` from the weights of orders 2, 3, 4.

    Parameters
    ----------
    lams : dict of int to ndarray of shape (m,)
        ``lam_k,i``, estimates of ``a_i c_k(b_i)`` for the orientation of ``v_i``.
    b_max : float
        Search range ``[-b_max, b_max]`` for ``b``.

    Returns
    -------
    a, b : ndarray of shape (m,)

    Notes
    -----
    For each unit, minimizes ``sum_k w_k (lam_k - a c_k(b))^2`` with
    ``w_k = 1/k!``: for fixed ``b`` the best ``a`` is closed form, so ``b``
    is found by a grid scan followed by a bounded scalar search.
    """
    lam = np.stack([lams[k] for k in ORDERS])  # (3, m)
    w = np.array([ORDER_WEIGHTS[k] for k in ORDERS])[:, None]

    def profile(bgrid, col):
        C = relu_coefficients(bgrid, ORDERS)  # (3, nb)
        num = (w * C * col[:, None]).sum(0)
        den = (w * C * C).sum(0)
        a = num / den
        return ((w * (col[:, None] - a * C) ** 2).sum(0)), a

    grid = np.linspace(-b_max, b_max, 2401)
    step = grid[1] - grid[0]
    a_out = np.empty(lam.shape[1])
    b_out = np.empty(lam.shape[1])
    for i in range(lam.shape[1]):
        col = lam[:, i]
        loss, _ = profile(grid, col)
        b0 = grid[int(np.argmin(loss))]
        res = minimize_scalar(
            lambda t: float(profile(np.array([t]), col)[0][0]),
            bounds=(max(b0 - step, -b_max), min(b0 + step, b_max)),
            method="bounded",
            options={"xatol": 1e-12},
        )
        b_out[i] = res.x
        a_out[i] = float(profile(np.array([res.x]), col)[1][0])
    return a_out, b_out


def moment_loss(params, tensors, m, weights=None, rho=None):
    """Weighted moment misfit and its gradient (see the module Notes).

    Parameters
    ----------
    params : ndarray of shape (m + m + m * r,)
        ``a``, ``b`` and the unnormalized directions ``P`` (r x m, row-major
        by column), ``v_i = P[:, i] / ||P[:, i]||``.
    tensors : dict of int to ndarray
        ``{2: M_2, 3: T_3, 4: T_4}`` in ``r`` dimensions.
    m : int
        Number of units.
    weights : dict of int to float, optional
        Weight per order; ``1/k!`` by default.
    rho : ndarray of shape (m,), optional
        Lengths of the units' projections on the subspace (``||U^T w_i||``,
        1 when the subspace holds them): unit ``i`` contributes
        ``a_i c_k(b_i) rho_i^k v_i^(x)k`` to ``T_k``.

    Returns
    -------
    loss : float
    grad : ndarray, same shape as ``params``
    """
    weights = ORDER_WEIGHTS if weights is None else weights
    rho = np.ones(m) if rho is None else np.asarray(rho, dtype=float)
    r = tensors[2].shape[0]
    a, b = params[:m], params[m : 2 * m]
    P = params[2 * m :].reshape(r, m)
    norms = np.linalg.norm(P, axis=0)
    V = P / norms
    G = V.T @ V
    coef = relu_coefficients(b, (2, 3, 4, 5))  # c_2..c_5 (c_{k+1} = d c_k / db)
    loss = 0.0
    g_a = np.zeros(m)
    g_b = np.zeros(m)
    g_V = np.zeros((r, m))
    for k, T in tensors.items():
        wk = weights[k]
        ck, dck = coef[k - 2] * rho**k, coef[k - 1] * rho**k
        lam = a * ck
        Tv = contract_all_but_one(T, V)  # T[v_i^{k-1}, .]
        tv = np.einsum("ai,ai->i", V, Tv)  # T[v_i^k]
        Gk = G**k
        loss += wk * (float(np.sum(T * T)) - 2.0 * lam @ tv + lam @ Gk @ lam)
        g_lam = wk * (-2.0 * tv + 2.0 * Gk @ lam)
        g_a += g_lam * ck
        g_b += g_lam * a * dck
        g_V += wk * (-2.0 * k * Tv * lam + 2.0 * k * (V @ (G ** (k - 1) * np.outer(lam, lam))))
    # through v = p / ||p||: dL/dp = (I - v v^T) dL/dv / ||p||
    g_P = (g_V - V * np.einsum("ai,ai->i", V, g_V)) / norms
    return loss, np.concatenate([g_a, g_b, g_P.ravel()])


@dataclass(frozen=True)
class MomentFit:
    """What :func:`moment_fit` returns."""

    a: np.ndarray
    b: np.ndarray
    V: np.ndarray
    info: dict


def moment_fit(tensors, a, b, V, *, maxiter=2000, rho=None):
    """Minimize :func:`moment_loss` over ``(a, b, V)`` from a starting point.

    Parameters
    ----------
    tensors : dict of int to ndarray
        ``{2: M_2, 3: T_3, 4: T_4}``.
    a, b : ndarray of shape (m,)
    V : ndarray of shape (r, m)
        Unit columns.
    maxiter : int
    rho : ndarray of shape (m,), optional
        Projection lengths, as in :func:`moment_loss`.

    Returns
    -------
    MomentFit
        ``a``, ``b`` (m,), ``V`` (r, m) with unit columns, and ``info``:
        ``loss_start``, ``loss_end`` (relative to ``sum_k w_k ||T_k||^2``),
        ``iterations``.
    """
    m = a.shape[0]
    x0 = np.concatenate([a, b, V.ravel()])
    total = sum(ORDER_WEIGHTS[k] * float(np.sum(T * T)) for k, T in tensors.items()) or 1.0
    f0, _ = moment_loss(x0, tensors, m, None, rho)
    res = minimize(
        moment_loss,
        x0,
        args=(tensors, m, None, rho),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12},
    )
    r = V.shape[0]
    a1, b1 = res.x[:m], res.x[m : 2 * m]
    V1 = _normalize_columns(res.x[2 * m :].reshape(r, m))
    info = {"loss_start": f0 / total, "loss_end": float(res.fun) / total, "iterations": int(res.nit)}
    return MomentFit(a1, b1, V1, info)
