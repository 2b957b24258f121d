"""The pipeline's typed stages: settings, input opening, the affine fit and the moment accumulator.

Oracles: numpy.linalg.lstsq on the rows (the affine fit; tolerance 1e-9
relative, from the normal equations squaring cond([x, 1]) ~ 10 here), and
a plain numpy loop of ``gauss_chunk`` over the same chunks, each batch
folded left to right and the batch totals added (the accumulator's order,
so equal bit for bit).
"""

import numpy as np
import pytest
from conftest import planted, relu_net

import stream_relu as sr
from stream_relu.errors import InputError, StoreFormatError
from stream_relu.moments import gauss_chunk


def test_settings_refuse_bad_values_and_write_the_provenance():
    with pytest.raises(InputError, match="nonfinite must be one of"):
        sr.DataPolicy(nonfinite="drop")
    with pytest.raises(InputError, match="refine_rows must be a positive integer"):
        sr.RefineSettings(rows=0)
    prov = sr.FitSettings(3, sr.DataPolicy(x_name="X"), sr.RefineSettings(target=1e-6), True, 5).provenance()
    assert list(prov["settings"]) == [
        "n_hidden", "refine", "refine_rows", "refine_rows_max", "refine_passes", "refine_maxiter",
        "refine_target", "two_pass", "x", "y",
    ]
    assert prov["settings"]["x"] == "X" and prov["settings"]["refine_target"] == 1e-6
    assert prov["seeds"] == {"random_state": 5}


def test_open_input_checks_shapes_and_dtypes():
    x = np.zeros((10, 3))
    with pytest.raises(InputError, match="y is required"):
        sr.open_input(x)
    with pytest.raises(StoreFormatError, match="expected x of shape"):
        sr.open_input(x, np.zeros(9))
    with pytest.raises(StoreFormatError, match="real numbers"):
        sr.open_input(x, np.array(["a"] * 10))
    source = sr.open_input(x, np.zeros((10, 1)), sr.DataPolicy(chunk_rows=4)).source
    assert (source.n_samples, source.n_features, source.n_chunks) == (10, 3, 3)


def test_affine_fit_matches_least_squares_on_the_rows():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5000, 4)) @ np.diag([1.0, 2.0, 0.5, 3.0]) + 1.5
    y = x @ np.array([0.3, -1.0, 2.0, 0.1]) - 0.7 + 0.01 * rng.standard_normal(5000)
    fit = sr.affine_fit(x, y, policy=sr.DataPolicy(chunk_rows=1000))
    coef, *_ = np.linalg.lstsq(np.column_stack([x, np.ones(5000)]), y, rcond=None)
    np.testing.assert_allclose(fit.coef, coef[:-1], rtol=1e-9)
    assert fit.intercept == pytest.approx(coef[-1], rel=1e-9) and fit.n_rows == 5000


def test_accumulator_merges_batches_like_one_batch_and_recovers():
    a, W, b = planted(5, 2, seed=21)
    rng = np.random.default_rng(21)
    x = rng.standard_normal((120_000, 5))
    y = relu_net(x, a, W, b)
    policy = sr.DataPolicy(chunk_rows=20_000)
    acc = sr.MomentAccumulator().update(x[:60_000], y[:60_000], n_hidden=2, policy=policy)
    acc = acc.update(x[60_000:], y[60_000:], n_hidden=2, policy=policy)
    batches = [sum(gauss_chunk(x[i : i + 20_000], y[i : i + 20_000]) for i in range(lo, lo + 60_000, 20_000)) for lo in (0, 60_000)]
    assert acc.gauss == batches[0] + batches[1]
    assert acc.plan_calls == (1, 2) and acc.info()["plan_rows"] == 120_000
    est = acc.estimate(x[60_000:], y[60_000:], refine=sr.RefineSettings(rows=60_000), policy=policy)
    assert est.model.n_hidden == 2
    x_test = rng.standard_normal((10_000, 5))
    truth = relu_net(x_test, a, W, b)
    rel = np.mean((est.model.predict(x_test) - truth) ** 2) / np.var(truth)
    assert rel < 1e-8  # noiseless planted data: refinement reaches float64 round-off scale
    assert est.diagnostics["width"]["chosen"] == 2 and est.diagnostics["n_units_returned"] == 2


def test_accumulator_without_a_plan_says_why():
    acc = sr.MomentAccumulator().update(np.ones((5, 2)), np.full(5, 3.0))
    assert acc.plan is None and ("singular" in str(acc.why) or "constant" in str(acc.why))
    with pytest.raises(type(acc.why)):
        acc.estimate(np.ones((5, 2)), np.full(5, 3.0))
    assert acc.affine().intercept == pytest.approx(3.0)
