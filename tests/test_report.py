"""The visual report: panels, titles and labels, truth comparison, robustness to missing diagnostics."""

import copy
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import stream_relu as sr  # noqa: E402
from conftest import planted_data  # noqa: E402
from stream_relu import match_units  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402
from stream_relu.report import _pick_scale, render_report  # noqa: E402

D, M, N = 5, 2, 50_000

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

PANELS = [
    ("T_2 spectrum", "eigenvalue index (sorted by |eigenvalue|)", "|eigenvalue| of T_2"),
    ("Per-unit Hermite order strengths", "unit (moment-estimate order)", "strength (noise levels)"),
    ("Refinement", "L-BFGS iteration", "relative training MSE"),
]
TRUTH_PANELS = [
    ("Recovered vs true", "true value", "recovered value"),
    ("Angle per matched unit", "matched pair (true unit -> fitted unit)", "angle between w_true and w_fit (degrees)"),
    ("Errors and their 95% intervals", "matched pair (true unit -> fitted unit)", "fitted - true"),
]


@pytest.fixture(scope="module")
def fitted():
    x, y, net = planted_data(N, D, M, seed=7)
    result = sr.fit(x, y, n_hidden=M, progress=False)
    truth = sr.Truth(net, np.zeros(D), np.eye(D))
    return result.model, truth


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def _check_panels(fig, panels):
    assert len(fig.axes) == len(panels)
    for ax, (title, xlabel, ylabel) in zip(fig.axes, panels):
        assert ax.get_title() == title
        assert ax.get_xlabel() == xlabel
        assert ax.get_ylabel() == ylabel


