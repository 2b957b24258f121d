"""The measured width: row-group noise, the spectrum rule, the residual look, and fits without ``n_hidden``."""

import numpy as np
import pytest

import stream_relu as sr
from stream_relu.hermite import relu_coefficient
from stream_relu.moments import GaussPlan, finalize_gauss, gauss_chunk
from stream_relu.width import GROUPS, GroupNoise, heldout_gain, measured_width, residual_look, unit_from_residual


def _relu_data(rng, n, d, a, W, b, noise=0.0, dtype=np.float64):
    x = rng.standard_normal((n, d))
    y = np.maximum(x @ W + b, 0.0) @ a + noise * rng.standard_normal(n)
    return x.astype(dtype), y.astype(dtype)


def _gauss(x, y, groups=GROUPS):
    plan = GaussPlan.from_sample(x[:4096], y[:4096], groups)
    return finalize_gauss(gauss_chunk(x, y, plan), plan)


def test_group_sums_match_a_plain_loop_and_the_totals_of_a_pass_without_groups():
    rng = np.random.default_rng(0)
    x, y = _relu_data(rng, 30_000, 5, np.array([1.0, -0.7]), np.linalg.qr(rng.standard_normal((5, 2)))[0], np.array([0.3, -1.0]))
    x32, y32 = (x + 2.0).astype(np.float32), y.astype(np.float32)
    plain = GaussPlan.from_sample(x32[:4096], y32[:4096])
    grouped = plain.with_groups(GROUPS)
    s0, s1 = gauss_chunk(x32, y32, plain), gauss_chunk(x32, y32, grouped)
    # the same products, summed group by group: float32 rounding of the block sums, about 1e-6 relative
    for k in ("F1F1", "x", "xx", "y", "yx", "yxx", "yy"):
        if k in s0.sums:
            np.testing.assert_allclose(s1.sums[k], s0.sums[k], rtol=1e-5, atol=1e-6 * np.abs(s0.sums[k]).max())
    assert grouped.key != plain.key
    g = finalize_gauss(s1, grouped)
    # oracle: each group's T_2 by a plain float64 loop over its rows, in the all-rows whitening
    z = (x32.astype(np.float64) - g.mean) @ g.whitener
    yc = y32.astype(np.float64) - g.T0
    for k in (0, 7, 15):
        zg, yg = z[k::GROUPS], yc[k::GROUPS]
        oracle = (zg * yg[:, None]).T @ zg / yg.shape[0] - yg.mean() * np.eye(5)
        # float32 products of 30,000 rows: about 1e-6 of the terms' scale (gauss_chunk's Notes)
        np.testing.assert_allclose(g.t2_groups[k], oracle, atol=2e-5)
    np.testing.assert_allclose(np.tensordot(g.group_rows, g.t2_groups, 1) / g.n_samples, g.T2, atol=1e-7)


def test_measured_standard_error_matches_the_spread_over_independent_samples():
    # oracle: the standard deviation of v^T T_2 v over 40 independent data sets
    d, W = 4, np.eye(4)[:, :2]
    a, b = np.array([1.0, -0.5]), np.array([0.5, -0.2])
    v = np.ones(d) / 2.0
    values, ses = [], []
    for seed in range(40):
        x, y = _relu_data(np.random.default_rng([seed, 1]), 16_384, d, a, W, b, noise=0.3)
        g = _gauss(x, y)
        values.append(v @ g.T2 @ v)
        ses.append(GroupNoise.from_groups(g.t2_groups, g.group_rows, g.T2).se(v))
    # 40 samples give the spread to about 11%; the mean of 40 measured se's to about 3%
    assert np.mean(ses) == pytest.approx(np.std(values, ddof=1), rel=0.3)


