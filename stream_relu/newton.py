"""Gauss-Newton curvature of the squared loss, Newton steps from streamed gradients, and standard errors.

The refinement of noisy labels takes Newton-type steps
(:func:`newton_descent`) whose curvature is computed once on the in-memory
refinement rows (:func:`curvature`) and whose gradient is summed over
those rows, then over every row of the store
(:func:`stream_relu.stages.full_data_passes`: the
:data:`~stream_relu.refine.REFINE` kernel, one pass per step).  The same curvature, with the residuals' squares as
weights, gives the sandwich covariance of the fitted parameters
(:func:`standard_errors`).

Imports numpy, scipy and :mod:`stream_relu.refine` (:class:`Params`).

Notes
-----
Coordinates.  The network ``f(z) = sum_i a_i relu(<w_i, z> + b_i) + <u, z> + c``
is unchanged by ``(a_i, w_i, b_i) -> (s a_i, w_i / s, b_i / s)``, so the
``P = m (d + 2) + d + 1`` packed parameters hold ``m`` directions the loss
cannot see.  With ``||w_i|| = 1`` fixed, a step moves ``w_i`` inside the
tangent space ``w_i + B_i t_i``, ``B_i`` (d x (d - 1)) an orthonormal basis
of ``w_i``'s complement (a Householder reflection, :func:`tangent_bases`).
The reduced coordinates ``delta = (da (m), t_1 .. t_m, db (m), du (d), dc)``
are ``p = m (d + 1) + d + 1`` identifiable parameters; ``Q`` maps them to
packed ones, and a gradient ``g`` of the packed parameters becomes
``Q^T g`` (:meth:`Tangent.reduce`).  A step is applied as ``theta + Q delta``
and then each unit rescaled to ``||w_i|| = 1`` (the same function).

Jacobian rows (``h_i = <w_i, z> + b_i``, ``s_i = a_i 1[h_i > 0]``)::

    df/da_i = relu(h_i)   df/dt_i = s_i B_i^T z   df/db_i = s_i   df/du = z   df/dc = 1

Curvature.  Over ``n_c`` in-memory rows, ``H = J^T J / n_c`` (the
Gauss-Newton matrix) and ``M = J^T diag(e^2) J / n_c`` (``e`` the
residuals).  Near the optimum of the loss over ``n`` rows, the Hessian is
``H`` plus ``sum_s e_s d^2 f_s``, whose only terms (``1[h_i > 0] z`` between
``a_i`` and ``w_i``, and the kink's) have mean zero at the optimum.

Newton step.  With ``g = Q^T grad / n`` (per row, ``grad`` summed over
all ``n`` rows of the store), ``delta = -H^{-1} g``; the predicted fall of
the per-row loss ``(1/2n) sum e^2`` is ``g^T H^{-1} g / 2`` (the Newton
decrement).  ``H`` estimated from ``n_c`` rows errs by about
``sqrt(p / n_c)`` in relative terms, so near the optimum each step shrinks
the distance to the full-data optimum by about that factor (closer in,
by less: the loss over finitely many rows has a kink per row and unit,
which the smooth curvature does not see).  A step is worth a pass while
the decrement exceeds ``STOP_FRACTION`` of ``sigma^2 p / n`` (``sigma^2``
the mean squared residual): the excess test error the full-data optimum
itself has (``sigma^2 p / n``) is then changed by at most that fraction.
The stopping step is taken all the same (it costs no pass), and so is a
step of at most ``TRUST_FRACTION sigma^2 p / n`` after one whose realized
fall matched its prediction (:func:`newton_descent`).

Standard errors (sandwich).  The least-squares estimate over ``n`` rows
has covariance ``H^{-1} M H^{-1} / n`` (robust to noise whose variance
depends on ``x``), here with ``H`` and ``M`` from the ``n_c`` in-memory rows
at the final parameters in x coordinates, so no extra pass over the
store is needed; their relative error is about ``sqrt(p / n_c)``.  ``W``'s
entries have covariance ``B_i C_ti B_i^T`` (``C_ti`` the block of ``t_i``).
Above ``P_DENSE_MAX`` reduced parameters no ``p x p`` matrix is formed:
steps solve ``H delta = -g`` by conjugate gradients with products
``J^T (J v)`` over the rows, and standard errors are not available.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.sparse.linalg import LinearOperator, cg

from .refine import Params

__all__ = [
    "P_DENSE_MAX", "STOP_FRACTION", "n_reduced", "tangent_bases", "Tangent", "jacobian",
    "Curvature", "curvature", "Step", "newton_step", "newton_descent", "standard_errors",
]

P_DENSE_MAX = 4000  # reduced parameters up to which H (p x p) is formed and standard errors are given
CURVATURE_FLOPS = 2e11  # rows of the curvature: at most this / p^2 (and at least CURVATURE_MIN_PER_P * p)
CURVATURE_MIN_PER_P = 100
STOP_FRACTION = 0.01  # a Newton step is worth a pass while it would lower the loss by more than this x sigma^2 p / n
TRUST_FRACTION = 0.25  # a last step predicted to lower the MSE by at most this x sigma^2 p / n is taken unchecked ...
TRUST_RTOL = 0.25  # ... when the step before it lowered the MSE by its predicted fall within this fraction
BLOCK_ROWS = 8192


def n_reduced(n_features, n_hidden):
    """``p = m (d + 1) + d + 1``: the identifiable parameters of ``m`` units in ``d`` features."""
    return n_hidden * (n_features + 1) + n_features + 1


def tangent_bases(W):
    """Orthonormal bases of each unit column's complement, from Householder reflections.

    Parameters
    ----------
    W : ndarray of shape (d, m)
        Unit columns.

    Returns
    -------
    ndarray of shape (m, d, d - 1)
        ``B_i`` with ``B_i^T w_i = 0`` and ``B_i^T B_i = I``.
    """
    d, m = W.shape
    out = np.empty((m, d, d - 1))
    for i in range(m):
        w = W[:, i] / np.linalg.norm(W[:, i])
        v = w.copy()
        v[0] += 1.0 if w[0] >= 0 else -1.0  # the reflection maps e_0 to -+w; its other columns span w's complement
        R = np.eye(d) - 2.0 * np.outer(v, v) / (v @ v)
        out[i] = R[:, 1:]
    return out


@dataclass(frozen=True)
class Tangent:
    """Reduced coordinates at parameters with unit ``w_i`` (module Notes).

    Attributes
    ----------
    params : Params
        The point (unit columns of ``W``).
    bases : ndarray of shape (m, d, d - 1)
        :func:`tangent_bases` of ``params.W``.
    """

    params: Params
    bases: np.ndarray

    @classmethod
    def at(cls, params):
        """The tangent at ``params`` rescaled to unit ``w_i``."""
        params = params.normalized()
        return cls(params, tangent_bases(params.W))

    @property
    def n_params(self):
        return n_reduced(self.params.n_features, self.params.n_hidden)

    def reduce(self, grad):
        """``Q^T grad`` for a gradient packed like :meth:`Params.pack`."""
        d, m = self.params.n_features, self.params.n_hidden
        g = Params.unpack(np.asarray(grad, dtype=np.float64), d, m)
        t = np.einsum("id,idk->ik", g.W.T, self.bases)
        return np.concatenate([g.a, t.ravel(), g.b, g.u, [g.c]])

    def split(self, delta):
        """The reduced vector's parts ``(da, dW, db, du, dc)`` as a :class:`Params` of changes (``dW = B t``)."""
        d, m = self.params.n_features, self.params.n_hidden
        delta = np.asarray(delta, dtype=np.float64)
        t = delta[m : m + m * (d - 1)].reshape(m, d - 1)
        dW = np.einsum("idk,ik->di", self.bases, t)
        rest = delta[m + m * (d - 1) :]
        return Params(delta[:m], dW, rest[:m], rest[m : m + d], float(rest[-1]))

    def expand(self, delta):
        """``params + Q delta``, each unit rescaled to ``||w_i|| = 1``."""
        p, dp = self.params, self.split(delta)
        return Params(p.a + dp.a, p.W + dp.W, p.b + dp.b, p.u + dp.u, p.c + dp.c).normalized()


