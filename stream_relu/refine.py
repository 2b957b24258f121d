"""Local refinement of the squared loss over ``(a, W, b, u, c)``.

The model, in whitened coordinates ``z``::

    f(z) = sum_i a_i relu(<w_i, z> + b_i) + <u, z> + c

The loss ``L = (1/2) sum_s (f(z_s) - y_s)^2`` and its gradient are sums over
samples, so :func:`loss_grad_chunk` returns a mergeable
:class:`~stream_relu.moments.MomentState` and the same code serves an
in-memory subsample and whole streamed passes.  Gradients (with
``h = <w, z> + b``, ``e = f - y``)::

    dL/da_i = sum e relu(h_i)        dL/dw_i = sum e a_i 1[h_i > 0] z
    dL/db_i = sum e a_i 1[h_i > 0]   dL/du = sum e z        dL/dc = sum e

The residual kernel (:data:`RESIDUAL`, :func:`residual_sums`) is the same
family: sums over rows of the fitted network's residual ``r = y - f(z)``,
here its ``T_2`` in interleaved row groups (the width search's streamed
look, :func:`stream_relu.stages.width_search`).

Imports numpy and scipy only.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .moments import ChunkKernel, MomentState, digest

__all__ = [
    "Params", "RefinePlan", "loss_grad_chunk", "refine_chunk", "REFINE", "InMemoryObjective", "refine",
    "ResidualPlan", "ResidualT2", "residual_sums", "residual_t2", "residual_chunk", "RESIDUAL",
]


@dataclass(frozen=True)
class Params:
    """Network parameters in whitened coordinates (``W`` need not have unit columns)."""

    a: np.ndarray
    W: np.ndarray
    b: np.ndarray
    u: np.ndarray
    c: float

    @property
    def n_hidden(self):
        return self.a.shape[0]

    @property
    def n_features(self):
        return self.W.shape[0]

    def pack(self):
        """Flat vector ``[a, W (row-major), b, u, c]``."""
        return np.concatenate([self.a, self.W.ravel(), self.b, self.u, [self.c]])

    @classmethod
    def unpack(cls, theta, n_features, n_hidden):
        d, m = n_features, n_hidden
        a = theta[:m]
        W = theta[m : m + d * m].reshape(d, m)
        b = theta[m + d * m : 2 * m + d * m]
        u = theta[2 * m + d * m : 2 * m + d * m + d]
        return cls(a=a, W=W, b=b, u=u, c=float(theta[-1]))

    def normalized(self):
        """Same function with unit ``w_i`` (ReLU is positively homogeneous)."""
        s = np.linalg.norm(self.W, axis=0)
        s = np.where(s > 0, s, 1.0)
        return Params(a=self.a * s, W=self.W / s, b=self.b / s, u=self.u.copy(), c=self.c)

    def predict(self, z):
        """``f(z)`` for rows of ``z`` (float64)."""
        h = z @ self.W + self.b
        return np.maximum(h, 0.0) @ self.a + z @ self.u + self.c


def loss_grad_chunk(z, y, params, key="refine"):
    """Sum of squared errors (halved) and its gradient over one chunk.

    Parameters
    ----------
    z : ndarray of shape (n_rows, n_features)
        Whitened inputs, float64.
    y : ndarray of shape (n_rows,)
    params : Params
    key : str
        The state's key (the plan's, for a streamed pass: states of
        different parameters never merge, and a checkpoint's prefix merges
        with new chunks' states).

    Returns
    -------
    MomentState
        kind ``"refine"``; sums ``loss`` (scalar) and ``grad`` (packed like
        :meth:`Params.pack`).
    """
    y = np.asarray(y, dtype=np.float64)
    h = z @ params.W + params.b
    act = np.maximum(h, 0.0)
    e = act @ params.a + z @ params.u + params.c - y
    g_h = (h > 0) * (e[:, None] * params.a)
    grad = np.concatenate([act.T @ e, (z.T @ g_h).ravel(), g_h.sum(axis=0), z.T @ e, [e.sum()]])
    sums = {"loss": np.array(0.5 * (e @ e)), "grad": grad}
    return MomentState("refine", key, z.shape[0], sums)


@dataclass(frozen=True)
class RefinePlan:
    """Inputs of a streamed loss pass: the whitening and the current parameters.

    ``key`` digests all of them, so states (and cluster task keys) of
    different iterations never mix.
    """

    mean: np.ndarray
    whitener: np.ndarray
    params: Params
    key: str

    @classmethod
    def build(cls, mean, whitener, params):
        return cls(mean, whitener, params, "refine-" + digest(mean, whitener, params.pack()))


def refine_chunk(x, y, plan):
    """:func:`loss_grad_chunk` of raw rows ``x`` in the plan's whitening, without forming the whitened rows.

    Notes
    -----
    With ``z = (x - mean) T`` (``T`` the whitener) and ``x_c = x - mean``,
    ``<w_i, z> = <T w_i, x_c>`` and ``<u, z> = <T u, x_c>``, so the network
    is evaluated on the centred rows with ``V = T W`` and ``T u`` (``d m``
    products per row instead of the ``d^2`` of whitening), and the
    gradients in ``W`` and ``u`` are ``z^T G = T^T (x_c^T G)`` for
    ``G = [g_h, e]``: a ``d x d`` product per chunk, not per row.  The
    sums equal :func:`loss_grad_chunk`'s on the whitened rows up to
    rounding (tests/test_refine.py).
    """
    p, T = plan.params, plan.whitener
    xc = np.asarray(x, dtype=np.float64) - plan.mean
    y = np.asarray(y, dtype=np.float64)
    h = xc @ (T @ p.W) + p.b
    act = np.maximum(h, 0.0)
    e = act @ p.a + xc @ (T @ p.u) + p.c - y
    g_h = (h > 0) * (e[:, None] * p.a)
    G = T.T @ (xc.T @ np.column_stack([g_h, e]))
    grad = np.concatenate([act.T @ e, G[:, :-1].ravel(), g_h.sum(axis=0), G[:, -1], [e.sum()]])
    return MomentState("refine", plan.key, xc.shape[0], {"loss": np.array(0.5 * (e @ e)), "grad": grad})


REFINE = ChunkKernel("refine", refine_chunk)


def residual_sums(z, r, groups, key="residual"):
    """Moments of a residual ``r`` over whitened rows ``z``, in interleaved row groups.

    Parameters
    ----------
    z : ndarray of shape (n_rows, n_features)
        Whitened inputs, float64.
    r : ndarray of shape (n_rows,)
        The residual ``y - f(z)``.
    groups : int
        ``K``: row ``i`` goes to group ``i mod K``.
    key : str
        The state's key (the plan's, for a streamed pass).

    Returns
    -------
    MomentState
        kind ``"residual"``; per group: ``g_rows``, ``g_r`` (sum of r),
        ``g_rr`` (of r^2), ``g_rz`` (of r z), ``g_rzz`` (of r z z^T).
        Their totals give ``T_2`` of the residual, ``E[r (z z^T - I)]``,
        and the groups its measured noise (:func:`residual_t2`).
    """
    r = np.asarray(r, dtype=np.float64)
    n, d = z.shape
    sums = {
        "g_rows": np.zeros(groups), "g_r": np.zeros(groups), "g_rr": np.zeros(groups),
        "g_rz": np.zeros((groups, d)), "g_rzz": np.zeros((groups, d, d)),
    }
    for g in range(min(groups, n)):
        zg, rg = z[g::groups], r[g::groups]
        sums["g_rows"][g] = rg.shape[0]
        sums["g_r"][g] = rg.sum()
        sums["g_rr"][g] = rg @ rg
        sums["g_rz"][g] = zg.T @ rg
        sums["g_rzz"][g] = (zg * rg[:, None]).T @ zg
    return MomentState("residual", key, n, sums)


@dataclass(frozen=True)
class ResidualT2:
    """``T_2`` of a residual: the all-rows estimate, each row group's, and the groups' rows."""

    total: np.ndarray
    groups: np.ndarray
    rows: np.ndarray
    mean_square: float


def residual_t2(state):
    """Finalize a merged :func:`residual_sums` state.

    ``T_2^g = (sum_g r z z^T) / n_g - (sum_g r / n_g) I`` per group; the
    all-rows ``T_2`` is their row-weighted mean.

    Returns
    -------
    ResidualT2
    """
    s = state.sums
    rows = s["g_rows"]
    d = s["g_rz"].shape[1]
    safe = np.maximum(rows, 1.0)
    groups = s["g_rzz"] / safe[:, None, None] - (s["g_r"] / safe)[:, None, None] * np.eye(d)
    groups = 0.5 * (groups + groups.transpose(0, 2, 1))
    total = np.tensordot(rows / rows.sum(), groups, axes=1)
    return ResidualT2(total, groups, rows, float(s["g_rr"].sum() / rows.sum()))


@dataclass(frozen=True)
class ResidualPlan:
    """Inputs of a streamed residual pass: the whitening, the fitted parameters and the row groups."""

    mean: np.ndarray
    whitener: np.ndarray
    params: Params
    groups: int
    key: str

    @classmethod
    def build(cls, mean, whitener, params, groups):
        key = f"residual-g{int(groups)}-" + digest(mean, whitener, params.pack())
        return cls(mean, whitener, params, int(groups), key)


def residual_chunk(x, y, plan):
    """:func:`residual_sums` of raw rows, whitened and predicted with the plan's network."""
    z = (np.asarray(x, dtype=np.float64) - plan.mean) @ plan.whitener
    r = np.asarray(y, dtype=np.float64) - plan.params.predict(z)
    return residual_sums(z, r, plan.groups, plan.key)