def test_spectrum_rule_false_alarms_on_pure_noise_are_rare():
    # y independent of x: every candidate is noise.  The rule is built for about 1e-3 per look and
    # the warning level for 1e-2; 60 data sets see no take and at most a few warnings.
    taken, warned = 0, 0
    for seed in range(60):
        rng = np.random.default_rng([seed, 2])
        x, y = rng.standard_normal((8192, 6)), rng.standard_normal(8192)
        w = measured_width(_gauss(x, y))
        taken += w.n_hidden > 0
        warned += w.candidates[0].warns
    assert taken == 0
    assert warned <= 4  # P(>= 5 of 60 | p = 0.01) < 3e-3


def test_spectrum_rule_sees_a_unit_the_formula_floor_misses():
    # as in a user report: biases 0, 2 and -0.7 at d = 10, where the b = 2 unit sits below 3 formula floors
    rng = np.random.default_rng(3)
    W = np.linalg.qr(rng.standard_normal((10, 3)))[0]
    x, y = _relu_data(rng, 200_000, 10, np.array([1.0, -0.6, 0.8]), W, np.array([0.0, 2.0, -0.7]))
    g = _gauss(x, y)
    w = measured_width(g)
    old = sr.recovery.choose_width(g)
    assert w.n_hidden == 3 and old.n_hidden == 2
    assert [c.taken for c in w.candidates[:4]] == [True, True, True, False]
    # the weak unit stands several measured standard errors out, and its eigenvalue above its threshold
    assert w.candidates[2].z[2] > 5 and abs(w.candidates[2].value) > w.candidates[2].threshold


def test_residual_look_reads_a_lone_unit():
    # r = a relu(<v, z> + b) less its affine part (a refined fit leaves no affine residual): the look's
    # direction is v, and its order-2 and order-3 coefficients give a and b back
    rng = np.random.default_rng(4)
    d, a, b = 6, -0.8, 0.9
    v = np.linalg.qr(rng.standard_normal((d, 1)))[0][:, 0]
    z = rng.standard_normal((400_000, d))
    r = a * np.maximum(z @ v + b, 0.0)
    design = np.column_stack([z, np.ones(z.shape[0])])
    r = r - design @ np.linalg.lstsq(design, r, rcond=None)[0]
    look = residual_look(z, r, np.zeros((d, 0)))
    s = np.sign(look.direction @ v)
    assert abs(look.direction @ v) > 0.999
    assert abs(look.candidate.value) > look.candidate.threshold
    assert look.candidate.z[2] > 100 and look.candidate.z[3] > 10
    unit = unit_from_residual(look)
    # Monte Carlo: E[r He_3] has a standard error of about 1.5% of its value at 4e5 rows, so b and a are
    # good to a few percent (the refinement that follows needs only a start)
    assert s * unit["b"] == pytest.approx(b, abs=0.06)
    assert unit["a"] == pytest.approx(a, rel=0.06)
    np.testing.assert_allclose(look.coefficients[2], a * relu_coefficient(2, b), rtol=0.02)


def test_heldout_gain_is_the_mean_fall_of_the_squared_error():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    old, new = np.zeros(4), y + np.array([0.1, -0.1, 0.1, -0.1])
    delta = y**2 - 0.01
    g = heldout_gain(y, old, new)
    assert g["gain"] == pytest.approx(delta.mean())
    assert g["se"] == pytest.approx(delta.std() / 2.0)


def test_fit_without_width_finds_the_weak_unit_exactly():
    rng = np.random.default_rng(3)
    W = np.linalg.qr(rng.standard_normal((10, 3)))[0]
    x, y = _relu_data(rng, 200_000, 10, np.array([1.0, -0.6, 0.8]), W, np.array([0.0, 2.0, -0.7]))
    res = sr.fit(x, y, progress=False, chunk_rows=32768)
    assert res.model.n_hidden == 3
    width = res.diagnostics["width"]
    assert width["chosen"] == 3 and not width["requested"]
    assert {"rule", "candidates", "residual_looks"} <= set(width)
    xt, yt = _relu_data(np.random.default_rng(9), 50_000, 10, np.array([1.0, -0.6, 0.8]), W, np.array([0.0, 2.0, -0.7]))
    rel = np.mean((res.model.predict(xt) - yt) ** 2) / np.var(yt)
    assert rel < 1e-8  # noiseless float64 rows: the refinement reaches rounding level


