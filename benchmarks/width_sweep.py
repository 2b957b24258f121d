"""How large a bias a unit may have and still be found: the width issue's sweep, as a table.

d = 20, m = 6 (the core grid's G1 draw), one unit's bias set to b = 1.5,
1.75, ..., 3.0; n = 1e6 and 1e7 rows, seeds 0..4; float32 stores with
65536-row chunks, noiseless; ``fit`` with the width omitted.  Per (n, b):
how many seeds find that unit as a unit (a fitted unit within |cos| > 0.99
of its direction), how many leave it out with the warning that names a
candidate beyond noise's 99th percentile, and the width stream_relu 0.1's
rule (eigenvalues of the same pass-1 T_2 above 3 x 2 sqrt(d Var(y) / n),
bitwise the same T_2) would have found for the same data, with whether it
keeps all 6 units.  Then per n: the largest b at which every seed finds the
unit, under each rule.

    python benchmarks/width_sweep.py [--ns 1e6,1e7] [--seeds 0,1,2,3,4] [--biases 1.5,...] [--workdir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

import stream_relu as sr


def _truth(seed, bias):
    net = sr.draw_network(20, 6, np.random.default_rng([seed, 0]))
    b = net.b.copy()
    b[0] = bias
    return sr.Truth(sr.ReluNetwork(net.a, net.W, b, net.u, 0.0), np.zeros(20), np.eye(20))


def old_rule_width(diag):
    """The width stream_relu 0.1 chose from the same T_2: |eigenvalues| above 3 formula floors."""
    spec = np.abs(np.asarray(diag["width"]["t2_spectrum"]))
    floor = 2.0 * np.sqrt(diag["n_features"] * diag["labels"]["var"] / diag["n_samples"])
    return int(np.sum(spec > 3.0 * floor))


def run_one(client, workdir, n, seed, bias):
    truth = _truth(seed, bias)
    store = str(workdir / f"sweep-{n}-{seed}-{bias}.zarr")
    sr.simulate_store(store, truth=truth, n_samples=n, seed=seed, overwrite=True, client=client)
    result = sr.fit(store, client=client, progress=False)
    shutil.rmtree(store, ignore_errors=True)
    model = result.model
    w0 = truth.network.W[:, 0]
    cos = float(np.max(np.abs(model.W.T @ w0) / np.linalg.norm(model.W, axis=0))) if model.n_hidden else 0.0
    found = cos > 0.99
    warned = any("candidate unit was left out" in w for w in result.diagnostics["warnings"])
    x, f = truth.sample(np.random.default_rng(20211206), 200_000)
    rel = float(np.mean((model.predict(x) - f) ** 2) / np.var(f))
    return {
        "n": n, "seed": seed, "b": bias, "m_hat": model.n_hidden, "found": found, "warned": warned,
        "rel_mse": rel, "old_width": old_rule_width(result.diagnostics),
    }


def _summary(rows, ns, biases):
    for n in ns:
        best_new = best_old = None
        for bias in biases:
            sel = [r for r in rows if r["n"] == n and r["b"] == bias]
            if sel and all(r["found"] for r in sel):
                best_new = bias
            if sel and all(r["old_width"] >= 6 for r in sel):
                best_old = bias
        print(f"n = {n:.0e}: largest b found in every seed: this version {best_new}, stream_relu 0.1's rule {best_old}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="1e6,1e7")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--biases", default="1.5,1.75,2.0,2.25,2.5,2.75,3.0")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from dask.distributed import Client, LocalCluster

    ns = [int(float(v)) for v in args.ns.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    biases = [float(v) for v in args.biases.split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="width-sweep-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'n':>8} {'b':>5} {'found':>5} {'warned':>6} {'m_hat':>8} {'max rel MSE':>11} {'0.1 keeps 6':>11} {'0.1 widths':>10}", flush=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        for n in ns:
            for bias in biases:
                sel = [run_one(client, workdir, n, seed, bias) for seed in seeds]
                rows += sel
                print(
                    f"{n:8.0e} {bias:5.2f} {sum(r['found'] for r in sel):5d} {sum(r['warned'] for r in sel):6d} "
                    f"{','.join(str(r['m_hat']) for r in sel):>8} {max(r['rel_mse'] for r in sel):11.2e} "
                    f"{sum(r['old_width'] >= 6 for r in sel):11d} {','.join(str(r['old_width']) for r in sel):>10}",
                    flush=True,
                )
    _summary(rows, ns, biases)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
