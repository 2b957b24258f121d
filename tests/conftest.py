"""Shared helpers: planted networks and their exact population moments."""

import numpy as np
import pytest

from stream_relu.hermite import relu_coefficient


def planted(d, m, seed, b=None):
    """A planted network: mixed-sign a in +-[0.5, 1.5], b in [-1.5, 1.5], unit w."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, m))
    W /= np.linalg.norm(W, axis=0)
    a = rng.uniform(0.5, 1.5, m) * np.where(np.arange(m) % 2 == 0, 1.0, -1.0)
    b = rng.uniform(-1.5, 1.5, m) if b is None else np.asarray(b, dtype=float)
    return a, W, b


def relu_net(x, a, W, b):
    return np.maximum(x @ W + b, 0.0) @ a


def population_tensor(a, W, b, k):
    """T_k = sum_i a_i c_k(b_i) w_i^(x)k, built by explicit outer products."""
    lam = a * relu_coefficient(k, b)
    T = 0.0
    for i in range(a.size):
        t = np.array(lam[i])
        for _ in range(k):
            t = np.multiply.outer(t, W[:, i])
        T = T + t
    return T


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