def test_affine_data_give_an_affine_model_with_a_warning():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200_000, 6))
    y = 0.7 * x[:, 0] - 0.2 * x[:, 2] + 0.1 + 0.1 * rng.standard_normal(200_000)
    res = sr.fit(x, y, progress=False)
    assert res.model.n_hidden == 0
    assert any(w.startswith("no structure found") for w in res.diagnostics["warnings"])
    # least squares on 2e5 rows with noise 0.1: standard errors about 2.2e-4
    np.testing.assert_allclose(res.model.u, [0.7, 0, -0.2, 0, 0, 0], atol=1.5e-3)
    assert res.model.c == pytest.approx(0.1, abs=1.5e-3)
    u = np.array([0.7, 0, -0.2, 0, 0, 0])
    truth = sr.Truth(sr.ReluNetwork(np.zeros(0), np.zeros((6, 0)), np.zeros(0), u, 0.1), np.zeros(6), np.eye(6))
    metrics = sr.evaluate(res.model, truth)
    # no unit on either side: no unit error to report (NaN, not a perfect 0)
    assert np.isnan(metrics["max_angle_deg"]) and np.isnan(metrics["max_rel_a_err"])
    assert metrics["unmatched_true"] == 0 and metrics["unmatched_fitted"] == 0
    assert metrics["rel_test_mse"] < 2e-5  # (1.5e-3)^2 * 7 coefficients / Var f = 0.53


def test_requested_width_keeps_the_formula_rule_and_no_evidence_keys():
    rng = np.random.default_rng(6)
    W = np.linalg.qr(rng.standard_normal((8, 2)))[0]
    x, y = _relu_data(rng, 100_000, 8, np.array([1.0, -0.6]), W, np.array([0.2, -0.4]))
    res = sr.fit(x, y, n_hidden=2, progress=False)
    width = res.diagnostics["width"]
    assert width["requested"] and "candidates" not in width and "rule" not in width


def _affine_store(path):
    d = 6
    u = np.zeros(d)
    u[0], u[2] = 0.7, -0.2
    net = sr.ReluNetwork(np.zeros(0), np.zeros((d, 0)), np.zeros(0), u, 0.1)
    sr.simulate_store(str(path), truth=sr.Truth(net, np.zeros(d), np.eye(d), 0.1), n_samples=120_000, chunk_rows=20_000)
    return u


def test_cli_fit_of_affine_data_writes_the_affine_model_and_exits_0(tmp_path, capsys):
    from stream_relu.cli import main

    store, out = tmp_path / "affine.zarr", tmp_path / "model.json"
    u = _affine_store(store)
    assert main(["fit", str(store), "--out", str(out), "--scheduler", "synchronous", "--no-state"]) == 0
    assert "no structure found" in capsys.readouterr().err
    model = sr.load_model(str(out))
    assert model.n_hidden == 0
    # 1.2e5 rows with noise 0.1: least-squares standard errors about 3e-4
    np.testing.assert_allclose(model.u, u, atol=2e-3)
    assert main(["check", str(store), "--scheduler", "synchronous"]) == 0
    printed = capsys.readouterr().out
    assert "width candidate 1: T_2 eigenvalue" in printed and "left out" in printed
    assert "suggested width 0" in printed


