"""The width cases W1-W6 and N1-N3 of the width issue, fitted with ``--hidden`` omitted, as a table.

For every case and seed: the width chosen (m_hat) against the truth's m,
the relative test MSE against the noiseless f, the data passes, the fit
time, and the smallest margins: the weakest true unit's evidence over its
threshold (the T_2 eigenvalue of its rank among the pass-1 candidates, or
``res`` when the residual search added it) and the largest noise
candidate's over its threshold.  Stores are float32 with 65536-row chunks.

    python benchmarks/width.py [--cases W1,W2,...] [--seeds 0,1,2,3,4] [--workdir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import stream_relu as sr

TEACHER = Path(__file__).resolve().parents[2] / "shared" / "teachers" / "wine-m10.json"


def _signs(rng, m):
    s = np.where(np.arange(m) % 2 == 0, 1.0, -1.0)
    return rng.permutation(s)


def _unit_columns(rng, d, m):
    W = rng.standard_normal((d, m))
    return W / np.linalg.norm(W, axis=0)


def _orthogonal_unit(rng, w):
    v = rng.standard_normal(w.shape[0])
    v -= (v @ w) * w
    return v / np.linalg.norm(v)


def _net(a, W, b, u=None, c=0.0):
    d = W.shape[0]
    return sr.ReluNetwork(np.asarray(a, float), W, np.asarray(b, float), np.zeros(d) if u is None else u, c)


def _default(rng, d, m, b=None, a_abs=None):
    a = _signs(rng, m) * (rng.uniform(0.5, 1.5, m) if a_abs is None else a_abs)
    b = rng.uniform(-1.5, 1.5, m) if b is None else b
    return _net(a, _unit_columns(rng, d, m), b)


def _teacher():
    doc = json.loads(TEACHER.read_text())
    net = sr.ReluNetwork(np.array(doc["a"]), np.array(doc["W"]), np.array(doc["b"]), np.zeros(len(doc["W"])), float(doc.get("c", 0.0)))
    return net


def case(name, seed):
    """(network, n, noise ratio of std f, absolute noise) of one case."""
    rng = np.random.default_rng([seed, 12, int(name[1:])])
    if name == "W1":
        return _default(rng, 20, 6, b=[0.2, -0.6, 1.1, -1.4, 1.9, -2.0]), 2_000_000, 0.0, 0.0
    if name == "W2":
        net = _default(rng, 24, 6)
        W = net.W.copy()
        W[:, 1] = 0.85 * W[:, 0] + np.sqrt(1 - 0.85**2) * _orthogonal_unit(rng, W[:, 0])
        W[:, 3] = 0.88 * W[:, 2] + np.sqrt(1 - 0.88**2) * _orthogonal_unit(rng, W[:, 2])
        return _net(net.a, W, net.b), 2_000_000, 0.0, 0.0
    if name == "W3":
        return _default(rng, 10, 10), 2_000_000, 0.0, 0.0
    if name == "W4":
        return _default(rng, 16, 6, a_abs=rng.permutation(np.logspace(np.log10(0.05), np.log10(2.0), 6))), 2_000_000, 0.0, 0.0
    if name == "W5":
        return _default(rng, 24, 6, b=rng.uniform(-2, 2, 6)), 4_000_000, 0.1, 0.0
    if name == "W6":
        return _teacher(), 2_000_000, 0.0, 0.0
    if name == "N1":
        u = np.zeros(10)
        u[0], u[2] = 0.7, -0.2
        return _net(np.zeros(0), np.zeros((10, 0)), np.zeros(0), u, 0.1), 1_000_000, 0.0, 0.1
    if name == "N2":
        return _net(np.zeros(0), np.zeros((10, 0)), np.zeros(0)), 1_000_000, 0.0, 1.0
    if name == "N3":
        g1 = sr.draw_network(20, 6, np.random.default_rng([seed, 0]))
        w7 = _unit_columns(rng, 20, 1)
        return _net(np.append(g1.a, 1e-4), np.column_stack([g1.W, w7]), np.append(g1.b, rng.uniform(-1.5, 1.5))), 1_000_000, 0.0, 0.0
    raise ValueError(name)


def _margins(width, m_true):
    """(weakest true unit's evidence / threshold, largest noise candidate's / threshold) from pass 1."""
    cands = width.get("candidates", [])
    ratios = [abs(c["value"]) / c["threshold"] for c in cands]
    weakest = ratios[m_true - 1] if 0 < m_true <= len(ratios) else None
    noise = ratios[m_true] if m_true < len(ratios) else None
    return weakest, noise


def run_one(client, workdir, name, seed):
    net, n, ratio, noise_abs = case(name, seed)
    d = net.n_features
    truth = sr.Truth(net, np.zeros(d), np.eye(d), noise_abs)
    store = str(workdir / f"{name}-{seed}.zarr")
    sr.simulate_store(store, truth=truth, n_samples=n, noise=ratio, seed=seed, overwrite=True, client=client)
    t0 = time.perf_counter()
    result = sr.fit(store, client=client, progress=False)
    fit_s = time.perf_counter() - t0
    shutil.rmtree(store, ignore_errors=True)
    model = result.model
    x, f = sr.Truth(net, np.zeros(d), np.eye(d)).sample(np.random.default_rng(20211206), 200_000)
    err = float(np.mean((model.predict(x) - f) ** 2))
    var_f = float(np.var(f))
    w = result.diagnostics["width"]
    weakest, noisiest = _margins(w, net.n_hidden)
    added = sum(1 for c in w.get("residual_looks", []) if c["taken"])
    return {
        "case": name,
        "seed": seed,
        "m": net.n_hidden,
        "m_hat": model.n_hidden,
        "pass1_m": w["n_above_threshold"],
        "residual_added": added,
        "rel_mse": err / var_f if var_f > 0 else None,
        "mse": err,
        "u_err": float(np.max(np.abs(model.u - net.u))) if model.n_hidden == 0 else None,
        "c_err": abs(model.c - net.c) if model.n_hidden == 0 else None,
        "passes": result.run.get("data_passes"),
        "fit_s": fit_s,
        "weakest_margin": weakest,
        "noise_margin": noisiest,
        "warnings": result.diagnostics["warnings"],
    }


def _fmt(v, spec=".2e"):
    return "-" if v is None else format(v, spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="W1,W2,W3,W4,W5,W6,N1,N2,N3")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from dask.distributed import Client, LocalCluster

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="width-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    header = f"{'case':5} {'seed':>4} {'m':>3} {'m_hat':>5} {'p1':>3} {'+res':>4} {'rel MSE':>9} {'passes':>6} {'fit s':>6} {'weak/thr':>8} {'noise/thr':>9} warn"
    print(header, flush=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        for name in args.cases.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                r = run_one(client, workdir, name, seed)
                rows.append(r)
                print(
                    f"{r['case']:5} {seed:4d} {r['m']:3d} {r['m_hat']:5d} {r['pass1_m']:3d} {r['residual_added']:4d} "
                    f"{_fmt(r['rel_mse'])} {_fmt(r['passes'], 'd'):>6} {r['fit_s']:6.1f} {_fmt(r['weakest_margin'], '.2f'):>8} "
                    f"{_fmt(r['noise_margin'], '.2f'):>9} {len(r['warnings'])}"
                    + (f"  u_err {r['u_err']:.1e} c_err {r['c_err']:.1e}" if r["u_err"] is not None else ""),
                    flush=True,
                )
                for text in r["warnings"]:
                    print(f"      warning: {text}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
