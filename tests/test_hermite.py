"""Hermite polynomials and the coefficients c_k(b) of relu(z + b) against independent oracles."""

import numpy as np
import pytest
from numpy.polynomial import hermite_e as H
from scipy import integrate
from scipy.special import factorial

from stream_relu.hermite import hermite_e, relu_coefficient, relu_coefficients, std_normal_pdf


@pytest.mark.parametrize("k", range(7))
def test_hermite_e_matches_numpy(k):
    t = np.linspace(-4, 4, 41)
    coef = np.zeros(k + 1)
    coef[k] = 1
    np.testing.assert_allclose(hermite_e(k, t), H.hermeval(t, coef), rtol=1e-12, atol=1e-12)


def test_hermite_orthogonality_by_gauss_quadrature():
    # E[He_j He_k] = k! delta_jk, exact for Gauss-HermiteE quadrature of enough points.
    t, w = H.hermegauss(20)
    w = w / w.sum()
    for j in range(6):
        for k in range(6):
            expected = factorial(k) if j == k else 0.0
            assert abs(np.sum(w * hermite_e(j, t) * hermite_e(k, t)) - expected) < 1e-10


def _quad_coefficient(k, b):
    # Oracle: integrate relu(z + b) He_k(z) phi(z) over z > -b, where the integrand is smooth.
    val, _ = integrate.quad(lambda z: (z + b) * hermite_e(k, z) * std_normal_pdf(z), -b, np.inf, epsabs=1e-12, epsrel=1e-12, limit=200)
    return val


@pytest.mark.parametrize("k", range(6))
@pytest.mark.parametrize("b", [-2.0, -1.0, 0.0, 0.5, 1.0, np.sqrt(3), 2.5])
def test_relu_coefficient_against_quadrature(k, b):
    # quad's tolerance is 1e-12; the closed forms are exact.
    assert abs(float(relu_coefficient(k, b)) - _quad_coefficient(k, b)) < 1e-10


def test_relu_coefficient_table_values():
    # Values printed (to 4 decimals) in the project's math sheet.
    table = {
        0: [0.0085, 0.0833, 0.3989, 0.6978, 1.0833, 2.0085],
        1: [0.0228, 0.1587, 0.5000, 0.6915, 0.8413, 0.9772],
        2: [0.0540, 0.2420, 0.3989, 0.3521, 0.2420, 0.0540],
        3: [0.1080, 0.2420, 0, -0.1760, -0.2420, -0.1080],
        4: [0.1620, 0, -0.3989, -0.2640, 0, 0.1620],
        5: [0.1080, -0.4839, 0, 0.4841, 0.4839, -0.1080],
    }
    b = np.array([-2, -1, 0, 0.5, 1, 2.0])
    for k, row in table.items():
        np.testing.assert_allclose(relu_coefficient(k, b), row, atol=6e-5)


def test_zeros_of_single_orders():
    assert abs(relu_coefficient(3, 0.0)) < 1e-15
    np.testing.assert_allclose(relu_coefficient(4, [-1.0, 1.0]), 0, atol=1e-15)
    np.testing.assert_allclose(relu_coefficient(5, [0.0, np.sqrt(3), -np.sqrt(3)]), 0, atol=1e-15)


@pytest.mark.parametrize("k", range(5))
def test_derivative_is_next_coefficient(k):
    # d c_k / db = c_{k+1}; central differences have error O(h^2) ~ 1e-10.
    b = np.linspace(-2.5, 2.5, 11)
    h = 1e-5
    fd = (relu_coefficient(k, b + h) - relu_coefficient(k, b - h)) / (2 * h)
    np.testing.assert_allclose(fd, relu_coefficient(k + 1, b), atol=1e-8)


def test_relu_coefficients_stack():
    b = np.array([0.3, -0.7])
    out = relu_coefficients(b, (2, 3, 4))
    assert out.shape == (3, 2)
    np.testing.assert_array_equal(out[1], relu_coefficient(3, b))
