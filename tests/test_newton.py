"""Gauss-Newton curvature, Newton steps over every row, and sandwich standard errors (stream_relu.newton)."""

import json

import numpy as np
import pytest

import stream_relu as sr
from stream_relu.newton import Tangent, curvature, jacobian, newton_step, standard_errors
from stream_relu.refine import InMemoryObjective, Params, loss_grad_chunk, refine


def _params(rng, d, m):
    W = rng.standard_normal((d, m))
    return Params(rng.standard_normal(m), W / np.linalg.norm(W, axis=0), rng.uniform(-1, 1, m), rng.standard_normal(d), 0.3)


def test_jacobian_matches_central_differences_of_the_network():
    rng = np.random.default_rng(0)
    tangent = Tangent.at(_params(rng, 5, 3))
    z = rng.standard_normal((64, 5))
    J = jacobian(z, tangent)
    assert J.shape == (64, 3 * 6 + 6)
    eps = 1e-6
    for k in range(J.shape[1]):
        e = np.zeros(J.shape[1])
        e[k] = eps
        fd = (tangent.expand(e).predict(z) - tangent.expand(-e).predict(z)) / (2 * eps)
        # central differences: error O(eps^2) on smooth rows; no row sits within 1e-6 of a kink here
        np.testing.assert_allclose(J[:, k], fd, atol=1e-7)


def test_reduced_gradient_is_the_jacobian_times_the_residual():
    rng = np.random.default_rng(1)
    tangent = Tangent.at(_params(rng, 4, 2))
    z, y = rng.standard_normal((200, 4)), rng.standard_normal(200)
    grad = loss_grad_chunk(z, y, tangent.params).sums["grad"]
    e = tangent.params.predict(z) - y
    np.testing.assert_allclose(tangent.reduce(grad), jacobian(z, tangent).T @ e, rtol=1e-12, atol=1e-12)
    # Q^T is the adjoint of Q: <Q^T g, delta> = <g, Q delta>
    delta = rng.standard_normal(tangent.n_params)
    assert tangent.reduce(grad) @ delta == pytest.approx(grad @ tangent.split(delta).pack(), rel=1e-12)
    # the bases span w's complement
    for i in range(2):
        B = tangent.bases[i]
        np.testing.assert_allclose(B.T @ B, np.eye(3), atol=1e-14)
        np.testing.assert_allclose(B.T @ tangent.params.W[:, i], 0, atol=1e-14)


def test_matrix_free_step_equals_the_dense_step():
    rng = np.random.default_rng(2)
    params = _params(rng, 6, 2)
    z, y = rng.standard_normal((5000, 6)), rng.standard_normal(5000)
    dense = curvature(z, y, params)
    free = curvature(z, y, params, dense_max=0)
    assert dense.dense and not free.dense
    g = rng.standard_normal(dense.tangent.n_params) * 1e-3
    a, b = newton_step(dense, g), newton_step(free, g)
    # conjugate gradients to rtol 1e-10 on a system of condition about 1e2
    np.testing.assert_allclose(b.delta, a.delta, rtol=1e-6, atol=1e-12)
    assert b.decrement == pytest.approx(a.decrement, rel=1e-8)


def test_sandwich_without_units_is_the_least_squares_hc0_formula():
    # m = 0: J = [z, 1], and H^-1 M H^-1 / n is White's HC0 covariance, computed here by plain numpy
    rng = np.random.default_rng(3)
    n, d = 3000, 4
    z = rng.standard_normal((n, d))
    y = z @ np.array([0.5, -1.0, 0.0, 2.0]) + 1.0 + (0.5 + np.abs(z[:, 0])) * rng.standard_normal(n)
    X = np.column_stack([z, np.ones(n)])
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    e = X @ coef - y
    XtXi = np.linalg.inv(X.T @ X)
    hc0 = XtXi @ (X.T * e**2) @ X @ XtXi
    params = Params(np.zeros(0), np.zeros((d, 0)), np.zeros(0), coef[:d], float(coef[d]))
    se = standard_errors(curvature(z, y, params, meat=True), n)
    np.testing.assert_allclose(np.append(se["u"], se["c"]), np.sqrt(np.diag(hc0)), rtol=1e-9)


