"""What a fit reports about itself: the envelope warnings and the diagnostics schema.

:class:`FitDiagnostics` is the one schema of ``model.diagnostics``, filled
by :func:`stream_relu.fit` and by the incremental accumulator alike;
:meth:`FitDiagnostics.to_dict` gives the JSON-ready mapping the model file
stores.  :func:`data_warnings` (pass 1 alone) and :func:`envelope_warnings`
(after recovery) say in plain words when a fit leaves the supported
envelope.

Imports numpy, :mod:`stream_relu.settings`, :mod:`stream_relu.recovery`
(a constant) and :mod:`stream_relu.network` (the JSON conversion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import settings
from .network import to_jsonable
from .recovery import UNRELIABLE_STRENGTH

__all__ = ["FitDiagnostics", "data_warnings", "envelope_warnings", "width_dict", "width_warnings"]


def data_warnings(gauss, width):
    """Envelope warnings that pass 1 alone can give (shared by ``fit`` and ``check``)."""
    d, m, n = gauss.n_features, width.n_hidden, gauss.n_samples
    out = []
    cond = float(gauss.cov_eigvals[-1] / gauss.cov_eigvals[0])
    if cond > 100:
        out.append(f"cond(Sigma) = {cond:.3g} > 100: outside the supported envelope, accuracy is not guaranteed")
    needed = settings.ROWS_PER_PARAMETER_PAIR * d * m
    if n < needed:
        out.append(f"{n} rows for d = {d}, m = {m}: about {needed} are needed for the stated accuracy")
    if width.requested and m > width.n_above:
        spectrum = np.array2string(np.abs(width.spectrum[: m + 2]), precision=3)
        out.append(
            f"only {width.n_above} of the {m} requested units stand above the T_2 noise floor "
            f"(threshold {width.threshold:.3g}; |eigenvalues| {spectrum}); the weakest units are unreliable"
        )
    return out


def _unit_warnings(est):
    out = []
    unreliable = est.diagnostics["unreliable_units"]
    if unreliable:
        out.append(
            f"units {unreliable} (moment-estimate order) are weak in the Hermite moments "
            f"(fewer than {UNRELIABLE_STRENGTH:g} noise levels in order 2, or in both orders 3 and 4): "
            "more rows are needed to trust them"
        )
    for unit in est.diagnostics["folded_units"]:
        out.append(
            f"a unit with b = {unit['b']:.3g} is invisible in every Hermite order "
            f"(strength {unit['max_strength']:.2g} noise levels) and was folded into the affine term"
        )
    return out


def width_warnings(width, n_units):
    """Warnings of a measured width: no unit found, or a candidate left out beyond noise's 99th percentile."""
    if width.requested:
        return []
    out = []
    if n_units == 0:
        top = width.candidates[0] if width.candidates else None
        seen = f" (the largest |T_2 eigenvalue| is {abs(top.value):.3g}, {abs(top.value) / top.threshold:.2g}x its threshold {top.threshold:.3g})" if top else ""
        out.append(
            f"no structure found: no unit stands out of the measured noise{seen}; the model is affine "
            "(y = <u, x> + c). More rows would show weaker units; --hidden m (n_hidden=m) forces a width"
        )
    looks = width.residual if width.residual else width.candidates
    for c in looks:
        if not c.warns:
            continue
        seen = (
            f"({c.look} eigenvalue {c.value:.3g}; noise 99th percentile {c.noise_99:.3g}, threshold {c.threshold:.3g}; "
            f"{c.reason})"
        )
        if "heldout_gain" in c.extra:  # tried, and the held-out rows did not confirm it
            out.append(
                f"the residual shows structure beyond noise's 99th percentile that one more unit did not explain on "
                f"held-out rows {seen}: more rows would tell; --hidden {n_units + 1} (n_hidden={n_units + 1}) forces it"
            )
        else:
            out.append(
                f"a candidate unit was left out although noise alone stays below it 99% of the time {seen}: "
                f"to include it, refit with --hidden {n_units + 1} (n_hidden={n_units + 1})"
            )
    return out


def envelope_warnings(gauss, width, est, moment_model):
    """Plain-language warnings when the fit leaves the supported envelope."""
    out = data_warnings(gauss, width) + (_unit_warnings(est) if est is not None else [])
    big_b = np.flatnonzero(np.abs(moment_model.b) > 2)
    if big_b.size:
        out.append(f"units {big_b.tolist()} have |b| > 2: outside the supported envelope, their recovery costs many more rows")
    if moment_model.n_hidden > 1:
        C = np.abs(moment_model.W.T @ moment_model.W) - np.eye(moment_model.n_hidden)
        if C.max() > 0.9:
            out.append(f"two units have |cos(w_i, w_j)| = {C.max():.3f} > 0.9: outside the supported envelope")
    return out


def width_dict(width):
    """The width choice as diagnostics report it (the evidence keys only for a measured width)."""
    out = {
        "chosen": width.n_hidden,
        "requested": width.requested,
        "n_above_threshold": width.n_above,
        "t2_spectrum": width.spectrum,
        "noise_floor": width.noise_floor,
        "threshold": width.threshold,
        "eigen_gaps": width.gaps,
    }
    if not width.requested:
        out["rule"] = width.rule
        out["candidates"] = [c.as_dict() for c in width.candidates]
        out["residual_looks"] = [c.as_dict() for c in width.residual]
    return out


@dataclass(frozen=True)
class FitDiagnostics:
    """Everything ``model.diagnostics`` reports, as values; :meth:`to_dict` is the file's schema.

    Attributes
    ----------
    warnings : list of str
    n_samples : int
        Rows of the data (finite or not).
    gauss : GaussMoments
        Pass 1 over every row.
    nonfinite_rows : int
        Rows dropped for NaN or infinity.
    duplicate_chunks : list of list of int
    width : WidthChoice
    moments : dict
        How the moments were read (``data_passes``, ``pilot_chunks``, ...).
    recovery : dict
        The recovery's diagnostics.
    refinement : Refinement
    moment_model : ReluNetwork
        The moment estimate in ``x`` coordinates.
    n_units : int
        Units in the returned model.
    """

    warnings: list
    n_samples: int
    gauss: object
    nonfinite_rows: int
    duplicate_chunks: list
    width: object
    moments: dict
    recovery: dict
    refinement: object
    moment_model: object
    n_units: int

    def to_dict(self):
        """The JSON-ready mapping stored in the model file (key order fixed)."""
        gauss, mm = self.gauss, self.moment_model
        return to_jsonable(
            {
                "warnings": self.warnings,
                "data": {
                    "nonfinite_rows_dropped": self.nonfinite_rows,
                    "duplicate_chunks": self.duplicate_chunks,
                    "normality": gauss.normality,
                },
                "n_samples": self.n_samples,
                "n_features": gauss.n_features,
                "input": {
                    "mean_norm": float(np.linalg.norm(gauss.mean)),
                    "cov_condition": float(gauss.cov_eigvals[-1] / gauss.cov_eigvals[0]),
                },
                "labels": {"mean": gauss.T0, "var": gauss.var_y, "residual_var_after_affine": gauss.residual_var},
                "width": width_dict(self.width),
                "moments": self.moments,
                "n_units_returned": self.n_units,
                "recovery": self.recovery,
                "stages": self.refinement.stages,
                "refinement_history": self.refinement.history,
                "moment_estimate": {"a": mm.a, "W": mm.W, "b": mm.b, "u": mm.u, "c": mm.c},
            }
        )
