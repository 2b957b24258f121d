"""From finalized moments to network parameters in whitened coordinates.

Pipeline (all in ``z = A (x - mu)`` coordinates, unit ``w``):

1. :func:`choose_width` counts the eigenvalues of ``T_2`` above the noise
   floor (or takes the requested width) and :func:`subspace_basis` returns
   the top-``m`` eigenvectors ``U`` by absolute eigenvalue (``T_2`` is
   indefinite when the ``a_i`` have mixed signs).
2. After the subspace pass, :func:`recover` decomposes ``(M_2, T_3, T_4)``
   (:mod:`stream_relu.decomposition`), reads ``(a_i, b_i)`` off the weights,
   polishes everything by the moment-space fit, and maps the ``v_i`` back to
   ``d`` dimensions through ``T_2 U = W diag(lam2) (U^T W)^T`` (estimated
   with the order-0/1 control variate in the subspace pass):
   ``W ~ T_2 U V^{-T} diag(1/lam2)``, columns normalized.  Unlike ``U v_i``
   this is not confined to ``span U``, whose error (from the first-pass
   ``T_2`` without control variate, or from a pilot's) dominates the moment
   estimate otherwise.  A unit outside ``span U`` enters ``T_k`` there as
   ``rho_i^k`` times its weight, ``rho_i = ||U^T w_i||``; with ``W`` known,
   the moment-space fit runs again with those lengths.
3. Sign flips.  ``(a, w, b)`` and ``(a, -w, -b)`` have the same moments of
   order >= 2 and differ by the affine function ``a (<w, z> + b)``.  With
   ``delta_i = 1`` for a unit whose orientation must be flipped::

       T_1 = sum_i a_i Phi(b_i) w_i - sum_i delta_i a_i w_i + u
       T_0 = sum_i a_i c_0(b_i)     - sum_i delta_i a_i b_i + c

   Solving for ``delta`` by least squares with ``u = 0, c = 0`` and rounding
   picks the orientation that leaves the smallest affine term; ``u`` and
   ``c`` are then the residuals.
4. Units whose nonlinear part is below the sampling noise in every order
   (large ``|b|``: nearly linear or nearly dead) are dropped; the residual
   affine term takes what they contribute to orders 0 and 1.

Imports numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import factorial

import numpy as np

from .decomposition import jennrich, moment_fit, unit_parameters
from .hermite import relu_coefficient, std_normal_pdf

__all__ = [
    "WidthChoice",
    "MomentEstimate",
    "choose_width",
    "subspace_basis",
    "recover",
    "affine_residual",
    "canonical_flips",
    "Orientation",
]

WIDTH_THRESHOLD = 3.0  # eigenvalues above this many noise floors count as units (noise tops out near 1)
FOLD_STRENGTH = 3.0  # a unit weaker than this many noise levels in every order is folded
UNRELIABLE_STRENGTH = 10.0  # below this in order 2, or in both orders 3 and 4, a unit is flagged


@dataclass(frozen=True)
class WidthChoice:
    """The number of units and the evidence for it.

    Attributes
    ----------
    n_hidden : int
    requested : bool
        True when the caller fixed ``n_hidden``.
    spectrum : ndarray
        Eigenvalues of ``T_2`` sorted by decreasing absolute value.
    noise_floor : float
        Estimated operator norm of the sampling error of ``T_2``.
    threshold : float
        ``WIDTH_THRESHOLD * noise_floor``.
    n_above : int
        Number of eigenvalues above the threshold.
    candidates : tuple of Candidate
        The evidence of each candidate direction (:mod:`stream_relu.width`;
        empty for a requested width).
    rule : str
        The rule that chose the width.
    residual : tuple of Candidate
        Candidates of the residual looks after the refinement.
    """

    n_hidden: int
    requested: bool
    spectrum: np.ndarray
    noise_floor: float
    threshold: float
    n_above: int
    candidates: tuple = ()
    rule: str = "requested"
    residual: tuple = ()

    @property
    def gaps(self):
        """Ratios ``|lambda_j| / |lambda_{j+1}|`` of consecutive sorted eigenvalues."""
        s = np.abs(self.spectrum)
        return s[:-1] / np.maximum(s[1:], np.finfo(float).tiny)


def choose_width(gauss, n_hidden=None):
    """Number of units from the spectrum of ``T_2``.

    Parameters
    ----------
    gauss : GaussMoments
    n_hidden : int, optional
        Requested width; when None, the number of eigenvalues whose absolute
        value exceeds ``WIDTH_THRESHOLD`` noise floors.

    Returns
    -------
    WidthChoice
    """
    evals = np.linalg.eigvalsh(gauss.T2)
    spectrum = evals[np.argsort(-np.abs(evals), kind="stable")]
    floor = gauss.t2_noise_floor()
    threshold = WIDTH_THRESHOLD * floor
    n_above = int(np.sum(np.abs(spectrum) > threshold))
    chosen = n_above if n_hidden is None else int(n_hidden)
    return WidthChoice(
        n_hidden=chosen,
        requested=n_hidden is not None,
        spectrum=spectrum,
        noise_floor=float(floor),
        threshold=float(threshold),
        n_above=n_above,
    )


def subspace_basis(T2, m):
    """Top-``m`` eigenvectors of ``T2`` by absolute eigenvalue, shape (d, m)."""
    evals, evecs = np.linalg.eigh(T2)
    order = np.argsort(-np.abs(evals), kind="stable")[:m]
    return evecs[:, order]


def affine_residual(T0, T1, a, W, b):
    """Affine term ``(u, c)`` left in ``T_1``, ``T_0`` by the units ``(a, W, b)``."""
    u = T1 - W @ (a * relu_coefficient(1, b))
    c = T0 - float(a @ relu_coefficient(0, b))
    return u, c


def _flip_lstsq(T0, T1, a, W, b):
    """Least-squares ``delta`` of the module Notes, step 3."""
    design = np.vstack([W * a, (a * b)[None, :]])
    target = np.concatenate([W @ (a * relu_coefficient(1, b)) - T1, [float(a @ relu_coefficient(0, b)) - T0]])
    delta, *_ = np.linalg.lstsq(design, target, rcond=None)
    return delta


@dataclass(frozen=True)
class Orientation:
    """What :func:`canonical_flips` returns."""

    W: np.ndarray
    b: np.ndarray
    u: np.ndarray
    c: float
    flipped: np.ndarray


def canonical_flips(a, W, b, u, c):
    """Re-orient units so that the linear part of the affine term is as small as possible.

    ``a relu(<w, z> + b) = a relu(<-w, z> - b) + a (<w, z> + b)``: flipping a
    unit moves ``a w`` into ``u`` and ``a b`` into ``c`` without changing the
    function.  Greedy passes flip any unit that shrinks ``||u||``.  Only
    ``u`` is compared: a unit folded into the affine term (a linear unit)
    contributes to ``c`` too, so a small ``c`` is not a sign of the right
    orientation, while ``u`` has ``d`` components of evidence.

    Returns
    -------
    Orientation
        ``W``, ``b``, ``u``, ``c``: the re-oriented parameters (copies);
        ``flipped``: bool array of shape (m,).
    """
    W, b, u = W.copy(), b.copy(), u.copy()
    flipped = np.zeros(a.shape[0], dtype=bool)
    for _ in range(a.shape[0] + 1):
        changed = False
        for i in range(a.shape[0]):
            u_new = u + a[i] * W[:, i]
            if u_new @ u_new < (u @ u) * (1 - 1e-12):
                u, c = u_new, c + a[i] * b[i]
                W[:, i] = -W[:, i]
                b[i] = -b[i]
                flipped[i] = ~flipped[i]
                changed = True
        if not changed:
            break
    return Orientation(W, b, u, c, flipped)


@dataclass(frozen=True)
class MomentEstimate:
    """Parameters recovered from the moments, in whitened coordinates.

    Attributes
    ----------
    a : ndarray of shape (m,)
    W : ndarray of shape (d, m)
        Unit columns.
    b : ndarray of shape (m,)
    u : ndarray of shape (d,)
    c : float
    diagnostics : dict
        Decomposition choice, moment-fit losses, per-unit order strengths,
        flip coefficients, folded units.
    """

    a: np.ndarray
    W: np.ndarray
    b: np.ndarray
    u: np.ndarray
    c: float
    diagnostics: dict = field(default_factory=dict)


def _order_strengths(a, b, sub):
    """``|a c_k(b)|`` over its sampling standard deviation, for k = 2, 3, 4."""
    n = sub.n_samples
    noise = {
        2: np.sqrt(2.0 * sub.var_r2 / n),
        3: np.sqrt(factorial(3) * sub.var_r3 / n),
        4: np.sqrt(factorial(4) * sub.var_r3 / n),
    }
    return {k: np.abs(a * relu_coefficient(k, b)) / max(noise[k], np.finfo(float).tiny) for k in (2, 3, 4)}


RHO_ROUNDS = 3  # moment fits with the projection lengths rho_i of the w_i on span U


def _full_directions(sub, V, a, b):
    """``W ~ T_2 U V^{-T} diag(1/lam_2)``, columns normalized (module Notes, step 2)."""
    W = sub.T2U @ np.linalg.inv(V).T / (a * std_normal_pdf(b))
    return W / np.linalg.norm(W, axis=0)


def recover(gauss, sub, *, rng, n_draws=60):
    """Network parameters (whitened coordinates) from the two passes' moments.

    Parameters
    ----------
    gauss : GaussMoments
    sub : SubspaceMoments
    rng : numpy.random.Generator
        For the random slices of the decomposition.
    n_draws : int
        Decomposition draws.

    Returns
    -------
    MomentEstimate
    """
    tensors = {2: sub.M2, 3: sub.T3, 4: sub.T4}
    dec = jennrich(sub.M2, sub.T3, sub.T4, rng=rng, n_draws=n_draws)
    a0, b0 = unit_parameters(dec.lams)
    fit = moment_fit(tensors, a0, b0, dec.V)
    a, b, V, fit_info = fit.a, fit.b, fit.V, fit.info
    W = _full_directions(sub, V, a, b)
    # The subspace need not hold the w_i exactly (a pilot's plan, or sampling
    # error of T_2): T_k in it then carries rho_i^k = ||U^T w_i||^k per unit.
    # W from T_2 U does not depend on that, so rho is known; fit again with it.
    # (W from the first fit is itself slightly off, so two rounds at most.)
    rho_used = np.ones(a.shape[0])
    for _ in range(RHO_ROUNDS):
        rho = np.minimum(np.linalg.norm(sub.basis.T @ W, axis=0), 1.0)
        if np.max(np.abs(rho - rho_used)) < 1e-9:
            break
        fit = moment_fit(tensors, a, b, V, rho=rho)
        a, b, V, fit_info = fit.a, fit.b, fit.V, fit.info
        fit_info["rho"] = rho.tolist()
        W = _full_directions(sub, V, a, b)
        rho_used = rho
    delta = _flip_lstsq(gauss.T0, gauss.T1, a, W, b)
    flip = delta > 0.5
    W[:, flip] *= -1.0
    b = np.where(flip, -b, b)

    strengths = _order_strengths(a, b, sub)
    keep = np.max(np.stack([strengths[k] for k in (2, 3, 4)]), axis=0) >= FOLD_STRENGTH
    folded = [
        {"a": float(a[i]), "b": float(b[i]), "max_strength": float(max(strengths[k][i] for k in (2, 3, 4)))}
        for i in np.flatnonzero(~keep)
    ]
    a, W, b = a[keep], W[:, keep], b[keep]
    u, c = affine_residual(gauss.T0, gauss.T1, a, W, b)
    diagnostics = {
        "decomposition": {
            "chosen_kind": dec.kind,
            "score": dec.score,
            "scores_by_kind": dec.scores_by_kind,
            "min_eig_gap": dec.min_eig_gap,
            "max_imag": dec.max_imag,
            "n_draws": n_draws,
        },
        "moment_fit": fit_info,
        "flip_coefficients": delta.tolist(),
        "order_strengths": {f"order{k}": v[keep].tolist() for k, v in strengths.items()},
        "unreliable_units": np.flatnonzero(
            (strengths[2][keep] < UNRELIABLE_STRENGTH)
            | (np.maximum(strengths[3][keep], strengths[4][keep]) < UNRELIABLE_STRENGTH)
        ).tolist(),
        "folded_units": folded,
    }
    return MomentEstimate(a=a, W=W, b=b, u=u, c=c, diagnostics=diagnostics)