def test_standard_errors_match_the_spread_over_repeated_samples():
    # 120 data sets from one network with noise whose spread depends on x; each fitted by L-BFGS to its
    # least-squares optimum: the z-scores (estimate - truth) / se must have unit spread.  With 120 draws
    # the sample sd of a unit-variance z errs by about 1/sqrt(240) = 0.065: the band 0.8..1.25 is 3 sd wide.
    rng = np.random.default_rng(4)
    truth = Params(np.array([1.2, -0.8]), np.linalg.qr(rng.standard_normal((3, 2)))[0], np.array([0.3, -0.5]),
                   np.array([0.2, 0.0, -0.1]), 0.1)
    zs = []
    for _ in range(120):
        z = rng.standard_normal((4000, 3))
        y = truth.predict(z) + 0.3 * (0.5 + np.abs(z[:, 0])) * rng.standard_normal(4000)
        fit, _ = refine(InMemoryObjective(z, y, 2, n_threads=1), truth, var_y=float(np.var(y)), maxiter=500)
        se = standard_errors(curvature(z, y, fit, meat=True), 4000)
        zs.append(np.concatenate([(fit.a - truth.a) / se["a"], (fit.b - truth.b) / se["b"], (fit.u - truth.u) / se["u"]]))
    sd = np.std(np.array(zs), axis=0)
    assert np.all((sd > 0.8) & (sd < 1.25)), sd


def _rows(path):
    store = sr.open_store(path)
    chunks = [store.read_chunk(i) for i in range(store.n_chunks)]
    return np.concatenate([c[0] for c in chunks]).astype(float), np.concatenate([c[1] for c in chunks]).astype(float)


def test_full_data_passes_reach_the_least_squares_optimum_of_every_row(tmp_path):
    path = str(tmp_path / "noisy.zarr")
    truth = sr.simulate_store(path, n_features=8, n_hidden=3, n_samples=400_000, seed=3, chunk_rows=20_000, noise=0.3)
    res = sr.fit(path, n_hidden=3, scheduler="synchronous", refine_rows=50_000, refine_rows_max=100_000, progress=False)
    full = res.diagnostics["stages"]["full_data"]
    assert 1 <= full["passes"] <= 3 and full["rows"] == 400_000 and res.run["refine_passes"] == full["passes"]
    assert res.run["data_passes"] == 2 + full["passes"]
    # the oracle: L-BFGS over all 400,000 rows in memory, to convergence, from the fitted point
    x, y = _rows(path)
    m = res.model
    fitted = Params(m.a, m.W, m.b, m.u, m.c)
    opt, info = refine(InMemoryObjective(x, y, 3), fitted, var_y=float(np.var(y)), maxiter=3000)
    se = m.stderr
    dist = np.concatenate([(opt.normalized().b - m.b) / se["b"], (opt.normalized().a - m.a) / se["a"]])
    assert np.max(np.abs(dist)) < 0.1  # the passes end within a tenth of a standard error of the optimum
    # their training MSE is above the optimum's by less than 1% of the optimum's own excess, sigma^2 p / n
    floor = info["rel_mse_end"] * full["n_params"] / full["rows"]
    assert 0 <= info["rel_mse_start"] - info["rel_mse_end"] < 0.01 * floor
    # test error within the 1.05 of the optimum's (what is left of the distance moves it by about
    # 2 sqrt(excess / (sigma^2 p / n)) times a cosine, here up to ~6%)
    xt, ft = truth.sample(np.random.default_rng(1), 200_000)
    ratio = np.mean((m.predict(xt) - ft) ** 2) / np.mean((opt.predict(xt) - ft) ** 2)
    assert ratio < 1.05


