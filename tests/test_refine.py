"""Refinement: the streamed loss/gradient against finite differences and a planted optimum."""

import numpy as np
from scipy.optimize import check_grad

from conftest import planted, relu_net
from stream_relu.refine import InMemoryObjective, Params, RefinePlan, loss_grad_chunk, refine, refine_chunk


def _setup(n=20_000, d=6, m=3, seed=0):
    rng = np.random.default_rng(seed)
    a, W, b = planted(d, m, seed)
    z = rng.standard_normal((n, d))
    y = relu_net(z, a, W, b) + z @ np.full(d, 0.1) - 0.2
    return z, y, Params(a=a, W=W, b=b, u=np.full(d, 0.1), c=-0.2)


def test_loss_gradient_matches_finite_differences():
    z, y, truth = _setup(n=500)
    rng = np.random.default_rng(1)
    theta0 = truth.pack() + 0.1 * rng.standard_normal(truth.pack().size)

    def f(theta):
        return float(loss_grad_chunk(z, y, Params.unpack(theta, 6, 3)).sums["loss"])

    def g(theta):
        return loss_grad_chunk(z, y, Params.unpack(theta, 6, 3)).sums["grad"]

    # ReLU kinks are crossed with probability ~0 by a 1e-7 step: FD error ~1e-6 relative
    assert check_grad(f, g, theta0, epsilon=1e-7) < 1e-5 * np.linalg.norm(g(theta0))


def test_loss_merges_over_blocks():
    z, y, truth = _setup(n=1000)
    p = Params(truth.a * 1.1, truth.W, truth.b, truth.u, truth.c)
    whole = loss_grad_chunk(z, y, p)
    parts = InMemoryObjective(z, y, 3, block_rows=300)(p)
    assert parts.count == whole.count
    np.testing.assert_allclose(parts.sums["grad"], whole.sums["grad"], rtol=1e-12)


def test_raw_row_kernel_matches_the_whitened_rows():
    # refine_chunk evaluates on centred raw rows with T W and T u; the oracle whitens the rows first.
    # Different summation orders only: agreement to ~1e-12 relative (float64 rounding over 2,000 rows,
    # a mean of 50 and a whitener of condition ~10 amplifying it).
    z, y, truth = _setup(n=2000)
    rng = np.random.default_rng(3)
    A = rng.standard_normal((6, 6)) + 3.0 * np.eye(6)
    whitener = np.linalg.inv(A)
    mean = np.full(6, 50.0) + rng.standard_normal(6)
    x = z @ A + mean  # so that (x - mean) @ whitener == z
    p = Params(truth.a * 1.1, truth.W + 0.05, truth.b, truth.u, truth.c)
    plan = RefinePlan.build(mean, whitener, p)
    raw = refine_chunk(x, y, plan)
    oracle = loss_grad_chunk((x - mean) @ whitener, y, p)
    assert raw.count == oracle.count == 2000 and raw.key == plan.key
    np.testing.assert_allclose(raw.sums["loss"], oracle.sums["loss"], rtol=1e-11)
    np.testing.assert_allclose(raw.sums["grad"], oracle.sums["grad"], rtol=1e-10, atol=1e-10 * np.abs(oracle.sums["grad"]).max())


def test_refine_reaches_planted_optimum_from_nearby_start():
    z, y, truth = _setup()
    rng = np.random.default_rng(2)
    W0 = truth.W + 0.05 * rng.standard_normal(truth.W.shape)
    start = Params(truth.a * 0.9, W0, truth.b + 0.05, np.zeros(6), 0.0)
    fitted, info = refine(InMemoryObjective(z, y, 3), start, var_y=float(np.var(y)))
    assert info["rel_mse_end"] < 1e-12 < info["rel_mse_start"]
    assert info["history"][0] == info["rel_mse_start"] and len(info["history"]) == info["iterations"] + 1
    np.testing.assert_allclose(fitted.W, truth.W, atol=1e-5)
    np.testing.assert_allclose(fitted.a, truth.a, rtol=1e-5)
    np.testing.assert_allclose(fitted.b, truth.b, atol=1e-5)
