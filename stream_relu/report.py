"""A one-figure visual report of a fitted model's diagnostics.

:func:`render_report` draws, from the diagnostics a model file carries:

1. the spectrum of the order-2 Hermite moment ``T_2`` with the noise floor,
   the width threshold and the chosen number of units;
2. the strength of each unit in Hermite orders 2, 3 and 4, in noise levels,
   with the threshold below which a unit is flagged unreliable;
3. the relative training MSE per L-BFGS iteration of the refinement;
4. with a truth, the recovered output weights and biases against the true
   ones (units matched as in :func:`stream_relu.metrics.match_units`), the
   angle of each matched pair and the :func:`stream_relu.metrics.evaluate`
   metrics.

A diagnostic absent from the model (an old or hand-written file) leaves its
panel with a short "not available" note instead of failing.

Every panel of values that can span decades (spectrum, strengths,
refinement, angles) picks its y scale by one rule (:func:`_pick_scale`): a
log axis when the positive values span more than a decade, or lie far below
the top a linear axis would have; exact zeros are drawn at the log axis's
floor.  Point and bar labels are moved apart after the figure is laid out
(:func:`_place_labels`), so their boxes never meet.

matplotlib is an optional dependency (``pip install "stream_relu[report]"``);
it is imported when a report is drawn, never when this module is imported.
Figures are drawn on the non-interactive Agg canvas, without pyplot, so no
global matplotlib state (backend, open figures) is touched.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from . import UNRELIABLE_STRENGTH
from .errors import InputError

__all__ = [
    "render_report",
    "SUPPORTED_FORMATS",
    "TITLE_SPECTRUM",
    "TITLE_STRENGTHS",
    "TITLE_REFINEMENT",
    "TITLE_RECOVERED",
    "TITLE_ANGLES",
]

SUPPORTED_FORMATS = (".png", ".svg", ".pdf")

TITLE_SPECTRUM = "T_2 spectrum"
TITLE_STRENGTHS = "Per-unit Hermite order strengths"
TITLE_REFINEMENT = "Refinement"
TITLE_RECOVERED = "Recovered vs true"
TITLE_INTERVALS = "Errors and their 95% intervals"
YLABEL_INTERVALS = "fitted - true"
TITLE_ANGLES = "Angle per matched unit"

XLABEL_SPECTRUM = "eigenvalue index (sorted by |eigenvalue|)"
YLABEL_SPECTRUM = "|eigenvalue| of T_2"
XLABEL_STRENGTHS = "unit (moment-estimate order)"
YLABEL_STRENGTHS = "strength (noise levels)"
XLABEL_REFINEMENT = "L-BFGS iteration"
YLABEL_REFINEMENT = "relative training MSE"
XLABEL_RECOVERED = "true value"
YLABEL_RECOVERED = "recovered value"
XLABEL_ANGLES = "matched pair (true unit -> fitted unit)"
YLABEL_ANGLES = "angle between w_true and w_fit (degrees)"

# The y-scale rule of every panel whose values can span decades (see _pick_scale):
LOG_SPAN = 10.0  # log axis when the positive values' max / min exceeds this (more than a decade) ...
LOG_FAR_BELOW = 0.01  # ... or when their max is below this fraction of the linear axis's top
LOG_FLOOR_FACTOR = 5.0  # a log axis starts at the smallest positive value / this; zeros are drawn there
ANGLE_LINEAR_TOP = 1.0  # a linear angle axis reaches at least this (degrees)

LABEL_GAP_PT = 1.5  # the least gap between the boxes of two point or bar labels, in points
DPI = 110  # the figure's resolution, for drawing and saving alike (labels are placed at it)
Z95 = 1.959963984540054  # the standard normal quantile of a two-sided 95% interval

NOT_AVAILABLE = "not available"
NO_REFINEMENT = "no refinement"

_INSTALL_HINT = 'the report needs matplotlib: pip install "stream_relu[report]" (or pip install matplotlib)'


def _import_matplotlib():
    """The matplotlib pieces the report uses, or InputError with the install command."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(_INSTALL_HINT) from None
    return Figure, FigureCanvasAgg