def test_resumed_fit_reuses_the_refinement_passes_bitwise(tmp_path):
    path = str(tmp_path / "noisy.zarr")
    sr.simulate_store(path, n_features=5, n_hidden=2, n_samples=120_000, seed=5, chunk_rows=10_000, noise=0.3)
    kw = dict(n_hidden=2, scheduler="synchronous", refine_rows=20_000, refine_rows_max=30_000, progress=False)
    first = sr.fit(path, state=str(tmp_path / "state"), **kw)
    again = sr.fit(path, state=str(tmp_path / "state"), **kw)
    fresh = sr.fit(path, **kw)
    passes = first.diagnostics["stages"]["full_data"]["passes"]
    assert passes >= 1 and again.run["refine_reused_chunks"] == 12 * passes
    for res, name in ((first, "a"), (again, "b"), (fresh, "c")):
        res.model.save(tmp_path / f"{name}.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes() == (tmp_path / "c.json").read_bytes()


def test_noiseless_fit_makes_no_full_data_pass_and_reports_tiny_standard_errors(make_store):
    path, _ = make_store(6, 2, 80_000, 10_000, seed=1)
    res = sr.fit(path, n_hidden=2, scheduler="synchronous", refine_rows=20_000, progress=False)
    assert "full_data" not in res.diagnostics["stages"] and res.run["refine_passes"] == 0
    se = res.model.stderr
    assert se["available"] and se["rows"] == 20_000 and np.all(se["b"] < 1e-6)  # residuals at float32 rounding


def test_model_file_version_2_round_trips_the_standard_errors_and_version_1_still_loads(tmp_path, make_store):
    path, _ = make_store(6, 2, 80_000, 10_000, seed=1)
    model = sr.fit(path, n_hidden=2, scheduler="synchronous", progress=False).model
    model.save(tmp_path / "m.json")
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["format_version"] == 2 and doc["stderr"]["available"]
    back = sr.load_model(str(tmp_path / "m.json"))
    for key in ("a", "W", "b", "u"):
        np.testing.assert_array_equal(back.stderr[key], model.stderr[key])
    doc["format_version"] = 1
    del doc["stderr"]
    (tmp_path / "v1.json").write_text(json.dumps(doc))
    v1 = sr.load_model(str(tmp_path / "v1.json"))
    assert v1.stderr is None and np.array_equal(v1.W, model.W)
    doc["format_version"] = 2
    doc["stderr"] = {"available": True, "a": [1.0], "W": [[0.0]], "b": [0.0, 0.0], "u": [0.0] * 6, "c": 0.0, "rows": 5}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(sr.ModelFileError, match="stderr/a has 1 numbers; expected 2"):
        sr.load_model(str(tmp_path / "bad.json"))


def test_stderr_z_reexpresses_a_flipped_and_permuted_truth_in_the_models_convention():
    rng = np.random.default_rng(7)
    d = 4
    W = np.linalg.qr(rng.standard_normal((d, 2)))[0]
    truth = sr.ReluNetwork(np.array([1.0, -0.5]), 2.0 * W, np.array([0.4, -0.6]), rng.standard_normal(d), 0.25)
    a, w, b = truth.a * 2.0, W, truth.b / 2.0  # unit-w form of the truth
    # the model: unit 1 as is, then unit 0 flipped (a, -w, -b) with the affine term taking a (w x + b)
    shift = {"a": np.array([0.01, -0.02]), "b": np.array([0.03, 0.01]), "u": 0.01 * np.arange(d), "c": -0.02}
    dW = 1e-3 * rng.standard_normal((d, 2))
    model = sr.ReluNetwork(
        a=np.array([a[1], a[0]]) + shift["a"],
        W=np.column_stack([w[:, 1], -w[:, 0]]) + dW,
        b=np.array([b[1], -b[0]]) + shift["b"],
        u=truth.u + a[0] * w[:, 0] + shift["u"],
        c=truth.c + a[0] * b[0] + shift["c"],
        stderr={"available": True, "a": np.full(2, 0.5), "W": np.full((d, 2), 0.5), "b": np.full(2, 0.5),
                "u": np.full(d, 0.5), "c": 0.5},
    )
    z = sr.stderr_z(model, truth)
    order = np.argsort(z["cols"])
    np.testing.assert_allclose(z["a"][order], shift["a"] / 0.5, atol=1e-12)
    np.testing.assert_allclose(z["b"][order], shift["b"] / 0.5, atol=1e-12)
    np.testing.assert_allclose(z["W"][:, order], dW / 0.5, atol=1e-12)
    np.testing.assert_allclose(z["u"], shift["u"] / 0.5, atol=1e-12)
    np.testing.assert_allclose(z["c"], [shift["c"] / 0.5], atol=1e-12)


def test_above_the_dense_limit_steps_are_matrix_free_and_standard_errors_say_why_not(tmp_path, monkeypatch):
    from stream_relu import stages

    monkeypatch.setattr(stages, "P_DENSE_MAX", 10)  # p = 2 (5 + 1) + 5 + 1 = 18 > 10
    path = str(tmp_path / "noisy.zarr")
    sr.simulate_store(path, n_features=5, n_hidden=2, n_samples=120_000, seed=5, chunk_rows=10_000, noise=0.3)
    kw = dict(n_hidden=2, scheduler="synchronous", refine_rows=20_000, refine_rows_max=30_000, progress=False)
    free = sr.fit(path, **kw)
    assert not free.model.stderr["available"] and "more than 10" in free.model.stderr["reason"]
    monkeypatch.undo()
    dense = sr.fit(path, **kw)
    # matrix-free: L-BFGS on the in-memory rows, then passes whose Newton systems conjugate gradients
    # solve; dense: Newton steps on those rows too.  Both stop near the same optimum of every row: within
    # a twentieth of a standard error (the stop rules leave about a tenth of one at most)
    assert [e["method"] for e in free.diagnostics["stages"]["refined"]] == ["lbfgs", "lbfgs"]
    assert [e["method"] for e in dense.diagnostics["stages"]["refined"]] == ["lbfgs", "newton"]
    assert 1 <= free.run["refine_passes"] <= 3 and 1 <= dense.run["refine_passes"] <= 3
    se = dense.model.stderr
    assert np.max(np.abs(free.model.b - dense.model.b) / se["b"]) < 0.05
    assert np.max(np.abs(free.model.W - dense.model.W) / se["W"]) < 0.05
