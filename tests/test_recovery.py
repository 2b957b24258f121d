"""Exact recovery from exact population moments (no sampling noise), and the pieces of the recovery."""

import itertools

import numpy as np
import pytest
from scipy.optimize import check_grad

from conftest import planted, population_tensor, relu_net
from stream_relu.decomposition import jennrich, moment_fit, moment_loss, unit_parameters
from stream_relu.hermite import relu_coefficient
from stream_relu.moments import GaussMoments, SubspaceMoments
from stream_relu.recovery import canonical_flips, choose_width, recover, subspace_basis


def _population(a, W, b, n=10**12, U=None):
    """Exact moments; the subspace ``U`` (default: the top span of ``T_2``) need not hold ``W``."""
    d = W.shape[0]
    T2 = population_tensor(a, W, b, 2)
    gauss = GaussMoments(
        n_samples=n,
        mean=np.zeros(d),
        cov=np.eye(d),
        whitener=np.eye(d),
        cov_eigvals=np.ones(d),
        T0=float(population_tensor(a, W, b, 0)),
        T1=population_tensor(a, W, b, 1),
        T2=T2,
        var_y=1.0,
    )
    U = subspace_basis(T2, a.size) if U is None else U
    V = U.T @ W  # columns of length ||U^T w_i|| <= 1
    sub = SubspaceMoments(
        n_samples=n,
        basis=U,
        M2=U.T @ T2 @ U,
        T2U=T2 @ U,
        T3=population_tensor(a, V, b, 3),
        T4=population_tensor(a, V, b, 4),
        var_r2=1.0,
        var_r3=1.0,
    )
    return gauss, sub


def _match(W_true, W_fit):
    C = W_true.T @ W_fit
    return np.argmax(np.abs(C), axis=1), C


@pytest.mark.parametrize(
    "d,m,b",
    [
        (8, 6, [0.0, 0.0, 1.0, -1.0, np.sqrt(3), -0.5]),  # biases at the zeros of single orders
        (10, 4, None),
        (6, 6, [0.0] * 6),  # all b = 0: order 3 carries nothing
        (7, 3, [1.0, -1.0, 1.0]),  # all |b| = 1: order 4 carries nothing
    ],
)
def test_exact_recovery_from_population_moments(d, m, b):
    a, W, b = planted(d, m, seed=d * 10 + m, b=b)
    gauss, sub = _population(a, W, b)
    est = recover(gauss, sub, rng=np.random.default_rng(0))
    assert est.a.size == m
    idx, C = _match(W, est.W)
    assert sorted(idx) == list(range(m))
    # exact moments: errors are those of the optimizer's tolerances (~1e-6 here)
    np.testing.assert_allclose(np.abs(C[np.arange(m), idx]), 1.0, atol=1e-9)
    # orientation fixed by T_1/T_0: same sign as the truth, and then same a, b
    assert np.all(C[np.arange(m), idx] > 0)
    np.testing.assert_allclose(est.a[idx], a, rtol=1e-5)
    np.testing.assert_allclose(est.b[idx], b, atol=1e-5)
    assert np.linalg.norm(est.u) < 1e-5 and abs(est.c) < 1e-5


def test_choose_width_counts_signal_eigenvalues():
    a, W, b = planted(12, 5, seed=1)
    gauss, _ = _population(a, W, b, n=10**8)
    choice = choose_width(gauss)
    assert choice.n_hidden == 5 and choice.n_above == 5
    assert np.all(np.abs(choice.spectrum[5:]) < 1e-12)
    assert choose_width(gauss, 3).n_hidden == 3 and choose_width(gauss, 3).requested


def test_jennrich_and_moment_fit_on_exact_tensors():
    a, V, b = planted(5, 5, seed=4)
    tensors = {k: population_tensor(a, V, b, k) for k in (2, 3, 4)}
    dec = jennrich(tensors[2], tensors[3], tensors[4], rng=np.random.default_rng(2), n_draws=30)
    assert dec.score < 1e-18
    a0, b0 = unit_parameters(dec.lams)
    # perturb the start, then the moment-space fit returns to the truth
    rng = np.random.default_rng(3)
    fit = moment_fit(tensors, a0 * 1.05, b0 + 0.05, dec.V + 0.05 * rng.standard_normal(dec.V.shape))
    a1, b1, V1, info = fit.a, fit.b, fit.V, fit.info
    assert info["loss_end"] < 1e-12
    idx = np.argmax(np.abs(V.T @ V1), axis=1)
    np.testing.assert_allclose(np.abs(np.sum(V * V1[:, idx], axis=0)), 1.0, atol=1e-7)
    np.testing.assert_allclose(a1[idx], a, rtol=1e-5)
    sign = np.sign(np.sum(V * V1[:, idx], axis=0))
    np.testing.assert_allclose(sign * b1[idx], b, atol=1e-5)