RESIDUAL = ChunkKernel("residual", residual_chunk)


class InMemoryObjective:
    """Loss and gradient over an in-memory sample, evaluated block by block.

    Blocks run on a pool of threads (numpy releases the GIL in its matrix
    products) and their states are folded in block order, so the result
    does not depend on the number of threads.

    Parameters
    ----------
    z : ndarray of shape (n_rows, n_features)
        Whitened inputs (float64).
    y : ndarray of shape (n_rows,)
    n_hidden : int
    block_rows : int
        Rows per block (bounds the temporaries).
    n_threads : int, optional
        Threads of the pool; the number of CPUs by default.
    """

    def __init__(self, z, y, n_hidden, block_rows=32768, n_threads=None):
        self.z = np.ascontiguousarray(z, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64)
        self.n_hidden = n_hidden
        self.block_rows = block_rows
        self.n_threads = n_threads or os.cpu_count() or 1

    @property
    def n_samples(self):
        return self.y.shape[0]

    def __call__(self, params):
        """Merged :func:`loss_grad_chunk` state over all rows, in block order."""
        starts = range(0, self.n_samples, self.block_rows)

        def block(start):
            sl = slice(start, start + self.block_rows)
            return loss_grad_chunk(self.z[sl], self.y[sl], params)

        if self.n_threads == 1 or len(starts) == 1:
            return sum(map(block, starts))
        with ThreadPoolExecutor(self.n_threads) as pool:
            return sum(pool.map(block, starts))


