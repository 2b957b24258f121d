"""The number of units from measured noise: the ``T_2`` spectrum rule and the residual's evidence.

Two looks decide the width when it is not given:

1. :func:`measured_width` (after pass 1): the eigenvalues of ``T_2`` against
   the noise of ``T_2`` measured from ``K`` interleaved row groups.
2. :func:`residual_look` (after the refinement, on its rows): the moments
   of orders 2, 3 and 4 of the residual ``r = y - f_hat(x)``, whose variance
   is far below that of ``y``, so they show units the first look missed.
   The caller (:mod:`stream_relu.stages`) adds a unit only when it lowers
   the loss on held-out rows by more than ``HELDOUT_Z`` standard errors
   (:func:`heldout_gain`).

Imports numpy, :mod:`stream_relu.hermite`, :mod:`stream_relu.recovery`
(the :class:`~stream_relu.recovery.WidthChoice` value) and
:mod:`stream_relu.refine` (the residual's moment sums).

Notes
-----
Measured noise.  Row ``i`` of a chunk goes to group ``i mod K``; each group
gives an estimate ``T^g`` of a moment matrix from its ``n_g`` rows, and
the estimate of all rows is ``T = sum_g (n_g / n) T^g``.  The groups are
independent, so for any linear functional ``L`` (a quadratic form
``v^T T v``, an entry) the standard error of ``L(T)`` is measured as::

    se(L)^2 = K / (K - 1) * sum_g (n_g / n)^2 (L(T^g) - L(T))^2

and the matrices ``N = sqrt(K / (K - 1)) sum_g (n_g / n) xi_g (T^g - T)``
with independent standard normal ``xi_g`` have the covariance of the
error of ``T``: draws of ``N`` are draws of what noise alone produces.  No
formula and no bulk of the spectrum is assumed (at ``m = d`` there is
none), only that rows are independent.  The scale measured from ``K``
groups has ``K - 1`` degrees of freedom, so each draw is also scaled by
``sqrt((K - 1) / chi2_{K-1})`` (an independent chi-square draw): in one
direction the draws then follow Student's ``t_{K-1}`` law, the law of an
estimate over its measured standard error; over many directions the scale
is pooled and the draws err on the safe side.

The spectrum rule.  With the eigenvalues of ``T_2`` sorted by decreasing
absolute value, candidate ``k`` (its eigenvector ``v_k``) is compared with
the null distribution of the largest absolute eigenvalue of ``Q^T N Q``,
``Q`` the eigenvectors from ``k`` on (the directions not yet taken), drawn
``NULL_DRAWS`` times with a fixed seed.  It is taken when it exceeds the
null's mean plus ``TAKE_SIGMAS`` of its standard deviations and every
stronger candidate was taken.  The rule is built for a false-alarm rate of
at most about 2e-3 per look (``TAKE_SIGMAS = 4``): in one direction, where
the draws follow ``t_15``, 0.2% of 4,000 pure-noise trials were taken and
0.9% passed the 99th percentile; at d = 20, where the pooled scale makes
the draws conservative, none of 400 did either (tests/test_width.py checks
both).  The 99th percentile of the draws (``WARN_QUANTILE``) marks
candidates that are left out although noise alone stays below them 99% of
the time (at most): those give a warning.
The residual's strongest ``T_2`` direction also carries its orders 3 and 4
(``E[r He_k(<v, z>)]``, standard errors from the same row groups); it is
tried when it passes the order-2 rule or stands ``HIGHER_TAKE_Z`` standard
errors out in order 3 or 4 (a unit with ``|b|`` near 2 or more is relatively
stronger there), and warned about past ``HIGHER_WARN_Z``.
Draw by draw, the compression of a matrix never has a larger norm than
the matrix, so the draws for the directions from candidate ``j`` on bound
those of every later candidate (their quantiles, and in practice their
mean + 4 sd): candidates above that threshold are taken without drawing
for their own directions, and their reported threshold is that bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .hermite import hermite_e, relu_coefficient, std_normal_pdf
from .recovery import WidthChoice
from .refine import residual_sums, residual_t2

__all__ = [
    "GROUPS",
    "GroupNoise",
    "Candidate",
    "measured_width",
    "ResidualLook",
    "residual_look",
    "unit_from_residual",
    "heldout_gain",
]

GROUPS = 16  # interleaved row groups of the measured noise
NULL_DRAWS = 256  # draws of the noise-only matrices (fixed seed)
TAKE_SIGMAS = 4.0  # a candidate is taken above the null's mean plus this many standard deviations
WARN_QUANTILE = 0.99  # left out above this quantile of the null: a warning
HELDOUT_Z = 3.0  # a unit is added when the held-out loss falls by more than this many standard errors
HIGHER_TAKE_Z = 5.0  # a residual direction is also tried when order 3 or 4 stands this many standard errors out
HIGHER_WARN_Z = 3.29  # ... and warned about above this (the 99th percentile of the larger of two |t_15|)
N_EXTRA = 3  # candidates reported beyond the last one taken
NULL_SEED = 20211206


def group_weights(rows):
    """Weights ``w_g = (n_g / n) sqrt(K / (K - 1))`` of ``K`` interleaved row groups (0 for empty groups).

    With ``T`` the all-rows estimate and ``T^g`` group ``g``'s,
    ``sum_g (w_g (T^g - T))^2`` estimates the variance of ``T`` (module
    Notes); ``K`` counts the groups with rows.

    Parameters
    ----------
    rows : array_like of shape (K,)
        Rows in each group.

    Returns
    -------
    ndarray of shape (K,)

    Raises
    ------
    ValueError
        Fewer than 2 groups hold rows.
    """
    rows = np.asarray(rows, dtype=np.float64)
    keep = rows > 0
    K = int(keep.sum())
    if K < 2:
        raise ValueError("the measured noise needs at least 2 row groups with rows")
    w = np.zeros_like(rows)
    w[keep] = rows[keep] / rows[keep].sum() * np.sqrt(K / (K - 1))
    return w


@dataclass(frozen=True)
class GroupNoise:
    """The noise of a symmetric moment matrix measured by its row groups (module Notes).

    Attributes
    ----------
    deviations : ndarray of shape (K, d, d)
        ``sqrt(K / (K - 1)) (n_g / n) (T^g - T)``.
    """

    deviations: np.ndarray

    @classmethod
    def from_groups(cls, groups, rows, total):
        """From the group estimates ``groups`` (K, d, d), their rows (K,) and the all-rows estimate."""
        w = group_weights(rows)
        keep = w > 0
        return cls(w[keep][:, None, None] * (np.asarray(groups)[keep] - total))

    def se(self, v):
        """Standard error of ``v^T T v``."""
        q = np.einsum("i,gij,j->g", v, self.deviations, v)
        return float(np.sqrt(q @ q))

    def null_largest(self, basis, draws=NULL_DRAWS):
        """Draws of the largest absolute eigenvalue of ``Q^T N Q`` (``Q = basis``) under noise alone.

        Each draw is also scaled by ``sqrt((K - 1) / chi2_{K-1})``: the scale
        measured from ``K`` groups is itself uncertain (module Notes).
        """
        D = np.einsum("ia,gij,jb->gab", basis, self.deviations, basis)
        K = D.shape[0]
        rng = np.random.default_rng(NULL_SEED)
        xi = rng.standard_normal((draws, K))
        xi *= np.sqrt((K - 1) / rng.chisquare(K - 1, size=draws))[:, None]
        N = np.tensordot(xi, D, axes=1)
        return np.abs(np.linalg.eigvalsh(N)).max(axis=1)


@dataclass(frozen=True)
class _Null:
    """Thresholds from null draws: the take threshold and the warning quantile."""

    take: float
    warn: float
    median: float

    @classmethod
    def of(cls, draws):
        return cls(
            float(draws.mean() + TAKE_SIGMAS * draws.std()),
            float(np.quantile(draws, WARN_QUANTILE)),
            float(np.median(draws)),
        )


@dataclass(frozen=True)
class Candidate:
    """One candidate direction and its evidence.

    Attributes
    ----------
    look : str
        ``"T_2 of y"`` (pass 1) or ``"residual"`` (after a refinement).
    value : float
        Its ``T_2`` eigenvalue (of ``y`` or of the residual).
    z : dict
        Evidence per order (2, 3, 4) in units of its measured standard
        error; orders not measured are absent.
    threshold : float
        The take threshold of the order-2 value (module Notes).
    noise_99 : float
        The 99th percentile of what noise alone produces there.
    taken : bool
    reason : str
    extra : dict
        More about a residual candidate (held-out gain, angle to the units).
    """

    look: str
    value: float
    z: dict
    threshold: float
    noise_99: float
    taken: bool
    reason: str
    extra: dict = field(default_factory=dict)

    def _higher(self):
        return max((self.z.get(k, 0.0) for k in (3, 4)), default=0.0)

    @property
    def stands_out(self):
        """Above the take threshold in order 2, or ``HIGHER_TAKE_Z`` standard errors out in order 3 or 4."""
        return abs(self.value) > self.threshold or self._higher() > HIGHER_TAKE_Z

    @property
    def warns(self):
        """Left out although beyond the 99th percentile of noise alone (a residual at its numerical floor aside)."""
        beyond = abs(self.value) > self.noise_99 or self._higher() > HIGHER_WARN_Z
        return not self.taken and beyond and not self.extra.get("numerical_floor")

    def as_dict(self):
        """JSON-ready form (diagnostics)."""
        return {
            "look": self.look,
            "value": self.value,
            "z": {str(k): v for k, v in self.z.items()},
            "threshold": self.threshold,
            "noise_99": self.noise_99,
            "taken": self.taken,
            "reason": self.reason,
            **self.extra,
        }


def _sorted_eigh(T):
    evals, evecs = np.linalg.eigh(T)
    order = np.argsort(-np.abs(evals), kind="stable")
    return evals[order], evecs[:, order]


def _spectrum_candidates(evals, evecs, noise):
    """Candidates of the spectrum rule (module Notes) and the full space's thresholds.

    A threshold drawn for the directions from ``j`` on bounds every later
    candidate's (a compression of a compression), so it is reused until a
    candidate falls below it; only then are that candidate's own directions
    drawn.  The candidates reported after the last one taken get their own.
    """
    d = evals.shape[0]
    full = _Null.of(noise.null_largest(evecs))
    out, n_taken, null, drawn_at = [], 0, full, 0
    for k in range(d):
        if k > n_taken + N_EXTRA - 1 and n_taken < k:
            break
        lam = float(evals[k])
        if drawn_at != k and (abs(lam) <= null.take or n_taken < k):
            null, drawn_at = _Null.of(noise.null_largest(evecs[:, k:])), k
        take = n_taken == k and abs(lam) > null.take
        n_taken += take
        if take:
            reason = f"|eigenvalue| above the threshold ({abs(lam) / null.take:.3g}x)"
        elif n_taken < k:
            reason = "a stronger candidate was left out"
        else:
            reason = f"|eigenvalue| below the threshold ({abs(lam) / null.take:.3g}x)"
        se = noise.se(evecs[:, k])
        out.append(Candidate("T_2 of y", lam, {2: abs(lam) / max(se, 1e-300)}, null.take, null.warn, take, reason))
    return out, full


def measured_width(gauss):
    """The width by the spectrum rule on ``T_2`` with its noise measured by row groups (module Notes).

    Parameters
    ----------
    gauss : GaussMoments
        With ``t2_groups`` (a first pass planned with ``groups``).

    Returns
    -------
    WidthChoice
        ``noise_floor`` is the median of the null's largest eigenvalue over
        the whole space, ``threshold`` the take threshold of the first
        candidate left out (of the last one when all are taken), and
        ``candidates`` the evidence of each candidate.
    """
    evals, evecs = _sorted_eigh(gauss.T2)
    noise = GroupNoise.from_groups(gauss.t2_groups, gauss.group_rows, gauss.T2)
    cands, full = _spectrum_candidates(evals, evecs, noise)
    n_taken = sum(c.taken for c in cands)
    left = [c for c in cands if not c.taken]
    threshold = (left[0] if left else cands[-1]).threshold
    return WidthChoice(
        n_hidden=n_taken,
        requested=False,
        spectrum=evals,
        noise_floor=full.median,
        threshold=threshold,
        n_above=n_taken,
        candidates=tuple(cands),
        rule=RULE,
    )


RULE = (
    f"T_2 eigenvalues against the noise of T_2 measured by {GROUPS} interleaved row groups: taken above the "
    f"noise-only draws' mean + {TAKE_SIGMAS:g} sd of the largest eigenvalue in the directions not yet taken; "
    f"after the refinement, the residual's T_2 the same way, and a unit added when it lowers the held-out loss "
    f"by more than {HELDOUT_Z:g} standard errors"
)


def _directional(t, r, K):
    """``E[r He_k(t)]`` for k = 0..4 and their measured standard errors (interleaved groups with rows)."""
    H = np.stack([hermite_e(k, t) for k in range(5)], axis=1) * r[:, None]
    K = min(K, H.shape[0])
    rows = np.array([H[g::K].shape[0] for g in range(K)], dtype=np.float64)
    means = np.stack([H[g::K].mean(axis=0) for g in range(K)])
    total = H.mean(axis=0)
    se = np.sqrt(((group_weights(rows)[:, None] * (means - total)) ** 2).sum(axis=0))
    return total, se


@dataclass(frozen=True)
class ResidualLook:
    """A look at the residual: where a new unit would start, and the evidence for one.

    Attributes
    ----------
    direction : ndarray of shape (d,)
        The strongest direction of the residual's ``T_2`` (unit vector,
        whitened coordinates): where a new unit starts.
    coefficients : ndarray of shape (5,)
        ``E[r He_k(<v, z>)]`` for k = 0..4 along it.
    candidate : Candidate
        The evidence off the units' span (:func:`residual_look` Notes; not
        yet taken: the caller decides).
    """

    direction: np.ndarray
    coefficients: np.ndarray
    candidate: Candidate


def _complement(W):
    """Orthonormal basis of the directions orthogonal to the columns of ``W`` (all of them when ``W`` is empty)."""
    d = W.shape[0]
    if W.shape[1] == 0:
        return np.eye(d)
    U, sv, _ = np.linalg.svd(W, full_matrices=True)
    rank = int(np.sum(sv > 1e-8 * sv[0]))
    return U[:, rank:]


def residual_look(z, r, W, t2=None):
    """The residual's evidence of a new unit: ``T_2`` off the units' span, and orders 3-4 there.

    Parameters
    ----------
    z : ndarray of shape (n, d)
        Whitened rows.
    r : ndarray of shape (n,)
        Residual ``y - f_hat(z)``.
    W : ndarray of shape (d, m)
        The model's unit directions (unit columns).
    t2 : ResidualT2, optional
        The residual's ``T_2`` over more rows (a streamed pass,
        :data:`~stream_relu.refine.RESIDUAL`): it replaces that of the rows
        ``z``; orders 0-4 along directions still come from ``z``.

    Returns
    -------
    ResidualLook

    Notes
    -----
    A misfit of the units already there (parameters off by ``delta``, from
    a refinement on fewer rows than the look sees, or units bent to absorb
    a missing one) adds to ``T_2`` of the residual terms that each carry a
    factor ``w_i`` (``a phi(b) (w delta_w^T + delta_w w^T)``, ...): to
    first order they vanish in the compression ``Q^T T_2 Q`` to the
    directions ``Q`` orthogonal to the units, while a unit outside their
    span adds ``a phi(b) (Q^T w)(Q^T w)^T`` there.  The candidate's value is
    the compression's largest eigenvalue, against noise-only draws of that
    compression; its orders 3 and 4 are taken along the same direction
    (where the misfit's vanish too).  The new unit starts along the
    strongest direction of the whole ``T_2`` (which holds the unit's full
    direction, not only its part off the span), with its coefficients there.
    """
    t2 = residual_t2(residual_sums(z, r, GROUPS)) if t2 is None else t2
    noise = GroupNoise.from_groups(t2.groups, t2.rows, t2.total)
    Q = _complement(W)
    if Q.shape[1] == 0:
        raise ValueError("the units span every direction: there is no room for a new one")
    cvals, cvecs = _sorted_eigh(Q.T @ t2.total @ Q)
    null = _Null.of(noise.null_largest(Q @ cvecs))
    off = Q @ cvecs[:, 0]
    coef_off, se_off = _directional(z @ off, r, GROUPS)
    zs = {2: abs(float(cvals[0])) / max(noise.se(off), 1e-300)}
    zs.update({k: abs(float(coef_off[k])) / max(float(se_off[k]), 1e-300) for k in (3, 4)})
    evals, evecs = _sorted_eigh(t2.total)
    v = evecs[:, 0]
    coef, _ = _directional(z @ v, r, GROUPS)
    extra = {
        "full_t2_eigenvalue": float(evals[0]),
        "max_abs_cos_to_units": float(np.max(np.abs(W.T @ v))) if W.shape[1] else 0.0,
        "rows": int(t2.rows.sum()),
    }
    cand = Candidate("residual", float(cvals[0]), zs, null.take, null.warn, False, "", extra)
    return ResidualLook(v, coef, cand)


def unit_from_residual(look):
    """A unit ``(a, w, b)`` and the affine change ``(du, dc)`` that start a refinement with one more unit.

    Along the residual's direction ``v`` a lone unit ``a relu(<v, z> + b)``
    has ``E[r He_2] = a phi(b)`` and ``E[r He_3] = -a b phi(b)``, so
    ``b = -E[r He_3] / E[r He_2]`` (clipped to [-3, 3]) and
    ``a = E[r He_2] / phi(b)``; the affine change takes what is left of
    the residual's orders 0 and 1 (``E[r]`` and ``E[r z]`` along ``v``) once
    the unit's own are counted.

    Parameters
    ----------
    look : ResidualLook

    Returns
    -------
    dict
        ``a``, ``w``, ``b``, ``du``, ``dc``.
    """
    c = look.coefficients
    lam2 = c[2] if abs(c[2]) > 0 else 1e-300
    b = float(np.clip(-c[3] / lam2, -3.0, 3.0))
    a = float(lam2 / std_normal_pdf(b))
    v = look.direction
    du = (c[1] - a * float(relu_coefficient(1, b))) * v
    dc = float(c[0] - a * float(relu_coefficient(0, b)))
    return {"a": a, "w": v, "b": b, "du": du, "dc": dc}


def heldout_gain(y, old, new):
    """Mean fall of the squared error on held-out rows and its standard error.

    Parameters
    ----------
    y, old, new : ndarray of shape (n,)
        Labels and the two models' predictions.

    Returns
    -------
    dict
        ``gain`` (mean of ``(y - old)^2 - (y - new)^2``) and ``se`` (its
        standard error, from the rows' spread).
    """
    delta = (y - old) ** 2 - (y - new) ** 2
    return {"gain": float(delta.mean()), "se": float(delta.std() / np.sqrt(max(delta.shape[0], 1)))}