def test_moment_loss_gradient():
    rng = np.random.default_rng(5)
    a, V, b = planted(4, 3, seed=5)
    def sym(T):  # estimated moment tensors are symmetric; so must the noise be
        perms = list(itertools.permutations(range(T.ndim)))
        return sum(T.transpose(p) for p in perms) / len(perms)

    tensors = {k: population_tensor(a, V, b, k) + 0.01 * sym(rng.standard_normal((4,) * k)) for k in (2, 3, 4)}
    x0 = np.concatenate([a + 0.1, b - 0.2, (V + 0.1 * rng.standard_normal(V.shape)).ravel()])
    for rho in (None, np.array([0.97, 0.9, 1.0])):
        err = check_grad(
            lambda p: moment_loss(p, tensors, 3, None, rho)[0], lambda p: moment_loss(p, tensors, 3, None, rho)[1], x0
        )
        assert err < 1e-5 * np.linalg.norm(moment_loss(x0, tensors, 3, None, rho)[1])


def test_canonical_flips_keep_the_function():
    rng = np.random.default_rng(6)
    a, W, b = planted(5, 3, seed=6)
    u, c = rng.standard_normal(5), 0.3
    o = canonical_flips(a, W, b, u - a[0] * W[:, 0], c - a[0] * b[0])
    W2, b2, u2, c2, flipped = o.W, o.b, o.u, o.c, o.flipped
    x = rng.standard_normal((100, 5))
    before = relu_net(x, a, W, b) + x @ (u - a[0] * W[:, 0]) + c - a[0] * b[0]
    after = relu_net(x, a, W2, b2) + x @ u2 + c2
    np.testing.assert_allclose(after, before, atol=1e-12)
    assert np.linalg.norm(u2) <= np.linalg.norm(u - a[0] * W[:, 0])


def test_relu_flip_identity():
    # a relu(t + b) - a relu(-t - b) = a (t + b): the identity behind the flips
    t = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(np.maximum(t + 0.4, 0) - np.maximum(-t - 0.4, 0), t + 0.4)
    assert relu_coefficient(0, 0.4) - relu_coefficient(0, -0.4) == pytest.approx(0.4)


def test_exact_recovery_in_a_tilted_subspace():
    # A pilot's subspace need not hold the w_i: tilt the exact span by ~14
    # degrees into the other directions.  The tensors there are exact
    # projections (unit i scaled by rho_i^k = ||U^T w_i||^k); recover() reads
    # rho off T_2 U and must still return the exact parameters.
    d, m = 10, 4
    a, W, b = planted(d, m, seed=21)
    U0 = np.linalg.qr(W)[0]
    rng = np.random.default_rng(5)
    E = rng.standard_normal((d, m))
    E -= U0 @ (U0.T @ E)
    U = np.linalg.qr(U0 + 0.25 * E / np.linalg.norm(E, 2))[0]
    sine = np.linalg.norm(U0 - U @ (U.T @ U0), 2)
    assert 0.15 < sine < 0.3
    gauss, sub = _population(a, W, b, U=U)
    Vt = U.T @ W
    est = recover(gauss, sub, rng=np.random.default_rng(0))
    idx, C = _match(W, est.W)
    np.testing.assert_allclose(C[np.arange(m), idx], 1.0, atol=1e-9)
    # Without the rho correction a is off by 3-5% and b by up to 9e-3 here;
    # with it, errors are those of the optimizer's tolerances (~5e-7).
    np.testing.assert_allclose(est.a[idx], a, rtol=1e-5)
    np.testing.assert_allclose(est.b[idx], b, atol=1e-5)
    rho = np.asarray(est.diagnostics["moment_fit"]["rho"])
    np.testing.assert_allclose(rho[idx], np.linalg.norm(Vt, axis=0), atol=1e-8)
