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

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import InputError

__all__ = ["evaluate", "match_units", "UnitMatch", "stderr_z"]


@dataclass(frozen=True)
class _Scaled:
    a: np.ndarray
    W: np.ndarray
    b: np.ndarray


def _unit_normalize(net):
    s = np.linalg.norm(net.W, axis=0)
    s = np.where(s > 0, s, 1.0)
    return _Scaled(net.a * s, net.W / s, net.b / s)


@dataclass(frozen=True)
class UnitMatch:
    """Units of a truth matched to a fitted network's, both rescaled to unit ``w``.

    Attributes
    ----------
    rows, cols : ndarray of int
        Matched pairs ``(true unit, fitted unit)``.
    cos : ndarray
        Signed cosines of the matched pairs.
    a_true, b_true : ndarray
        The true units' ``a`` and ``b`` in the matched order.
    a_fit, b_fit : ndarray
        The fitted units' ``a`` and ``b`` (``b`` negated where ``cos < 0``).
    n_true, n_fit : int
        Units in each network.
    """

    rows: np.ndarray
    cols: np.ndarray
    cos: np.ndarray
    a_true: np.ndarray
    b_true: np.ndarray
    a_fit: np.ndarray
    b_fit: np.ndarray
    n_true: int
    n_fit: int

    @property
    def sign(self):
        """-1 where the fitted unit is compared as ``(a, -w, -b)``, else 1."""
        return np.where(self.cos < 0, -1.0, 1.0)

    @property
    def angle_deg(self):
        """Angle between the matched directions, up to sign, in degrees."""
        return np.degrees(np.arccos(np.clip(np.abs(self.cos), 0.0, 1.0)))


def match_units(truth, model):
    """Hungarian matching of units on ``|cos(w_i, w_hat_j)|``.

    Parameters
    ----------
    truth : ReluNetwork
        The planted network.
    model : ReluNetwork
        The fitted network.

    Returns
    -------
    UnitMatch
    """
    t, f = _unit_normalize(truth), _unit_normalize(model)
    C = t.W.T @ f.W
    rows, cols = linear_sum_assignment(-np.abs(C))
    cos = C[rows, cols]
    sign = np.where(cos < 0, -1.0, 1.0)
    return UnitMatch(rows, cols, cos, t.a[rows], t.b[rows], f.a[cols], sign * f.b[cols], t.a.size, f.a.size)


def stderr_z(model, truth):
    """``(estimate - truth) / standard error`` of every parameter of ``model`` (its ``stderr``) against ``truth``.

    The truth is expressed in the model's convention first: its units are
    rescaled to unit ``w``, matched to the model's
    (:func:`match_units`), and a unit matched with a negative cosine is
    re-expressed as ``(a, -w, -b)`` with ``u += a w`` and ``c += a b`` (the
    same function: ``relu(t) = t + relu(-t)``).

    Parameters
    ----------
    model : ReluNetwork
        A fitted network with ``stderr["available"]``.
    truth : ReluNetwork
        The planted network (x coordinates).

    Returns
    -------
    dict or None
        ``a``, ``b`` (matched units, in the model's order of ``cols``),
        ``W`` (d, matched units), and ``u``, ``c`` (only when every unit of
        both networks is matched), as arrays of z-scores; ``cols`` the
        fitted units.  None without standard errors.
    """
    se = model.stderr
    if not se or not se.get("available"):
        return None
    match = match_units(truth, model)
    t = _unit_normalize(truth)
    sign = match.sign
    W_t = t.W[:, match.rows] * sign
    a_t = t.a[match.rows]
    b_t = t.b[match.rows] * sign
    flipped = sign < 0
    u_t = truth.u + (t.W[:, match.rows][:, flipped] * a_t[flipped]).sum(axis=1)
    c_t = truth.c + float((a_t[flipped] * t.b[match.rows][flipped]).sum())
    cols = match.cols
    z = {
        "cols": cols,
        "a": (model.a[cols] - a_t) / se["a"][cols],
        "b": (model.b[cols] - b_t) / se["b"][cols],
        "W": (model.W[:, cols] - W_t) / se["W"][:, cols],
    }
    if match.rows.size == match.n_true == match.n_fit:
        z["u"] = (model.u - u_t) / se["u"]
        z["c"] = np.array([(model.c - c_t) / se["c"]])
    return z


def _z_summary(z):
    """``max_abs_z_<name>`` per parameter group and ``coverage_95`` (|z| <= 1.96 over all)."""
    out = {}
    groups = [k for k in ("a", "W", "b", "u", "c") if k in z]
    for k in groups:
        out[f"max_abs_z_{k}"] = float(np.max(np.abs(z[k]))) if z[k].size else float("nan")
    every = np.concatenate([np.ravel(z[k]) for k in groups])
    out["coverage_95"] = float(np.mean(np.abs(every) <= 1.959963984540054)) if every.size else float("nan")
    return out


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
        units (NaN when no unit is matched: a model without units, say),
        ``unmatched_true`` and ``unmatched_fitted`` unit counts,
        ``rel_test_mse``, ``n_hidden_true``, ``n_hidden_fitted``; with the
        model's standard errors, ``max_abs_z_a`` .. ``max_abs_z_c`` (the
        largest ``|estimate - truth| / se`` per group, :func:`stderr_z`) and
        ``coverage_95`` (the share of parameters within 1.96 standard
        errors of the truth).
    """
    if model.n_features != truth.n_features:
        raise InputError(
            f"the model has {model.n_features} features but the truth has {truth.n_features}"
        )
    match = match_units(truth.network, model)
    b_err = np.abs(match.b_true - match.b_fit)
    a_err = np.abs(match.a_true - match.a_fit) / np.abs(match.a_true)
    x, f_true = truth.sample(np.random.default_rng(seed), n_test)
    f_fit = model.predict(x)
    var_f = float(np.var(f_true))
    rel_mse = float(np.mean((f_fit - f_true) ** 2) / var_f) if var_f > 0 else float("nan")

    def worst(v):
        return float(np.max(v)) if v.size else float("nan")

    out = {
        "n_hidden_true": int(match.n_true),
        "n_hidden_fitted": int(match.n_fit),
        "max_angle_deg": worst(match.angle_deg),
        "max_abs_b_err": worst(b_err),
        "max_rel_a_err": worst(a_err),
        "unmatched_true": int(match.n_true - match.rows.size),
        "unmatched_fitted": int(match.n_fit - match.cols.size),
        "rel_test_mse": rel_mse,
    }
    z = stderr_z(model, truth.network)
    if z is not None:
        out.update(_z_summary(z))
    return out