STALL_WINDOW = 10
STALL_RTOL = 1e-7


def refine(objective, params, *, var_y, maxiter=2000, target=None, on_iteration=None):
    """Minimize the squared loss with L-BFGS from ``params``.

    Parameters
    ----------
    objective : callable
        ``objective(Params) -> MomentState`` of kind ``"refine"`` summed over
        the refinement data (in memory or streamed).
    params : Params
        Starting point (the moment estimate).
    var_y : float
        Variance of the labels; the loss is reported as the relative MSE
        ``mean((f - y)^2) / var_y``.
    maxiter : int
        Iteration cap.
    target : float, optional
        Stop as soon as the relative MSE is at most this (by default the
        run goes on to convergence).
    on_iteration : callable, optional
        ``on_iteration(iteration, rel_mse)`` after each iteration (progress).

    Returns
    -------
    params : Params
        Refined parameters, ``w`` normalized.
    info : dict
        ``rel_mse_start``, ``rel_mse_end``, ``history`` (relative MSE after
        each iteration), ``iterations``, ``evaluations``, ``converged``,
        ``message``.

    Notes
    -----
    Besides L-BFGS's own tests, the run stops when the loss fell by less
    than ``STALL_RTOL`` of its value over the last ``STALL_WINDOW``
    iterations.  On noiseless data the loss keeps falling geometrically to
    rounding level, so this never fires early; on noisy data it stops at a
    loss within ``1e-7`` of its floor, far below the statistical error of
    the fitted parameters (about ``n_params * noise / n_rows``).
    """
    d, m = params.n_features, params.n_hidden
    first = objective(params)
    scale = 0.5 * first.count * max(float(var_y), np.finfo(float).tiny)
    history = [float(first.sums["loss"]) / scale]
    last = {"f": history[0], "evals": 1}

    def fun(theta):
        state = objective(Params.unpack(theta, d, m))
        last["evals"] += 1
        last["f"] = float(state.sums["loss"]) / scale
        return last["f"], state.sums["grad"] / scale

    def callback(_x):
        history.append(last["f"])
        if on_iteration is not None:
            on_iteration(len(history) - 1, last["f"])
        if target is not None and last["f"] <= target:
            raise StopIteration
        if len(history) > STALL_WINDOW and history[-1 - STALL_WINDOW] - history[-1] <= STALL_RTOL * history[-1]:
            raise StopIteration

    res = minimize(
        fun,
        params.pack(),
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={"maxiter": maxiter, "maxfun": 2 * maxiter, "maxcor": 30, "ftol": 1e-16, "gtol": 1e-14},
    )
    final = Params.unpack(res.x, d, m).normalized()
    info = {
        "rel_mse_start": history[0],
        "rel_mse_end": float(res.fun),
        "history": history,
        "iterations": int(res.nit),
        "evaluations": last["evals"],
        "converged": bool(res.success),
        "message": str(res.message),
        "target_reached": target is not None and float(res.fun) <= target,
    }
    return final, info
