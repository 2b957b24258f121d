"""Do the standard errors mean what they say?  Coverage of nominal 95% intervals over many seeds.

Per seed: a network drawn as in the core grid (d = 8, m = 3: |a| uniform
[0.5, 1.5] with mixed signs, b uniform [-1.5, 1.5], unit w), x ~ N(0, I),
n = 1e6 rows, Gaussian noise of std 0.3 std(f) (``--noise homoscedastic``)
or of std proportional to 0.5 + |x_1| with the same overall variance
(``heteroscedastic``); ``fit`` with ``n_hidden = 3``, ``refine_rows =
refine_rows_max = 1e5`` (so the passes over every row, not the in-memory
rows, set the estimate).  The truth is matched to the fitted units
(Hungarian on |cos|) and re-expressed in the fitted orientation
(:func:`stream_relu.stderr_z`); a parameter is covered when
``|estimate - truth| <= 1.96 se``.  Prints the coverage over all (seed,
parameter) pairs and per group (a, b, W entries, the pooled affine terms
u and c), the spread of the z-scores, and the full-data passes made.

    python benchmarks/coverage.py [--seeds 100] [--noise homoscedastic,heteroscedastic] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import stream_relu as sr

D, M, N, RATIO, ROWS = 8, 3, 1_000_000, 0.3, 100_000
Z95 = 1.959963984540054


def _data(seed, kind):
    rng = np.random.default_rng([seed, 13])
    net = sr.draw_network(D, M, rng)
    x = rng.standard_normal((N, D))
    f = net.predict(x)
    if kind == "homoscedastic":
        scale = np.ones(N)
    else:  # std proportional to 0.5 + |x_1|, scaled to the same overall noise variance
        scale = 0.5 + np.abs(x[:, 0])
        scale /= np.sqrt(np.mean(scale**2))
    y = f + RATIO * np.std(f) * scale * rng.standard_normal(N)
    return net, x, y


def run_seed(seed, kind):
    net, x, y = _data(seed, kind)
    res = sr.fit(x, y, n_hidden=M, refine_rows=ROWS, refine_rows_max=ROWS, progress=False)
    z = sr.stderr_z(res.model, net)
    if z is None or "u" not in z:
        return {"seed": seed, "ok": False}
    groups = {"a": z["a"], "b": z["b"], "W": z["W"].ravel(), "uc": np.concatenate([z["u"], z["c"]])}
    return {"seed": seed, "ok": True, "passes": res.run["refine_passes"], **{k: v.tolist() for k, v in groups.items()}}


def summarize(rows, kind):
    good = [r for r in rows if r["ok"]]
    print(f"\n{kind}: {len(good)} of {len(rows)} seeds with every unit matched; "
          f"full-data passes per fit: {sorted(set(r['passes'] for r in good))}")
    print(f"{'group':>8} {'pairs':>7} {'coverage':>9} {'sd(z)':>7} {'mean(z)':>8}")
    out = {}
    pooled = []
    for g in ("a", "b", "W", "uc"):
        z = np.concatenate([np.asarray(r[g]) for r in good])
        pooled.append(z)
        cov = float(np.mean(np.abs(z) <= Z95))
        out[g] = cov
        print(f"{g:>8} {z.size:7d} {cov:9.3f} {np.std(z):7.3f} {np.mean(z):8.3f}")
    z = np.concatenate(pooled)
    out["all"] = float(np.mean(np.abs(z) <= Z95))
    print(f"{'all':>8} {z.size:7d} {out['all']:9.3f} {np.std(z):7.3f} {np.mean(z):8.3f}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--noise", default="homoscedastic,heteroscedastic")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    result = {}
    for kind in args.noise.split(","):
        t0 = time.perf_counter()
        rows = [run_seed(s, kind) for s in range(args.seeds)]
        result[kind] = {"rows": rows, "coverage": summarize(rows, kind), "seconds": time.perf_counter() - t0}
        print(f"({result[kind]['seconds']:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
