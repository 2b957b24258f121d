"""Probabilists' Hermite polynomials and the Hermite coefficients of relu(z + b).

Conventions (used throughout the package): ``He_k`` are the probabilists'
Hermite polynomials of :mod:`numpy.polynomial.hermite_e`
(``He_0 = 1, He_1 = t, He_{k+1} = t He_k - k He_{k-1}``), orthogonal under
the standard normal law with ``E[He_j(z) He_k(z)] = k! delta_jk``.  They are
*not* normalized; the normalized ones are ``He_k / sqrt(k!)``.

This module imports numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

__all__ = ["hermite_e", "relu_coefficient", "relu_coefficients", "std_normal_pdf"]

_SQRT_2PI = np.sqrt(2.0 * np.pi)


def std_normal_pdf(t):
    """Standard normal density ``phi(t)``, elementwise."""
    t = np.asarray(t, dtype=np.float64)
    return np.exp(-0.5 * t * t) / _SQRT_2PI


def hermite_e(k, t):
    """Probabilists' Hermite polynomial ``He_k(t)``, elementwise.

    Parameters
    ----------
    k : int
        Order, ``k >= 0``.  ``He_{-1}`` is taken as 0 so the recurrence
        ``He_{k+1} = t He_k - k He_{k-1}`` holds from ``k = 0``.
    t : array_like
        Points.

    Returns
    -------
    ndarray
        ``He_k(t)`` in float64, same shape as ``t``.
    """
    t = np.asarray(t, dtype=np.float64)
    if k < 0:
        return np.zeros_like(t)
    prev, cur = np.zeros_like(t), np.ones_like(t)
    for j in range(k):
        prev, cur = cur, t * cur - j * prev
    return cur


def relu_coefficient(k, b):
    """Hermite coefficient ``c_k(b) = E[relu(z + b) He_k(z)]``, ``z ~ N(0, 1)``.

    Parameters
    ----------
    k : int
        Order, ``k >= 0`` (unnormalized ``He_k``).
    b : array_like
        Biases.

    Returns
    -------
    ndarray
        ``c_k(b)`` in float64, same shape as ``b``.

    Notes
    -----
    By Stein's identity ``E[g(z) He_k(z)] = E[g^(k)(z)]``:

    * ``c_0(b) = b Phi(b) + phi(b)``
    * ``c_1(b) = Phi(b)``
    * ``c_k(b) = (-1)^k He_{k-2}(b) phi(b)`` for ``k >= 2``.

    Differentiating under the expectation gives ``d c_k / db = c_{k+1}``,
    which the fitting code uses for its gradients.
    """
    b = np.asarray(b, dtype=np.float64)
    if k == 0:
        return b * ndtr(b) + std_normal_pdf(b)
    if k == 1:
        return ndtr(b)
    return (-1.0) ** k * hermite_e(k - 2, b) * std_normal_pdf(b)


def relu_coefficients(b, orders):
    """Stack of ``c_k(b)`` for several orders.

    Parameters
    ----------
    b : array_like of shape (m,)
        Biases.
    orders : sequence of int
        Orders ``k``.

    Returns
    -------
    ndarray of shape (len(orders), m)
        Row ``j`` holds ``c_{orders[j]}(b)`` (unnormalized ``He`` convention).
    """
    b = np.atleast_1d(np.asarray(b, dtype=np.float64))
    return np.stack([relu_coefficient(k, b) for k in orders])