def test_residual_kernel_over_chunks_equals_the_rows_sums():
    from stream_relu.refine import Params, ResidualPlan, residual_chunk, residual_sums, residual_t2

    rng = np.random.default_rng(7)
    d = 5
    x = rng.standard_normal((48_000, d))
    params = Params(np.array([0.5]), np.eye(d)[:, :1], np.array([0.2]), np.zeros(d), 0.0)
    y = np.maximum(x @ np.eye(d)[:, 1] - 0.3, 0.0) + params.predict(x)
    plan = ResidualPlan.build(np.zeros(d), np.eye(d), params, GROUPS)
    merged = sum(residual_chunk(x[i : i + 16_000], y[i : i + 16_000], plan) for i in range(0, 48_000, 16_000))
    whole = residual_sums(x, y - params.predict(x), GROUPS)  # chunks of a multiple of K rows: the same groups
    for k in whole.sums:
        np.testing.assert_allclose(merged.sums[k], whole.sums[k], rtol=1e-12, atol=1e-9)
    t2 = residual_t2(merged)
    # oracle: the residual is relu(<e_1, z> - 0.3), whose T_2 is phi(-0.3) e_1 e_1^T (Monte Carlo, 48,000 rows)
    expected = relu_coefficient(2, -0.3) * np.outer(np.eye(d)[1], np.eye(d)[1])
    np.testing.assert_allclose(t2.total, expected, atol=0.03)


def test_an_ambiguous_look_streams_every_row_and_then_sees_the_unit():
    from stream_relu.engine import ArraySource, open_runner
    from stream_relu.refine import Params
    from stream_relu.stages import _stop_or_stream

    rng = np.random.default_rng(8)
    d, n = 8, 400_000
    x = rng.standard_normal((n, d))
    y = 0.08 * np.maximum(x[:, 0] - 1.0, 0.0) + 0.3 * rng.standard_normal(n)  # a weak unit in noise
    g = _gauss(x, y)
    affine = Params(np.zeros(0), np.zeros((d, 0)), np.zeros(0), g.T1, g.T0)
    z = (x - g.mean) @ g.whitener
    small = slice(0, 8_192)
    r = y[small] - affine.predict(z[small])
    source = ArraySource(x, y, 32_768)
    with open_runner(source, None, "synchronous", None) as runner:
        seen = _stop_or_stream((source, runner, g, False), affine, z[small], r, False)
    assert seen.streamed and seen.why is None  # 8,192 rows saw nothing; every row sees the unit
    assert seen.look.candidate.extra["rows"] == n and abs(seen.look.direction[0]) > 0.95


def test_fit_without_width_at_m_equal_d():
    # m = d: no bulk in the spectrum, and the residual search has no direction left to add
    rng = np.random.default_rng(10)
    W = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    a, b = np.array([1.0, -0.8, 0.9, -1.2]), np.array([0.3, -0.5, 1.0, -1.2])
    x, y = _relu_data(rng, 200_000, 4, a, W, b)
    res = sr.fit(x, y, progress=False, chunk_rows=32768)
    assert res.model.n_hidden == 4
    assert res.diagnostics["width"]["chosen"] == 4


def test_noise_draws_are_calibrated_in_one_direction():
    # K = 16 independent standard normal group estimates of a scalar: the take rate is built for about 2e-3
    # and the warning for 1%; 4,000 trials give 0.2% and 0.9% (binomial sd of the warning rate: 0.16%)
    from stream_relu.width import _Null

    rng = np.random.default_rng(1)
    takes = warns = 0
    for _ in range(4000):
        g = rng.standard_normal((GROUPS, 1, 1))
        total = g.mean(axis=0)
        null = _Null.of(GroupNoise.from_groups(g, np.ones(GROUPS), total).null_largest(np.eye(1)))
        takes += abs(total[0, 0]) > null.take
        warns += abs(total[0, 0]) > null.warn
    assert takes <= 20  # 0.5%
    assert 12 <= warns <= 70  # 0.3% .. 1.75%


def test_state_of_a_given_width_fit_names_the_width_option_not_a_changed_store(tmp_path, make_store):
    from stream_relu.checkpoint import CheckpointMismatchError

    store, _ = make_store(6, 2, 40_000, 10_000)
    state = str(tmp_path / "state")
    sr.fit(store, n_hidden=2, state=state, scheduler="synchronous", progress=False, refine_model=False)
    with pytest.raises(CheckpointMismatchError, match="was given --hidden, and this one measures the width"):
        sr.fit(store, state=state, scheduler="synchronous", progress=False, refine_model=False)
