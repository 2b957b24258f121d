"""Compare a fitted network with a planted truth.

Units are matched by the Hungarian assignment on ``|cos(w_i, w_hat_j)|``;
where the cosine is negative the fitted unit is compared as ``(a, -w, -b)``
(the same function up to an affine term, which the model carries in
``u, c``).  Both networks are first rescaled to unit ``w``.  The relative
test MSE ``E[(f_hat - f)^2] / Var f`` uses fresh float64 draws from the
truth's input law and the noiseless truth.

Imports numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["evaluate", "match_units"]


def _unit_normalize(net):
    s = np.linalg.norm(net.W, axis=0)
    s = np.where(s > 0, s, 1.0)
    return net.a * s, net.W / s, net.b / s


def match_units(W_true, W_fit):
    """Hungarian matching on ``|cos|``.

    Parameters
    ----------
    W_true : ndarray of shape (d, m)
    W_fit : ndarray of shape (d, k)
        Unit columns.

    Returns
    -------
    rows, cols : ndarray of int
        Matched pairs ``(true unit, fitted unit)``.
    cos : ndarray
        Signed cosines of the matched pairs.
    """
    C = W_true.T @ W_fit
    rows, cols = linear_sum_assignment(-np.abs(C))
    return rows, cols, C[rows, cols]


def evaluate(model, truth, *, n_test=200_000, seed=20211206):
    """Parameter errors and relative test MSE of ``model`` against ``truth``.

    Parameters
    ----------
    model : ReluNetwork
        The fitted network.
    truth : Truth
        The planted network and its input law.
    n_test : int
        Fresh test draws from the truth's input law.
    seed : int
        Seed of the test draws.

    Returns
    -------
    dict
        ``max_angle_deg``, ``max_abs_b_err``, ``max_rel_a_err`` over matched
        units, ``unmatched_true`` and ``unmatched_fitted`` unit counts,
        ``rel_test_mse``, ``n_hidden_true``, ``n_hidden_fitted``.
    """
    if model.n_features != truth.n_features:
        raise ValueError(
            f"the model has {model.n_features} features but the truth has {truth.n_features}"
        )
    a_t, W_t, b_t = _unit_normalize(truth.network)
    a_f, W_f, b_f = _unit_normalize(model)
    rows, cols, cos = match_units(W_t, W_f)
    sign = np.where(cos < 0, -1.0, 1.0)
    angle = np.degrees(np.arccos(np.clip(np.abs(cos), 0.0, 1.0)))
    b_err = np.abs(b_t[rows] - sign * b_f[cols])
    a_err = np.abs(a_t[rows] - a_f[cols]) / np.abs(a_t[rows])
    x, f_true = truth.sample(np.random.default_rng(seed), n_test)
    f_fit = model.predict(x)
    var_f = float(np.var(f_true))
    rel_mse = float(np.mean((f_fit - f_true) ** 2) / var_f) if var_f > 0 else float("nan")

    def worst(v):
        return float(np.max(v)) if v.size else 0.0

    return {
        "n_hidden_true": int(a_t.size),
        "n_hidden_fitted": int(a_f.size),
        "max_angle_deg": worst(angle),
        "max_abs_b_err": worst(b_err),
        "max_rel_a_err": worst(a_err),
        "unmatched_true": int(a_t.size - rows.size),
        "unmatched_fitted": int(a_f.size - cols.size),
        "rel_test_mse": rel_mse,
    }