def test_report_without_truth_writes_png_with_three_panels(tmp_path, fitted):
    model, _ = fitted
    out = tmp_path / "report.png"
    fig = render_report(model, out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    _check_panels(fig, PANELS)
    spectrum, strengths, refinement = fig.axes

    width = model.diagnostics["width"]
    assert spectrum.get_yscale() == "log"
    hlines = [line.get_ydata()[0] for line in spectrum.lines if line.get_ydata()[0] == line.get_ydata()[1]]
    assert width["threshold"] in hlines
    assert width["noise_floor"] in hlines
    vlines = [line.get_xdata()[0] for line in spectrum.lines if line.get_xdata()[0] == line.get_xdata()[1]]
    assert vlines == [width["chosen"] + 0.5]
    labels = spectrum.get_legend_handles_labels()[1]
    assert "threshold" in " ".join(labels) and any(f"m = {M}" in s for s in labels)
    # one bar per eigenvalue
    assert len(spectrum.patches) == len(width["t2_spectrum"])

    assert strengths.get_yscale() == "log"
    assert [f"order {k}" for k in (2, 3, 4)] == [s for s in strengths.get_legend_handles_labels()[1] if "order" in s]
    assert len(strengths.patches) == 3 * M
    assert any(line.get_ydata()[0] == 10.0 for line in strengths.lines)

    assert refinement.get_yscale() == "log"
    (curve,) = [line for line in refinement.lines if line.get_label().startswith("L-BFGS")]
    assert len(curve.get_ydata()) == len(model.diagnostics["refinement_history"])

    title = fig.get_suptitle()
    assert f"n_features = {D}" in title and f"n_hidden = {M}" in title and f"{N:,}" in title


def test_report_with_truth_adds_recovered_vs_true(tmp_path, fitted):
    model, truth = fitted
    out = tmp_path / "report.png"
    fig = render_report(model, out, truth=truth)
    assert out.read_bytes()[:8] == PNG_MAGIC
    _check_panels(fig, PANELS + TRUTH_PANELS)
    scatter, angles = fig.axes[3], fig.axes[4]

    match = match_units(truth.network, model)
    rows = match.rows
    points = {c.get_label(): c.get_offsets() for c in scatter.collections}
    assert set(points) == {"a (output weight)", "b (bias)"}
    assert all(len(p) == rows.size for p in points.values())
    np.testing.assert_allclose(points["a (output weight)"][:, 0], truth.network.a[rows])
    np.testing.assert_allclose(points["b (bias)"][:, 0], truth.network.b[rows])
    # the noiseless planted network is recovered: points on y = x
    np.testing.assert_allclose(points["a (output weight)"][:, 1], truth.network.a[rows], atol=1e-3)
    np.testing.assert_allclose(points["b (bias)"][:, 1], truth.network.b[rows], atol=1e-3)
    assert any(line.get_label() == "y = x" for line in scatter.lines)
    box = "\n".join(_texts(scatter))
    assert "rel test MSE" in box and "max angle" in box

    assert len(angles.patches) == rows.size
    assert all(p.get_height() < 1.0 for p in angles.patches)

    # the errors panel: fitted - true of a and b, each with +- 1.96 standard errors of the model file
    errors = fig.axes[5]
    assert len(errors.containers) == 2
    for container, key in zip(errors.containers, ("a", "b")):
        segments = np.array(container.lines[2][0].get_segments())
        half = (segments[:, 1, 1] - segments[:, 0, 1]) / 2
        np.testing.assert_allclose(half, 1.959963984540054 * model.stderr[key][match.cols], rtol=1e-12)


def test_unreliable_units_and_no_refinement_are_shown(tmp_path, fitted):
    model, _ = fitted
    diag = copy.deepcopy(model.diagnostics)
    diag["recovery"]["order_strengths"] = {"order2": [150.0, 4.0], "order3": [80.0, 2.0], "order4": [30.0, 0.0]}
    diag["recovery"]["unreliable_units"] = [1]
    diag["refinement_history"] = None
    weak = dataclasses.replace(model, diagnostics=diag)
    fig = render_report(weak, tmp_path / "weak.png")
    _check_panels(fig, PANELS)
    strengths, refinement = fig.axes[1], fig.axes[2]
    ticks = {t.get_text(): t.get_color() for t in strengths.get_xticklabels()}
    assert set(ticks) == {"0", "1*"}
    assert ticks["1*"] == "C3"
    legend = strengths.get_legend()
    assert "unreliable units: [1]" in legend.get_title().get_text()
    assert "unreliable unit" in [t.get_text() for t in legend.get_texts()]
    assert any("no refinement" in t for t in _texts(refinement))


def test_model_without_diagnostics_renders_not_available(tmp_path, fitted):
    _, truth = fitted
    bare = truth.network  # a drawn network: no provenance, no diagnostics
    assert bare.diagnostics == {} and bare.provenance == {}
    out = tmp_path / "bare.png"
    fig = render_report(bare, out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    _check_panels(fig, PANELS)
    for ax in fig.axes:
        assert any("not available" in t for t in _texts(ax))
    assert "rows used: not recorded" in fig.get_suptitle()

    # with a truth the comparison panels still work
    fig = render_report(bare, tmp_path / "bare_truth.png", truth=truth)
    _check_panels(fig, PANELS + TRUTH_PANELS)
    assert any("standard errors not available" in t for t in _texts(fig.axes[5]))


def test_partial_and_malformed_diagnostics_do_not_crash(tmp_path, fitted):
    model, _ = fitted
    diag = {
        "width": {"t2_spectrum": [0.2, None, 0.001], "chosen": 1},  # no floor, no threshold
        "recovery": {"order_strengths": {"order2": [1.0, 2.0], "order3": "garbage"}},
        "refinement_history": [1e-3, 0.0, None],
    }
    odd = dataclasses.replace(model, diagnostics=diag)
    fig = render_report(odd, tmp_path / "odd.png")
    _check_panels(fig, PANELS)
    assert fig.axes[0].get_yscale() == "log"
    assert any("not available" in t for t in _texts(fig.axes[1]))


def test_paths_and_vector_formats(tmp_path, fitted):
    model, truth = fitted
    model_path = tmp_path / "m.json"
    model.save(model_path)
    truth_path = tmp_path / "truth.json"
    truth_path.write_text(json.dumps(truth.to_dict()))
    svg = tmp_path / "r.svg"
    fig = render_report(str(model_path), svg, truth=str(truth_path))
    assert len(fig.axes) == 6
    assert svg.read_text()[:200].lstrip().startswith("<?xml")
    pdf = tmp_path / "r.pdf"
    render_report(model, pdf)
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_bad_suffix_and_feature_mismatch_raise_input_error(tmp_path, fitted):
    model, _ = fitted
    with pytest.raises(sr.InputError, match=r"\.png"):
        render_report(model, tmp_path / "report.jpg")
    other = sr.Truth(sr.draw_network(D + 1, M, np.random.default_rng(0)), np.zeros(D + 1), np.eye(D + 1))
    with pytest.raises(sr.InputError, match="features"):
        render_report(model, tmp_path / "report.png", truth=other)


def test_missing_matplotlib_raises_input_error(tmp_path, fitted, monkeypatch):
    model, _ = fitted
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "report.png"
    with pytest.raises(sr.InputError, match="pip install") as info:
        render_report(model, out)
    assert 'stream_relu[report]' in str(info.value)
    assert not out.exists()


def test_module_import_does_not_import_matplotlib():
    code = "import sys, stream_relu.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- y scales and label placement, on synthetic truth/model pairs -------------------------------------------------


def _pair(fitted, a, b, angles_deg, b_err=0.0):
    """A truth and a "fitted" model with units along the axes: unit i of the fit is unit i of the truth
    turned by ``angles_deg[i]`` degrees (exactly 0 stays exactly on the axis), with ``b`` off by ``b_err``.

    The model carries the fixture's diagnostics, its order strengths edited to one entry per unit.
    """
    a, b, t = (np.asarray(v, dtype=np.float64) for v in (a, b, np.radians(angles_deg)))
    m = a.size
    d = max(D, m + 1)
    W_true, W_fit = np.eye(d)[:, :m], np.zeros((d, m))
    W_fit[np.arange(m), np.arange(m)] = np.cos(t)
    W_fit[np.arange(m) + 1, np.arange(m)] = np.sin(t)
    model, _ = fitted
    diag = copy.deepcopy(model.diagnostics)
    diag["recovery"]["order_strengths"] = {f"order{k}": [1000.0 / k**2] * m for k in (2, 3, 4)}
    diag["recovery"]["unreliable_units"] = []
    truth = sr.Truth(sr.ReluNetwork(a, W_true, b, np.zeros(d), 0.0), np.zeros(d), np.eye(d))
    fit = sr.ReluNetwork(a, W_fit, b + b_err, np.zeros(d), 0.0, provenance=model.provenance, diagnostics=diag)
    return fit, truth


def _labels(ax):
    return [t for t in ax.texts if isinstance(t, Annotation)]


def test_pick_scale_rule():
    # log beyond a decade, or far below the top a linear axis would have; zeros and NaN are not positive
    assert _pick_scale([1.0, 5.0, 9.9]).name == "linear"
    assert _pick_scale([1.0, 11.0]).name == "log"
    assert _pick_scale([1.0, 5.0], 50.0).name == "log"  # a reference line counts
    assert _pick_scale([2e-6, 3e-6], linear_top=1.0).name == "log"
    assert _pick_scale([0.2, 0.5], linear_top=1.0).name == "linear"
    assert _pick_scale([0.0, 0.0, np.nan], linear_top=1.0) == _pick_scale([]) == _pick_scale([0.0])
    assert _pick_scale([0.0]).name == "linear" and _pick_scale([0.0]).floor == 0.0
    log = _pick_scale([0.0, 1e-3, 1.0])
    assert log.name == "log" and log.floor == pytest.approx(1e-3 / 5)
    np.testing.assert_allclose(log.shown([0.0, 1e-3, np.nan]), [log.floor, 1e-3, np.nan])


def test_tiny_angles_get_a_log_axis_with_visible_bars(tmp_path, fitted):
    angles = [0.0, 2e-6, 3e-6, 5e-6]
    model, truth = _pair(fitted, [1.0, -0.8, 1.2, -1.1], [0.5, -0.3, 0.1, 0.9], angles)
    match = match_units(truth.network, model)
    assert match.angle_deg[0] == 0.0 and np.all((match.angle_deg[1:] > 1e-6) & (match.angle_deg[1:] < 1e-5))
    fig = render_report(model, tmp_path / "tiny.png", truth=truth)
    ax = fig.axes[4]
    assert ax.get_yscale() == "log"
    bottom, top = ax.get_ylim()
    assert 0 < bottom < match.angle_deg[1:].min() and top > match.angle_deg.max()
    to_px = ax.transData.transform
    for bar, angle in zip(ax.patches, match.angle_deg):
        assert bar.get_y() == pytest.approx(bottom)  # bars start at the axis floor
        assert bar.get_y() + bar.get_height() == pytest.approx(max(angle, bottom))
        rise = to_px((0, bar.get_y() + bar.get_height()))[1] - to_px((0, bottom))[1]
        assert rise > 20 if angle > 0 else rise == pytest.approx(0.0)  # visible; the exact zero at the floor
    texts = [t.get_text() for t in _labels(ax)]
    assert texts[0] == "0" and all(s.endswith("e-06") for s in texts[1:])
    # the other panels follow the same rule: the fixture's values span decades
    assert [a.get_yscale() for a in fig.axes[:3]] == ["log"] * 3


def test_angles_within_a_decade_keep_a_linear_axis(tmp_path, fitted):
    model, truth = _pair(fitted, [1.0, -0.8, 1.2], [0.5, -0.3, 0.1], [0.3, 0.5, 0.8])
    fig = render_report(model, tmp_path / "linear.png", truth=truth)
    ax = fig.axes[4]
    assert ax.get_yscale() == "linear"
    bottom, top = ax.get_ylim()
    assert bottom == 0.0 and top >= 1.0
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [0.3, 0.5, 0.8], rtol=1e-6)


def test_narrow_strengths_and_history_get_linear_axes(tmp_path, fitted):
    model, _ = fitted
    diag = copy.deepcopy(model.diagnostics)
    diag["width"] = {"t2_spectrum": [0.5, -0.3, 0.2], "chosen": 2, "noise_floor": 0.1, "threshold": 0.15}
    diag["recovery"]["order_strengths"] = {"order2": [40.0, 30.0], "order3": [20.0, 25.0], "order4": [15.0, 12.0]}
    diag["refinement_history"] = [0.5, 0.4, 0.35]
    diag["stages"] = {"moment": {"rel_mse_train": 0.5}}
    fig = render_report(dataclasses.replace(model, diagnostics=diag), tmp_path / "narrow.png")
    assert [ax.get_yscale() for ax in fig.axes] == ["linear"] * 3
    assert all(ax.get_ylim()[0] == 0.0 for ax in fig.axes[:2])  # bars from 0


def _overlapping(boxes):
    return [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j].expanded(1.0, 1.0))]


