"""Per-chunk moment kernels against numpy's matrix products of their dominant shapes (1 BLAS thread).

For each kernel the *limit* is the time numpy takes, in the same run and
the same dtype (float32 by default), for the kernel's dominant products
done as single whole-chunk calls and nothing else; ``ratio`` is
limit time / kernel time (1.0 = the kernel costs no more than its
products).  A product whose two operands are the same matrix (``A.T @ A``)
is timed that way, so numpy's symmetric routine sets the limit where the
kernel can use one.  Flop counts use 2 n p q for an (n x p)^T (n x q)
product (n = 65,536 rows, m = min(d, 10) units, K = (m+1)(m+2)/2 pairs):

* ``gauss`` (first pass, pilot): ``[1, x', y']`` with itself,
  2 n (d+2)^2, and ``x'`` with ``y' x'``, 2 n d^2;
* ``subspace`` (second pass): ``x'`` with the projection ``[0, v, lin]``,
  2 n d (m+2); ``x'`` with ``r2 [1, v]``, 2 n d (m+1); ``[1, v]`` with
  ``r2 [1, v]``, 2 n (m+1)^2; the pair products with themselves, 2 n K^2;
* ``joint`` (one pass): both.

The kernels also do the elementwise work (shifts, pair products, the
normality sums on every 8th block) and the float64 accumulation; those
are what the ratio charges them for.  Each figure is the median of
``--repeat`` timings of one chunk; the table also gives the plain
``X.T @ X`` rate for reference, and ``before``: the same-run samples/s of
the kernels as they were before issue 4 (kept below, float64 copies of the
chunk, no blocks), with the speed-up.

Usage::

    python benchmarks/kernels.py [--repeat 9] [--dims 16,32,64,128] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from stream_relu.moments import (
    GaussPlan,
    SubspacePlan,
    finalize_gauss,
    gauss_chunk,
    joint_chunk,
    projection_directions,
    subspace_chunk,
)
from stream_relu.recovery import subspace_basis

N = 65_536


def _before_gauss(x, y):
    """The pass-1 kernel before issue 4 (same-run baseline): float64 copy, unblocked."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xy = x * y[:, None]
    t = np.hstack([x, x @ projection_directions(x.shape[1])])
    t2 = t * t
    return {
        "p3": np.einsum("ij,ij->j", t2, t),
        "p4": np.einsum("ij,ij->j", t2, t2),
        "x": x.sum(axis=0),
        "xx": x.T @ x,
        "y": np.array(y.sum()),
        "yy": np.array(y @ y),
        "yx": xy.sum(axis=0),
        "yxx": xy.T @ x,
    }


def _before_subspace(x, y, plan):
    """The pass-2 kernel before issue 4 (same-run baseline)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    v = x @ plan.proj - plan.mean @ plan.proj
    r2 = y - plan.T0 - (x @ plan.lin - plan.mean @ plan.lin)
    q = 0.5 * (np.einsum("ni,ni->n", v @ plan.M2, v) - np.trace(plan.M2))
    r3 = r2 - q
    i, j = np.triu_indices(v.shape[1])
    p = v[:, i] * v[:, j]
    r3p = p * r3[:, None]
    return {
        "r2": np.array(r2.sum()),
        "r2r2": np.array(r2 @ r2),
        "r2v": r2 @ v,
        "r2vv": (v * r2[:, None]).T @ v,
        "r2xv": (x * r2[:, None]).T @ v,
        "r3": np.array(r3.sum()),
        "r3r3": np.array(r3 @ r3),
        "r3v": r3 @ v,
        "r3vv": (v * r3[:, None]).T @ v,
        "r3pv": r3p.T @ v,
        "r3pp": r3p.T @ p,
    }


def _median_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _products(d, m, dt, rng):
    """(flops, [(a, b)]) of the dominant products of each kernel, as (n x p) operand pairs."""
    k = (m + 1) * (m + 2) // 2

    def mat(p):
        return rng.standard_normal((N, p)).astype(dt)

    F1 = mat(d + 2)
    X, Yx = mat(d), mat(d)
    P = mat(m + 2)
    R = mat(m + 1)
    Vt = mat(m + 1)
    Fk = mat(k)
    gauss = [(F1, F1), (X, Yx)]
    sub = [(X, P), (X, R), (Vt, R), (Fk, Fk)]
    flops = {
        "gauss": 2 * N * (d + 2) ** 2 + 2 * N * d * d,
        "subspace": 2 * N * d * (m + 2) + 2 * N * d * (m + 1) + 2 * N * (m + 1) ** 2 + 2 * N * k * k,
    }
    flops["joint"] = flops["gauss"] + flops["subspace"]
    return flops, {"gauss": gauss, "subspace": sub, "joint": gauss + sub}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--dims", default="16,32,64,128")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    dt = np.dtype(args.dtype).type
    rng = np.random.default_rng(0)
    print(f"{args.dtype} chunks of {N} rows, 1 BLAS thread, median of {args.repeat}")
    print(
        f"{'d':>4} {'kernel':<9} {'ms':>7} {'samples/s':>12} {'GFLOP/s':>8} {'limit ms':>9} "
        f"{'limit GFLOP/s':>14} {'ratio':>6} {'X.T@X GFLOP/s':>14} {'before samples/s':>17} {'speed-up':>9}"
    )
    with threadpool_limits(limits=1, user_api="blas"):
        for d in [int(v) for v in args.dims.split(",")]:
            m = min(d, 10)
            x = rng.standard_normal((N, d)).astype(dt)
            y = np.maximum(x[:, :m], 0).sum(axis=1).astype(dt)
            gplan = GaussPlan.from_sample(x[:4096], y[:4096])
            g = finalize_gauss(gauss_chunk(x, y, gplan), gplan)
            plan = SubspacePlan.build(g, subspace_basis(g.T2, m))
            flops, products = _products(d, m, dt, rng)
            t_xx = _median_time(lambda: x.T @ x, args.repeat)
            kernels = {
                "gauss": lambda: gauss_chunk(x, y, gplan),
                "subspace": lambda: subspace_chunk(x, y, plan),
                "joint": lambda: joint_chunk(x, y, plan),
            }
            before = {
                "gauss": lambda: _before_gauss(x, y),
                "subspace": lambda: _before_subspace(x, y, plan),
                "joint": lambda: (_before_gauss(x, y), _before_subspace(x, y, plan)),
            }
            for name, fn in kernels.items():
                t = _median_time(fn, args.repeat)
                t_before = _median_time(before[name], args.repeat)
                limit = sum(_median_time(lambda a=a, b=b: a.T @ b, args.repeat) for a, b in products[name])
                print(
                    f"{d:>4} {name:<9} {t * 1e3:>7.2f} {N / t:>12,.0f} {flops[name] / t / 1e9:>8.2f} "
                    f"{limit * 1e3:>9.2f} {flops[name] / limit / 1e9:>14.2f} {limit / t:>6.2f} "
                    f"{2 * N * d * d / t_xx / 1e9:>14.2f} {N / t_before:>17,.0f} {t_before / t:>9.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
