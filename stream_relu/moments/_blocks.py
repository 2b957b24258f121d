"""Blocked-kernel machinery shared by the passes: work dtype, block sizes, shifted row blocks.

The rows of a chunk are taken in blocks of at most :data:`MAX_BLOCK_ROWS`;
within a block the products run in the input's precision (float32 for
float32 data) and the blocks' results are accumulated in float64.

This module imports numpy only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["N_PROJECTIONS", "BLOCK_BYTES", "MAX_BLOCK_ROWS", "projection_directions"]

N_PROJECTIONS = 8
BLOCK_BYTES = 1 << 22  # working set of one block of rows (inputs plus products)
MAX_BLOCK_ROWS = 4096


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _round32(a):
    """``a`` rounded to the nearest float32 values, as float64 (exact in either dtype)."""
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def projection_directions(n_features):
    """Fixed unit directions (seeded by ``n_features``) for the normality check, shape (d, 8)."""
    G = np.random.default_rng([n_features, 31337]).standard_normal((n_features, N_PROJECTIONS))
    return G / np.linalg.norm(G, axis=0)


def _work_dtype(x):
    """float32 products for float32 inputs, float64 otherwise."""
    return np.float32 if x.dtype == np.float32 else np.float64


def _block_rows(width, itemsize):
    """Rows per block: a power of two whose ``width`` columns fit in ``BLOCK_BYTES``."""
    rows = BLOCK_BYTES // max(width * itemsize, 1)
    return int(max(256, min(MAX_BLOCK_ROWS, 1 << (max(rows, 1).bit_length() - 1))))


def _with_float64_fallback(sums, x, y, plan, **kwargs):
    """``sums(x, y, plan, dtype)`` in the work dtype; again in float64 if float32 sums are not finite.

    Non-finite sums mean an overflow of float32 products (then float64
    helps) or NaN/infinity in the rows (then the engine drops those rows
    and calls again).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        state = sums(x, y, plan, _work_dtype(x), **kwargs)
        if state.count and x.dtype == np.float32 and not state.is_finite():
            state = sums(x, y, plan, np.float64, **kwargs)
    return state


def _shifted_blocks(x, y, shift_x, shift_y, dt, width):
    """Yield ``(j, Fb)`` with ``Fb = [1, x - shift_x, y - shift_y]`` for each block ``j`` of rows."""
    n, d = x.shape
    y = np.asarray(y).reshape(-1)
    rows = _block_rows(width, np.dtype(dt).itemsize)
    F = np.empty((max(min(rows, n), 0), d + 2), dtype=dt)
    F[:, 0] = 1
    sx = shift_x.astype(dt)
    sy = dt(shift_y)
    for j, lo in enumerate(range(0, n, rows)):
        hi = min(lo + rows, n)
        Fb = F[: hi - lo]
        np.subtract(x[lo:hi], sx, out=Fb[:, 1 : d + 1], casting="unsafe")
        np.subtract(y[lo:hi], sy, out=Fb[:, d + 1], casting="unsafe")
        yield j, Fb


def _row_scratch(buf, rows, d, dt):
    """``buf`` when it holds ``rows`` rows, else a new ``(rows, d)`` array of dtype ``dt``."""
    if buf is None or buf.shape[0] != rows:
        buf = np.empty((rows, d), dtype=dt)
    return buf
