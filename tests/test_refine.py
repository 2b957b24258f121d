"""Refinement: the streamed loss/gradient against finite differences and a planted optimum."""

import numpy as np
from scipy.optimize import check_grad

from conftest import planted, relu_net
from stream_relu.refine import InMemoryObjective, Params, loss_grad_chunk, refine


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