def jacobian(z, tangent):
    """Rows of ``J``: the derivatives of ``f(z_s)`` in the reduced coordinates (module Notes).

    Parameters
    ----------
    z : ndarray of shape (n_rows, d)
    tangent : Tangent

    Returns
    -------
    ndarray of shape (n_rows, p)
    """
    p = tangent.params
    d, m = p.n_features, p.n_hidden
    h = z @ p.W + p.b
    on = (h > 0) * p.a
    zB = z @ tangent.bases.transpose(1, 0, 2).reshape(d, m * (d - 1))
    return np.hstack([np.maximum(h, 0.0), zB * np.repeat(on, d - 1, axis=1), on, z, np.ones((z.shape[0], 1))])


def _row_blocks(n_rows, fn, n_threads=None):
    """``fn(slice)`` over blocks of ``BLOCK_ROWS`` rows on a thread pool, summed in block order."""
    starts = range(0, n_rows, BLOCK_ROWS)
    slices = [slice(s, min(s + BLOCK_ROWS, n_rows)) for s in starts]
    n_threads = n_threads or os.cpu_count() or 1
    if n_threads == 1 or len(slices) == 1:
        parts = list(map(fn, slices))
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            parts = list(pool.map(fn, slices))
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def curvature_rows(n_rows, p):
    """Rows the curvature reads: all, or at most ``CURVATURE_FLOPS / p^2`` (at least ``CURVATURE_MIN_PER_P p``)."""
    return int(min(n_rows, max(CURVATURE_MIN_PER_P * p, CURVATURE_FLOPS // (p * p))))


@dataclass(frozen=True)
class Curvature:
    """The Gauss-Newton matrix (and the sandwich's meat) over in-memory rows.

    Attributes
    ----------
    tangent : Tangent
        Where it was computed.
    rows : int
        ``n_c``: the rows read.
    H : ndarray of shape (p, p) or None
        ``J^T J / n_c``; None above ``P_DENSE_MAX`` (matrix-free).
    meat : ndarray of shape (p, p) or None
        ``J^T diag(e^2) J / n_c`` when asked for.
    z : ndarray or None
        The rows, kept for the matrix-free products.
    """

    tangent: Tangent
    rows: int
    H: np.ndarray = None
    meat: np.ndarray = None
    z: np.ndarray = None

    @property
    def dense(self):
        return self.H is not None

    def product(self, v):
        """``H v``, from the matrix or as ``J^T (J v) / n_c`` over the rows."""
        if self.dense:
            return self.H @ v
        def block(sl):
            J = jacobian(self.z[sl], self.tangent)  # formed once per block and product
            return J.T @ (J @ v)

        return _row_blocks(self.rows, block) / self.rows


def curvature(z, y, params, *, meat=False, dense_max=P_DENSE_MAX, max_rows=None):
    """:class:`Curvature` at ``params`` over (the leading rows of) ``z``, ``y``.

    Parameters
    ----------
    z : ndarray of shape (n_rows, d)
        Inputs in the coordinates ``params`` is written in.
    y : ndarray of shape (n_rows,)
    params : Params
        Rescaled to unit ``w_i`` first (the same function).
    meat : bool
        Also ``J^T diag(e^2) J / n_c`` (for :func:`standard_errors`).
    dense_max : int
        Above this many reduced parameters, no matrix (module Notes).
    max_rows : int, optional
        Rows to read (default :func:`curvature_rows`).

    Returns
    -------
    Curvature
    """
    tangent = Tangent.at(params)
    p = tangent.n_params
    n_c = min(z.shape[0], max_rows or curvature_rows(z.shape[0], p))
    if p > dense_max:
        return Curvature(tangent, n_c, z=z[:n_c])

    def block(sl):
        J = jacobian(z[sl], tangent)
        if not meat:
            return J.T @ J
        e = tangent.params.predict(z[sl]) - y[sl]
        Je = J * e[:, None]
        return np.stack([J.T @ J, Je.T @ Je])

    total = _row_blocks(n_c, block) / n_c
    if meat:
        return Curvature(tangent, n_c, 0.5 * (total[0] + total[0].T), 0.5 * (total[1] + total[1].T))
    return Curvature(tangent, n_c, 0.5 * (total + total.T))


@dataclass(frozen=True)
class Step:
    """A Newton step in reduced coordinates and what it predicts.

    Attributes
    ----------
    delta : ndarray of shape (p,)
    decrement : float
        ``g^T H^{-1} g``: twice the predicted fall of the per-row loss.
    grad_norm : float
        ``||g||`` (per row, reduced coordinates) at the point the gradient was summed.
    """

    delta: np.ndarray
    decrement: float
    grad_norm: float


def newton_step(curv, g):
    """The step ``-H^{-1} g`` (:class:`Step`) for a per-row gradient in reduced coordinates.

    Parameters
    ----------
    curv : Curvature
    g : ndarray of shape (p,)
        ``Q^T grad / n`` (:meth:`Tangent.reduce` of the summed gradient,
        over the rows it was summed over), at a point near
        ``curv.tangent.params``: the step is applied in that point's
        tangent (:meth:`Tangent.expand`), ``H`` being the curvature of the
        nearby point (its error is of the order of the distance).

    Returns
    -------
    Step
    """
    if curv.dense:
        delta = -cho_solve(cho_factor(curv.H + _ridge(curv.H)), g)
    else:
        p = g.shape[0]
        op = LinearOperator((p, p), matvec=curv.product, dtype=np.float64)
        delta, _ = cg(op, -g, rtol=1e-10, maxiter=10 * p)
    return Step(delta, float(-g @ delta), float(np.linalg.norm(g)))


@dataclass(frozen=True)
class _Point:
    """An evaluated point of :func:`newton_descent`, the step taken from it and the fraction of it taken."""

    params: Params
    loss: float
    step: Step
    alpha: float = 1.0

    @property
    def predicted(self):
        """The predicted fall of the MSE for ``alpha`` times the step: ``(2 alpha - alpha^2) g^T H^{-1} g``."""
        return (2.0 * self.alpha - self.alpha**2) * self.step.decrement

    def moved(self, bases):
        return Tangent(self.params.normalized(), bases).expand(self.alpha * self.step.delta)


def _stop(point, loss, step, floor, take_last):
    """Why the descent stops at an evaluated point, or None; ``floor`` is ``sigma^2 p / n``."""
    if step.decrement <= STOP_FRACTION * floor:
        return (f"the next step's predicted fall of the MSE is {step.decrement:.3g} <= {STOP_FRACTION:g} sigma^2 p / n "
                f"= {STOP_FRACTION * floor:.3g}" + ("; taken" if take_last else ""))
    if not take_last or point is None or step.decrement > TRUST_FRACTION * floor:
        return None
    fell = point.loss - loss
    if abs(fell / point.predicted - 1.0) > TRUST_RTOL:
        return None
    return (f"the last step's fall of the MSE, {fell:.3g}, was within {TRUST_RTOL:.0%} of its prediction "
            f"{point.predicted:.3g}, and the next step's predicted fall, {step.decrement:.3g}, is at most "
            f"{TRUST_FRACTION:g} sigma^2 p / n = {TRUST_FRACTION * floor:.3g}: it was taken without a pass to check it")


def newton_descent(curv, sums_at, params, max_evals, *, var_y, take_last, target=None, noun="evaluations"):
    """Newton steps ``-H^{-1} g`` with the fixed curvature ``curv`` and gradients from ``sums_at``.

    Parameters
    ----------
    curv : Curvature
        At a point near ``params``; steps are taken in its tangent bases
        (continuous in the parameters, unlike bases built afresh at each
        point, which turn when a coordinate of ``w_i`` changes sign).
    sums_at : callable
        ``sums_at(params, k) -> MomentState`` (kind ``"refine"``: sums
        ``loss``, half the squared errors, and ``grad``, packed) for the
        ``k``-th evaluation: in-memory rows, or a pass over the store.
    params : Params
    max_evals : int
        Evaluations at most.
    var_y : float
        The labels' variance (MSEs are reported relative to it).
    take_last : bool
        Take the stopping step without evaluating it (passes over a store,
        where an evaluation is a pass), rather than stop at the last
        evaluated point (in-memory rows).
    target : float, optional
        Stop once the relative MSE is at most this.
    noun : str
        What an evaluation is called in the stop message ("passes").

    Returns
    -------
    params : Params
        Unit ``w_i``.
    info : dict
        ``evaluations``, ``rows`` (of the last evaluation), ``rel_mse`` and
        ``decrement`` (predicted fall of the relative MSE; None after a
        rejected step) per evaluation, ``grad_norm`` (the last accepted
        point's, per row, reduced coordinates), ``converged``,
        ``target_reached``, ``stop``.

    Notes
    -----
    The evaluation at ``theta_k`` gives the MSE ``L_k`` and the step's
    predicted fall ``D_k = g^T H^{-1} g``.  A rise of the MSE halves the
    step from the point before instead.  The descent stops when
    ``D_k <= STOP_FRACTION sigma^2 p / n`` (``sigma^2 = L_k``: the step
    would change the full-data optimum's excess test error by at most that
    fraction); with ``take_last`` also when the step before fell by its
    prediction within ``TRUST_RTOL`` (the quadratic model holds at that
    scale, and ``D_k`` is far smaller) and ``D_k <= TRUST_FRACTION sigma^2 p
    / n``: that step is taken without a pass to check it.  Near the optimum
    each step shrinks the distance to it by about ``sqrt(p / n_c)``, so the
    unchecked step leaves an excess of order ``(p / n_c) D_k``.  Taking the
    stopping step matters for the test error even when ``D_k`` is small:
    the distance left enters the excess test error through its product
    with the optimum's own error, of order ``sqrt(D_k sigma^2 p / n)``.
    """
    p = curv.tangent.n_params
    info = {"evaluations": 0, "rows": 0, "rel_mse": [], "decrement": [], "converged": False, "target_reached": False}
    point = None  # the last accepted point and the step taken from it
    while info["evaluations"] < max_evals:
        state = sums_at(params, info["evaluations"] + 1)
        n = state.count
        loss = 2.0 * float(state.sums["loss"]) / n
        info.update(evaluations=info["evaluations"] + 1, rows=int(n))
        info["rel_mse"].append(loss / var_y)
        if point is not None and loss > point.loss:  # the step overshot: half of it from the same point
            point = replace(point, alpha=0.5 * point.alpha)
            params = point.moved(curv.tangent.bases)
            info["decrement"].append(None)
            continue
        tangent = Tangent(params.normalized(), curv.tangent.bases)
        step = newton_step(curv, tangent.reduce(state.sums["grad"]) / n)
        info["decrement"].append(step.decrement / var_y)
        info["grad_norm"] = step.grad_norm
        if target is not None and loss / var_y <= target:
            info.update(converged=True, target_reached=True, stop=f"the relative MSE {loss / var_y:.3g} reached the target {target:g}")
            return tangent.params, info
        stop = _stop(point, loss, step, loss * p / n, take_last)
        if stop is not None:
            info.update(converged=True, stop=stop)
            return (tangent.expand(step.delta) if take_last else tangent.params), info
        point = _Point(tangent.params, loss, step)
        params = tangent.expand(step.delta)
    return _capped(point, params, info, f"{max_evals} {noun}", take_last)


def _capped(point, params, info, made, take_last):
    """The descent's result after the last evaluation allowed: the last step unchecked, or the last accepted point."""
    last = next((v for v in reversed(info["decrement"]) if v is not None), float("nan"))
    if take_last:
        info["stop"] = (f"{made} made (the most allowed); the last step was taken unchecked "
                        f"(its predicted fall of the relative MSE: {last:.3g})")
        return params, info
    info["stop"] = f"{made} made (the most allowed); the last accepted point is returned"
    return (params if point is None else point.params), info


def _ridge(H):
    """A ridge of ``1e-12`` of the mean diagonal: keeps the Cholesky factor finite when a unit is dead on the rows."""
    return 1e-12 * max(float(np.trace(H)) / H.shape[0], np.finfo(float).tiny) * np.eye(H.shape[0])


def standard_errors(curv, n_rows):
    """Sandwich standard errors ``sqrt(diag(H^{-1} M H^{-1} / n))`` of ``a, W, b, u, c``.

    Parameters
    ----------
    curv : Curvature
        With ``meat``, at the final parameters (in the coordinates the
        standard errors are wanted in).
    n_rows : int
        ``n``: the rows the estimate used.

    Returns
    -------
    dict
        ``a`` (m,), ``W`` (d, m), ``b`` (m,), ``u`` (d,), ``c`` (float) as
        numpy arrays; ``W``'s are those of its unit columns' entries.
    """
    p = curv.tangent.params
    d, m = p.n_features, p.n_hidden
    Hinv = cho_solve(cho_factor(curv.H + _ridge(curv.H)), np.eye(curv.H.shape[0]))
    cov = Hinv @ curv.meat @ Hinv / n_rows
    var = np.diag(cov).copy()
    k = m * (d - 1)
    var_W = np.empty((d, m))
    for i in range(m):
        block = cov[m + i * (d - 1) : m + (i + 1) * (d - 1), m + i * (d - 1) : m + (i + 1) * (d - 1)]
        B = curv.tangent.bases[i]
        var_W[:, i] = np.einsum("dk,kl,dl->d", B, block, B)
    rest = var[m + k :]
    return {
        "a": np.sqrt(np.maximum(var[:m], 0.0)),
        "W": np.sqrt(np.maximum(var_W, 0.0)),
        "b": np.sqrt(np.maximum(rest[:m], 0.0)),
        "u": np.sqrt(np.maximum(rest[m : m + d], 0.0)),
        "c": float(np.sqrt(max(rest[-1], 0.0))),
    }