def _get(doc, *keys):
    """``doc[k0][k1]...``, or None where a level is missing or not a dict."""
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _floats(value):
    """A 1-d float array (None entries as NaN), or None when ``value`` is not a list of numbers."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return None
    try:
        arr = np.array([np.nan if v is None else v for v in np.ravel(value)], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr


def _number(value):
    """A finite float, or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _note(ax, text):
    """Centered text in an axes that has nothing to plot."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass(frozen=True)
class _Scale:
    """The y scale of a panel: ``name`` ("log" or "linear") and the axis ``floor``.

    Bars start at the floor, and values at or below it (exact zeros among
    them) are drawn at it: on a linear axis the floor is 0, on a log axis
    it is the smallest positive value divided by :data:`LOG_FLOOR_FACTOR`.
    """

    name: str
    floor: float

    def shown(self, values):
        """``values`` raised to the floor (NaN stays NaN: a gap in a line)."""
        return np.maximum(np.asarray(values, dtype=np.float64), self.floor)


def _pick_scale(values, *extra, linear_top=0.0):
    """The y scale for ``values`` and the reference lines ``extra`` (None entries skipped).

    The one rule every panel follows: a log axis when the positive finite
    values span more than a decade (max / min > :data:`LOG_SPAN`), or when
    their max is below :data:`LOG_FAR_BELOW` times ``linear_top``, the top a
    linear axis would have (so they would be invisible slivers on it);
    otherwise, and when nothing is positive, a linear axis from 0.
    """
    pool = np.concatenate([np.ravel(np.asarray(values, dtype=np.float64)), [v for v in extra if v is not None]])
    pool = pool[np.isfinite(pool) & (pool > 0)]
    if pool.size == 0:
        return _Scale("linear", 0.0)
    lo, hi = float(pool.min()), float(pool.max())
    if hi / lo > LOG_SPAN or hi < LOG_FAR_BELOW * linear_top:
        return _Scale("log", lo / LOG_FLOOR_FACTOR)
    return _Scale("linear", 0.0)


def _set_ylim(ax, scale, hi, headroom, linear_top=0.0):
    """Set the scale and y limits: from the floor to above ``hi``, the top ``headroom`` fraction of the axis free.

    The free band (in log or linear units, as the axis) keeps legends and
    value labels off the data; a linear axis reaches at least ``linear_top``.
    """
    ax.set_yscale(scale.name)
    if scale.name == "log":
        bottom = scale.floor
        top = bottom * (max(hi, bottom) / bottom) ** (1.0 / (1.0 - headroom))
    else:
        bottom, top = 0.0, max(hi / (1.0 - headroom), linear_top)
    ax.set_ylim(bottom, top if top > bottom else bottom + 1.0)


def _rows_used(model):
    """Rows behind the moments (and the refinement), as a short text."""
    diag, prov = model.diagnostics, model.provenance
    moments = _number(_get(prov, "rows_used", "moments"))
    if moments is None:
        moments = _number(_get(diag, "n_samples"))
    refine_rows = None
    stages = _get(prov, "rows_used", "refinement")
    if isinstance(stages, list):
        rows = [_number(s.get("rows")) for s in stages if isinstance(s, dict)]
        rows = [r for r in rows if r is not None]
        refine_rows = max(rows) if rows else None
    elif _number(_get(prov, "rows_used", "refinement_rows")) is not None:
        refine_rows = _number(_get(prov, "rows_used", "refinement_rows"))
    if moments is None:
        return "rows used: not recorded"
    text = f"rows used: {int(moments):,}"
    if refine_rows is not None and _get(diag, "refinement_history") is not None:
        text += f" (refinement on {int(refine_rows):,})"
    return text


def _draw_candidate_thresholds(ax, candidates, scale):
    """Each candidate's measured threshold (a measured width's ``diagnostics.width.candidates``)."""
    if not isinstance(candidates, list) or not candidates:
        return
    thr = np.array([_number(_get(c, "threshold")) or np.nan for c in candidates], dtype=float)
    k = np.arange(1, thr.size + 1)
    ok = np.isfinite(thr) & (thr > 0)
    if ok.any():
        ax.plot(k[ok], scale.shown(thr[ok]), marker="_", markersize=14, markeredgewidth=2, linestyle="none",
                color="C3", label="measured threshold of each candidate")


def _draw_spectrum(ax, diag):
    ax.set_title(TITLE_SPECTRUM)
    ax.set_xlabel(XLABEL_SPECTRUM)
    ax.set_ylabel(YLABEL_SPECTRUM)
    width = _get(diag, "width")
    spectrum = _floats(_get(width, "t2_spectrum"))
    if spectrum is None or spectrum.size == 0:
        _note(ax, f"T_2 spectrum {NOT_AVAILABLE}")
        return
    mags = np.sort(np.abs(spectrum[np.isfinite(spectrum)]))[::-1]
    floor = _number(_get(width, "noise_floor"))
    threshold = _number(_get(width, "threshold"))
    chosen = _number(_get(width, "chosen"))
    chosen = None if chosen is None else int(chosen)
    scale = _pick_scale(mags, floor, threshold)
    hi = max([v for v in (*mags, floor or 0.0, threshold or 0.0) if np.isfinite(v)])
    shown = scale.shown(mags)
    index = np.arange(1, mags.size + 1)
    picked = index <= (chosen if chosen is not None else 0)
    above = mags > threshold if threshold is not None else np.ones(mags.size, dtype=bool)
    groups = (
        (picked & above, {"color": "C0"}, "chosen, above threshold"),
        (picked & ~above, {"color": "C0", "alpha": 0.35, "hatch": "//"}, "chosen, below threshold"),
        (~picked, {"color": "0.7"}, "not chosen"),
    )
    for mask, style, label in groups:
        if mask.any():
            ax.bar(index[mask], shown[mask] - scale.floor, bottom=scale.floor, label=label, **style)
    _set_ylim(ax, scale, hi, headroom=0.3)  # headroom for the legend
    measured = _get(width, "rule") is not None
    if floor is not None and floor > 0:
        ax.axhline(floor, color="0.3", linestyle=":", label=f"{'measured ' if measured else ''}noise floor ({floor:.2g})")
    if threshold is not None and threshold > 0:
        ax.axhline(threshold, color="C3", linestyle="--", label=f"threshold ({threshold:.2g})")
    _draw_candidate_thresholds(ax, _get(width, "candidates"), scale)
    requested = _get(width, "requested")
    if chosen is not None:
        how = f" ({'requested' if requested else 'estimated'})" if isinstance(requested, bool) else ""
        ax.axvline(chosen + 0.5, color="C0", linestyle="-.", linewidth=1.0, label=f"chosen width m = {chosen}{how}")
    ax.set_xlim(0.4, mags.size + 0.6)
    if mags.size <= 30:
        ax.set_xticks(index)
    ax.legend(fontsize=8, loc="upper right")


def _draw_strengths(ax, diag):
    ax.set_title(TITLE_STRENGTHS)
    ax.set_xlabel(XLABEL_STRENGTHS)
    ax.set_ylabel(YLABEL_STRENGTHS)
    recovery = _get(diag, "recovery")
    raw = _get(recovery, "order_strengths")
    orders = {k: _floats(_get(raw, f"order{k}")) for k in (2, 3, 4)}
    if any(v is None for v in orders.values()) or len({v.size for v in orders.values()}) != 1:
        _note(ax, f"order strengths {NOT_AVAILABLE}")
        return
    n = orders[2].size
    if n == 0:
        _note(ax, "no units recovered")
        return
    listed = _get(recovery, "unreliable_units")
    if isinstance(listed, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in listed):
        unreliable = sorted(i for i in listed if 0 <= i < n)
        source = "flagged in the fit"
    else:
        with np.errstate(invalid="ignore"):
            weak = (orders[2] < UNRELIABLE_STRENGTH) | (np.fmax(orders[3], orders[4]) < UNRELIABLE_STRENGTH)
        unreliable = np.flatnonzero(weak).tolist()
        source = "derived: the file does not list them"
    values = np.stack([orders[k] for k in (2, 3, 4)])
    scale = _pick_scale(values, UNRELIABLE_STRENGTH)
    shown = scale.shown(values)
    shown[~np.isfinite(shown)] = scale.floor
    units = np.arange(n)
    bar_w = 0.26
    for j, k in enumerate((2, 3, 4)):
        x = units + (j - 1) * bar_w
        ax.bar(x, shown[j] - scale.floor, bar_w, bottom=scale.floor, color=f"C{j}", label=f"order {k}")
    ax.axhline(UNRELIABLE_STRENGTH, color="C3", linestyle="--", label=f"unreliable below {UNRELIABLE_STRENGTH:g}")
    for i in unreliable:
        ax.axvspan(i - 0.45, i + 0.45, color="C3", alpha=0.12, linewidth=0)
    ax.set_xlim(-0.6, n - 0.4)
    _set_ylim(ax, scale, max(float(shown.max()), UNRELIABLE_STRENGTH), headroom=0.45)  # for the legend and its title
    if n <= 40:
        ax.set_xticks(units)
        labels = ax.set_xticklabels([f"{i}*" if i in unreliable else str(i) for i in units])
        for i, label in zip(units, labels):
            if i in unreliable:
                label.set_color("C3")
    folded = _get(recovery, "folded_units")
    lines = [
        f"unreliable units: {unreliable if unreliable else 'none'} ({source})",
        f"(order 2 < {UNRELIABLE_STRENGTH:g}, or orders 3 and 4 both < {UNRELIABLE_STRENGTH:g})",
    ]
    if isinstance(folded, list) and folded:
        lines.append(f"{len(folded)} more unit(s) too weak in every order: folded into the affine term")
    handles, labels = ax.get_legend_handles_labels()
    if unreliable:
        from matplotlib.patches import Patch

        handles.append(Patch(color="C3", alpha=0.12))
        labels.append("unreliable unit")
    # the verdict is the legend's title: one box, nothing overlaps
    ax.legend(handles, labels, title="\n".join(lines), title_fontsize=7, fontsize=7, loc="upper right", ncols=3)


def _draw_refinement(ax, diag):
    ax.set_title(TITLE_REFINEMENT)
    ax.set_xlabel(XLABEL_REFINEMENT)
    ax.set_ylabel(YLABEL_REFINEMENT)
    if not isinstance(diag, dict) or "refinement_history" not in diag:
        _note(ax, f"refinement history {NOT_AVAILABLE}")
        return
    raw = diag["refinement_history"]
    if raw is None:
        moment = _number(_get(diag, "stages", "moment", "rel_mse_train"))
        text = NO_REFINEMENT
        if moment is not None:
            text += f"\n(moment estimate: relative training MSE {moment:.3g})"
        _note(ax, text)
        return
    history = _floats(raw)
    if history is None or history.size == 0:
        _note(ax, f"refinement history {NOT_AVAILABLE}")
        return
    iters = np.arange(history.size)
    finite = history[np.isfinite(history)]
    label = f"L-BFGS (final {finite[-1]:.2g})" if finite.size else "L-BFGS"
    moment = _number(_get(diag, "stages", "moment", "rel_mse_train"))
    scale = _pick_scale(history, moment)
    ax.plot(iters, scale.shown(history), color="C0", marker="." if history.size <= 60 else None, label=label)
    ax.set_yscale(scale.name)
    if moment is not None and moment > 0:
        ax.axhline(moment, color="0.5", linestyle=":", label=f"moment estimate ({moment:.2g})")
    stages = _get(diag, "stages", "refined")
    if isinstance(stages, list) and len(stages) > 1:
        counts = [_number(s.get("iterations")) if isinstance(s, dict) else None for s in stages]
        if all(c is not None for c in counts) and sum(int(c) + 1 for c in counts) == history.size:
            edge = 0
            for j, c in enumerate(counts[:-1]):
                edge += int(c) + 1
                rows = _number(stages[j + 1].get("rows"))
                label = f"more rows ({int(rows):,})" if rows is not None else "next stage"
                ax.axvline(edge - 0.5, color="C1", linestyle="--", label=label if j == 0 else None)
    _draw_full_passes(ax, diag, history.size, scale)
    ax.legend(fontsize=8, loc="lower left")


def _draw_full_passes(ax, diag, x0, scale):
    """The relative MSE over every row at each full-data refinement pass, after the in-memory iterations."""
    rel = _floats(_get(diag, "stages", "full_data", "rel_mse"))
    if rel is None or rel.size == 0:
        return
    xs = x0 + np.arange(rel.size)
    ax.plot(xs, scale.shown(rel), color="C3", marker="s", linestyle="-",
            label=f"passes over every row ({rel.size}; final {rel[-1]:.3g})")


def _draw_intervals(ax, match, stderr):
    """Fitted minus true ``a`` and ``b`` per matched unit with 95% intervals (``+- 1.96 se``)."""
    ax.set_title(TITLE_INTERVALS)
    ax.set_xlabel(XLABEL_ANGLES)
    ax.set_ylabel(YLABEL_INTERVALS)
    if not (stderr and stderr.get("available")):
        _note(ax, f"standard errors {NOT_AVAILABLE}" + (f":\n{stderr['reason']}" if stderr and "reason" in stderr else ""))
        return
    if match.cols.size == 0:
        _note(ax, "no matched units")
        return
    k = match.cols.size
    pos = np.arange(k)
    for shift, true, fit, se, color, name in ((-0.15, match.a_true, match.a_fit, stderr["a"], "C0", "a"),
                                              (0.15, match.b_true, match.b_fit, stderr["b"], "C1", "b")):
        ax.errorbar(pos + shift, fit - true, yerr=Z95 * np.asarray(se)[match.cols], fmt="o", color=color, capsize=4,
                    label=f"{name}: fitted - true, 95% interval")
    ax.axhline(0.0, color="0.4", linestyle="--", linewidth=1)
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{r}->{c}{'*' if s < 0 else ''}" for r, c, s in zip(match.rows, match.cols, match.sign)], fontsize=8)
    ax.legend(fontsize=8, loc="best")


def _label(ax, text, xy, offset, **style):
    """A point or bar label, ``offset`` points from ``xy``; :func:`_place_labels` may move it vertically.

    It stays out of the constrained layout, so moving it cannot move the
    axes; it is drawn even when ``xy`` lies on the axes' edge.
    """
    ann = ax.annotate(text, xy, textcoords="offset points", xytext=offset, fontsize=7, annotation_clip=False, **style)
    ann.set_in_layout(False)
    return ann


def _annotate_points(ax, labels, xs, ys, dy, color):
    for r, x, y in zip(labels, xs, ys):
        _label(ax, f"{r}", (x, y), (4, dy), color=color)


def _candidate_shifts(n_labels, step_x, step_y):
    """Shifts ``(dx, dy)`` in pixels to try for a label, nearest first (ties: no move, up, down, right, left).

    Whole steps of a label's height vertically and of the widest label
    sideways: ``2 n + 2`` each way up and down (same-height boxes each block
    at most two vertical steps, so a clear one always exists) in up to
    ``n / 8 + 1`` columns each side, for a crowd too tall for one column.
    """
    k = np.arange(-2 * n_labels - 2, 2 * n_labels + 3, dtype=np.float64)
    j = np.arange(-(n_labels // 8) - 1, n_labels // 8 + 2, dtype=np.float64)
    jj, kk = np.meshgrid(j, k)
    shifts = np.column_stack([jj.ravel() * step_x, kk.ravel() * step_y])
    # nearest first; among equals up before down, right before left (stable, so deterministic)
    order = np.lexsort((-shifts[:, 0], -shifts[:, 1], np.hypot(shifts[:, 0], shifts[:, 1])))
    return shifts[order]


def _clear_shifts(box, placed, shifts, gap):
    """Which ``shifts`` ((c, 2) pixels) keep ``box`` at least ``gap`` pixels from every box in ``placed``."""
    if not placed:
        return np.ones(len(shifts), dtype=bool)
    p = np.array([[b.x0, b.y0, b.x1, b.y1] for b in placed])[None, :, :]
    x0, y0 = box.x0 + shifts[:, :1], box.y0 + shifts[:, 1:]
    x1, y1 = box.x1 + shifts[:, :1], box.y1 + shifts[:, 1:]
    meet = (x0 < p[..., 2] + gap) & (p[..., 0] < x1 + gap) & (y0 < p[..., 3] + gap) & (p[..., 1] < y1 + gap)
    return ~meet.any(axis=1)


def _place_labels(ax, renderer):
    """Move the point and bar labels of ``ax`` so that no two boxes meet.

    Greedy and deterministic: the other texts of the axes (metrics box,
    notes) are fixed obstacles; each label in drawing order keeps its place
    when its box is clear of those already placed, else takes the nearest
    clear place among whole steps of its height (up or down) and of the
    widest label (sideways, for a crowd), inside the axes if one is.
    """
    from matplotlib.text import Annotation

    labels = [t for t in ax.texts if isinstance(t, Annotation)]
    if not labels:
        return
    placed = [t.get_window_extent(renderer) for t in ax.texts if not isinstance(t, Annotation) and t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    gap = renderer.points_to_pixels(LABEL_GAP_PT)
    px_per_pt = renderer.points_to_pixels(1.0)
    frame = ax.get_window_extent(renderer)
    shifts = _candidate_shifts(len(labels), max(b.width for b in boxes) + gap, max(b.height for b in boxes) + gap)
    for ann, box in zip(labels, boxes):
        clear = _clear_shifts(box, placed, shifts, gap)
        inside = (box.x0 + shifts[:, 0] >= frame.x0) & (box.x1 + shifts[:, 0] <= frame.x1)
        inside &= (box.y0 + shifts[:, 1] >= frame.y0) & (box.y1 + shifts[:, 1] <= frame.y1)
        pick = np.flatnonzero(clear & inside)
        pick = pick if pick.size else np.flatnonzero(clear)
        dx, dy = shifts[pick[0]] if pick.size else (0.0, 0.0)
        ann.xyann = (ann.xyann[0] + dx / px_per_pt, ann.xyann[1] + dy / px_per_pt)
        placed.append(box.translated(dx, dy))


def _draw_recovered(ax, match):
    """Fitted against true ``a`` and ``b`` of the matched units, on square axes with ``y = x``."""
    ax.set_title(TITLE_RECOVERED)
    ax.set_xlabel(XLABEL_RECOVERED)
    ax.set_ylabel(YLABEL_RECOVERED)
    ax.scatter(match.a_true, match.a_fit, marker="o", color="C0", label="a (output weight)", zorder=3)
    ax.scatter(match.b_true, match.b_fit, marker="^", color="C1", label="b (bias)", zorder=3)
    pool = np.concatenate([match.a_true, match.a_fit, match.b_true, match.b_fit])
    lo, hi = (float(pool.min()), float(pool.max())) if pool.size else (-1.0, 1.0)
    pad = 0.08 * max(hi - lo, 1e-3)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", linestyle="--", linewidth=1, label="y = x")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    _annotate_points(ax, match.rows, match.a_true, match.a_fit, 4, "C0")
    _annotate_points(ax, match.rows, match.b_true, match.b_fit, -9, "C1")
    ax.legend(fontsize=8, loc="lower right")


def _metrics_box(ax, metrics):
    lines = [
        f"rel test MSE: {metrics['rel_test_mse']:.3g}",
        f"max angle: {metrics['max_angle_deg']:.3g} deg",
        f"max |b err|: {metrics['max_abs_b_err']:.3g}",
        f"max rel a err: {metrics['max_rel_a_err']:.3g}",
    ]
    if metrics["unmatched_true"] or metrics["unmatched_fitted"]:
        lines.append(f"unmatched: {metrics['unmatched_true']} true, {metrics['unmatched_fitted']} fitted")
    if "coverage_95" in metrics:
        lines.append(f"truth inside 95% intervals: {100 * metrics['coverage_95']:.0f}% of parameters")
    ax.text(
        0.02,
        0.98,
        "\n".join(lines),
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
    )


def _draw_angles(ax, match):
    """The angle of each matched pair, labelled ``true->fitted`` (``*``: compared as ``(a, -w, -b)``).

    The y scale follows :func:`_pick_scale` against a 0-1 degree linear
    axis: angles of ~1e-6 degrees get a log axis; an exact 0 is drawn at its
    floor and labelled "0".
    """
    ax.set_title(TITLE_ANGLES)
    ax.set_xlabel(XLABEL_ANGLES)
    ax.set_ylabel(YLABEL_ANGLES)
    if match.rows.size == 0:
        _note(ax, "no matched units")
        return
    angle, sign = match.angle_deg, match.sign
    pos = np.arange(match.rows.size)
    # ~1e-6 degree angles would be invisible on a 0-1 degree axis: the shared rule picks a log axis
    scale = _pick_scale(angle, linear_top=ANGLE_LINEAR_TOP)
    shown = scale.shown(angle)
    ax.bar(pos, shown - scale.floor, bottom=scale.floor, color="C2", label="angle")
    for x, y, value in zip(pos, shown, angle):
        _label(ax, "0" if value == 0 else f"{value:.2g}", (x, y), (0, 2), ha="center")
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{r}->{c}{'*' if s < 0 else ''}" for r, c, s in zip(match.rows, match.cols, sign)], fontsize=8)
    _set_ylim(ax, scale, float(shown.max()), headroom=0.2, linear_top=ANGLE_LINEAR_TOP)
    if (sign < 0).any():
        ax.text(0.98, 0.98, "* compared as (a, -w, -b)", transform=ax.transAxes, ha="right", va="top", fontsize=7)


def _draw_truth(ax_scatter, ax_angle, ax_errors, model, truth):
    from . import evaluate, match_units

    match = match_units(truth.network, model)
    _draw_recovered(ax_scatter, match)
    metrics = evaluate(model, truth)
    _metrics_box(ax_scatter, metrics)
    _draw_angles(ax_angle, match)
    _draw_intervals(ax_errors, match, model.stderr)
    return metrics


def render_report(model, out, *, truth=None):
    """Draw the diagnostics of a fitted model in one figure and save it.

    Parameters
    ----------
    model : ReluNetwork or str or path-like
        The fitted model, with the diagnostics ``fit`` records; a path is
        read with :func:`stream_relu.network.load_model`.
    out : str or path-like
        Image file to write; its suffix picks the format: ``.png``, ``.svg``
        or ``.pdf``.
    truth : Truth or str or path-like, optional
        Planted network and input law (a simulated store or a truth JSON
        file is read with :func:`stream_relu.simulate.load_truth`).  Adds the
        panels comparing recovered and true parameters.

    Returns
    -------
    matplotlib.figure.Figure
        The saved figure.  Its axes, in order: ``T_2`` spectrum, per-unit
        Hermite order strengths, refinement and, with a truth, recovered vs
        true parameters, angle per matched unit, and the errors of ``a`` and
        ``b`` with their 95% intervals (from the model's standard errors).

    Raises
    ------
    InputError
        If matplotlib is not installed (the message gives the ``pip
        install`` command), if ``out`` has an unsupported suffix, or if the
        truth has a different number of features than the model.

    Notes
    -----
    Diagnostics missing from the model leave their panel with a
    "not available" note.  Order strengths and unreliable units refer to
    the units of the moment estimate, which the refinement keeps in the
    same order.  With a truth, both networks are rescaled to unit ``w``;
    units are matched by :func:`stream_relu.metrics.match_units`, and a
    fitted unit with a negative cosine is compared as ``(a, -w, -b)``.
    """
    path = os.fspath(out)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUPPORTED_FORMATS:
        raise InputError(
            f"cannot write a report to {path!r}: its name must end in {', '.join(SUPPORTED_FORMATS)} "
            f"(got {suffix or 'no suffix'!r})"
        )
    Figure, FigureCanvasAgg = _import_matplotlib()

    if isinstance(model, (str, os.PathLike)):
        from . import load_model

        model = load_model(model)
    if truth is not None and isinstance(truth, (str, os.PathLike)):
        from . import load_truth

        truth = load_truth(os.fspath(truth))
    if truth is not None and truth.n_features != model.n_features:
        raise InputError(f"the model has {model.n_features} features but the truth has {truth.n_features}")
    diag = model.diagnostics if isinstance(model.diagnostics, dict) else {}

    if truth is None:
        fig = Figure(figsize=(17, 5.2), dpi=DPI, layout="constrained")
        grid = fig.add_gridspec(1, 3)
        axes = [fig.add_subplot(grid[0, j]) for j in range(3)]
    else:
        fig = Figure(figsize=(17, 10), dpi=DPI, layout="constrained")
        grid = fig.add_gridspec(2, 6)
        axes = [fig.add_subplot(grid[0, 2 * j : 2 * j + 2]) for j in range(3)]
        axes += [fig.add_subplot(grid[1, 2 * j : 2 * j + 2]) for j in range(3)]
    FigureCanvasAgg(fig)

    _draw_spectrum(axes[0], diag)
    _draw_strengths(axes[1], diag)
    _draw_refinement(axes[2], diag)
    if truth is not None:
        _draw_truth(axes[3], axes[4], axes[5], model, truth)

    fig.suptitle(
        f"stream_relu model: n_features = {model.n_features}, n_hidden = {model.n_hidden}, {_rows_used(model)}",
        fontsize=13,
    )
    if truth is not None:
        fig.draw_without_rendering()  # lays the figure out: the labels are placed on the final axes
        renderer = fig.canvas.get_renderer()
        for ax in axes[3:]:
            _place_labels(ax, renderer)
    fig.savefig(path, dpi=DPI)
    return fig
