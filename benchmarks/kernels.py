"""Per-chunk moment kernels against numpy's float32 matrix product of their dominant shapes (1 BLAS thread).

Flop counts use 2 n p q for an (n x p)^T (n x q) product:

* pass 1 (``gauss_chunk``): X^T X and X^T diag(y) X, 2 x 2 n d^2, plus the
  8 normality projections, 2 n d 8;
* pass 2 (``subspace_chunk``, m = min(d, 10)): x -> v and the linear
  residual, 2 n d (m + 1); r2 x^T v, 2 n d m; the order-2 control variate,
  2 n m^2; and the pair products P^T diag(r) P and P^T diag(r) V with
  p = m(m+1)/2 pairs, 2 n p^2 + 2 n p m.

The limit is the rate of ``X.T @ X`` for float32 ``X`` of shape (n, d), in
the same run.  Each figure is the median of ``--repeat`` timings of one
65,536-row chunk.

Usage::

    python benchmarks/kernels.py [--repeat 7] [--dims 16,32,64,128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from stream_relu.moments import SubspacePlan, finalize_gauss, gauss_chunk, subspace_chunk
from stream_relu.recovery import subspace_basis

N = 65_536


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--dims", default="16,32,64,128")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{'d':>4} {'kernel':<9} {'samples/s':>12} {'GFLOP/s':>9} {'matmul GFLOP/s':>15} {'ratio':>7}")
    with threadpool_limits(limits=1, user_api="blas"):
        for d in [int(v) for v in args.dims.split(",")]:
            m = min(d, 10)
            x = rng.standard_normal((N, d)).astype(np.float32)
            y = (np.maximum(x[:, :m], 0).sum(axis=1)).astype(np.float32)
            t_mm = _median_time(lambda: x.T @ x, args.repeat)
            limit = 2 * N * d * d / t_mm / 1e9
            g = finalize_gauss(gauss_chunk(x, y))
            plan = SubspacePlan.build(g, subspace_basis(g.T2, m))
            p = m * (m + 1) // 2
            kernels = {
                "pass 1": (lambda: gauss_chunk(x, y), 4 * N * d * d + 2 * N * d * 8),
                "pass 2": (
                    lambda: subspace_chunk(x, y, plan),
                    2 * N * d * (m + 1) + 2 * N * d * m + 2 * N * m * m + 2 * N * p * p + 2 * N * p * m,
                ),
            }
            for name, (fn, flops) in kernels.items():
                t = _median_time(fn, args.repeat)
                rate = flops / t / 1e9
                print(f"{d:>4} {name:<9} {N / t:>12,.0f} {rate:>9.2f} {limit:>15.2f} {rate / limit:>7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