def _shrunk(box, px=0.25):
    """``box`` less ``px`` pixels on each side: a tolerance for rounding."""
    return Bbox.from_extents(box.x0 + px, box.y0 + px, box.x1 - px, box.y1 - px)


def test_point_and_bar_labels_do_not_overlap(tmp_path, fitted):
    # 24 units: 20 with a and b all near 1 (their points pile up on the scatter), 4 spread out; angles of
    # nearly one size, so the value labels over neighbouring bars would collide side by side
    rng = np.random.default_rng(3)
    near = 1.0 + 1e-3 * rng.standard_normal(20)
    a = np.concatenate([near, [-2.0, -1.5, 2.5, 0.2]])
    b = np.concatenate([near[::-1] + 1e-3, [1.5, -2.0, 0.0, 2.0]])
    angles = 3e-6 * (1.0 + 0.05 * rng.random(24))
    model, truth = _pair(fitted, a, b, angles, b_err=1e-4)
    fig = render_report(model, tmp_path / "crowded.png", truth=truth)
    renderer = fig.canvas.get_renderer()
    scatter, bars = fig.axes[3], fig.axes[4]
    assert len(_labels(scatter)) == 48 and len(_labels(bars)) == 24
    for ax in (scatter, bars):
        labels = _labels(ax)
        boxes = [t.get_window_extent(renderer) for t in labels]
        # drawn at one offset from their anchors, labels of one series would collide
        anchors = ax.transData.transform([t.xy for t in labels])
        size = np.array([[b.width, b.height] for b in boxes])
        same = [(i, j) for i in range(len(labels)) for j in range(i) if labels[i].get_color() == labels[j].get_color()]
        assert any(np.all(abs(anchors[i] - anchors[j]) < (size[i] + size[j]) / 2) for i, j in same)
        # placed: no two labels meet, nor a label and the metrics box or notes of the axes
        others = [t.get_window_extent(renderer) for t in ax.texts if t not in labels]
        assert not _overlapping([_shrunk(b) for b in boxes])
        assert not [(i, o) for i, b in enumerate(boxes) for o in others if _shrunk(b).overlaps(o)]
    # across the two axes, too
    assert not _overlapping([_shrunk(t.get_window_extent(renderer)) for ax in (scatter, bars) for t in _labels(ax)])


def test_measured_width_draws_each_candidates_threshold(tmp_path):
    x, y, _ = planted_data(N, D, M, seed=7)
    model = sr.fit(x, y, progress=False).model  # width measured
    fig = render_report(model, tmp_path / "measured.png")
    spectrum = fig.axes[0]
    width = model.diagnostics["width"]
    (marks,) = [line for line in spectrum.lines if line.get_label() == "measured threshold of each candidate"]
    np.testing.assert_allclose(marks.get_ydata(), [c["threshold"] for c in width["candidates"]])
    assert any(s.startswith("measured noise floor") for s in spectrum.get_legend_handles_labels()[1])
