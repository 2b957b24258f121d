"""Hashes of fitted models, to show that a change moves no number.

Fits the core grid (G1..G6, seeds 0..2, G4 at k = 6..12), the cluster
tests' store, a store large enough for the one-pass (pilot) path, a
streamed refinement, a numpy-input fit and the scikit-learn estimator,
at fixed paths under ``--workdir``, and prints two hashes per model:

* ``file``: sha256 of the model file with the store URL replaced by a
  placeholder and every timing removed (keys ending in ``_s``);
* ``params``: sha256 of a canonical float64 dump of a, W, b, u, c, the
  moment estimate (a, W, b, u, c) and the stage losses.

Usage::

    python benchmarks/model_hashes.py [--workdir DIR] [--reuse] [--cases G1,P1,...] [--out FILE]

``--reuse`` keeps stores already written under ``--workdir`` (the
simulator is then not re-checked).  Run it before and after a change that
should not move a number and ``diff`` the outputs; the estimator's line
also carries its G1 test predictions' hash (its numbers may change where
it starts sharing ``fit``'s code path: compare with ``--predictions``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

import stream_relu as sr

G2_BIASES = [0.0, 0.0, 1.0, -1.0, np.sqrt(3.0), -0.5]
PLACEHOLDER = "<store>"


def _g1_truth(seed, d=20, m=6):
    return sr.Truth(sr.draw_network(d, m, np.random.default_rng([seed, 0])), np.zeros(d), np.eye(d))


def _g6_truth(seed):
    d = 20
    rng = np.random.default_rng([seed, 6])
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.logspace(0, 1, d)
    cov = (Q * lam) @ Q.T
    inv_sqrt = (Q / np.sqrt(lam)) @ Q.T
    mu = rng.standard_normal(d) / np.sqrt(d)
    z_net = _g1_truth(seed).network
    net = sr.ReluNetwork.from_whitened(z_net.a, z_net.W, z_net.b, np.zeros(d), 0.0, mu, inv_sqrt)
    return sr.Truth(net, mu, cov)


def _cases():
    """(label, truth maker, n_samples, noise, chunk_rows, simulate seed, fit kwargs) of every case."""
    out = []
    for seed in (0, 1, 2):
        out.append((f"G1-s{seed}", lambda s=seed: _g1_truth(s), 1_000_000, 0.0, 65536, seed, {"n_hidden": 6}))

        def g2(s=seed):
            net = _g1_truth(s).network
            return sr.Truth(sr.ReluNetwork(net.a, net.W, G2_BIASES, net.u, 0.0), np.zeros(20), np.eye(20))

        out.append((f"G2-s{seed}", g2, 1_000_000, 0.0, 65536, seed, {"n_hidden": 6}))
        out.append(
            (f"G3-s{seed}", lambda s=seed: _g1_truth(s, d=50, m=10), 4_000_000, 0.1, 65536, seed, {"n_hidden": 10})
        )
        for k in range(6, 13):

            def g4(k=k):
                return sr.Truth(sr.ReluNetwork(np.ones(k), np.eye(k), np.zeros(k), np.zeros(k), 0.0), np.zeros(k), np.eye(k))

            out.append((f"G4k{k}-s{seed}", g4, 1_000_000, 0.0, 65536, seed, {"n_hidden": k}))
        out.append((f"G5-s{seed}", lambda s=seed: _g1_truth(s), 1_000_000, 0.0, 65536, seed, {}))
        out.append((f"G6-s{seed}", lambda s=seed: _g6_truth(s), 1_000_000, 0.0, 65536, seed, {"n_hidden": 6}))
    cluster = lambda: sr.Truth(sr.draw_network(5, 2, np.random.default_rng([6, 0])), np.zeros(5), np.eye(5))  # noqa: E731
    out.append(("cluster", cluster, 120_000, 0.0, 10_000, 6, {"n_hidden": 2}))
    # full-data refinement passes (noisy labels, a store larger than the in-memory rows)
    out.append(("cluster-passes", cluster, 120_000, 0.3, 10_000, 6, {"n_hidden": 2, "refine_rows": 20_000, "refine_rows_max": 30_000}))
    pilot = lambda: sr.Truth(sr.draw_network(8, 3, np.random.default_rng([3, 0])), np.zeros(8), np.eye(8))  # noqa: E731
    out.append(("P1-onepass", pilot, 9_000_000, 0.05, 65536, 3, {"n_hidden": 3}))
    out.append(("P1-twopass", pilot, 9_000_000, 0.05, 65536, 3, {"n_hidden": 3, "two_pass": True}))
    return out


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not k.endswith("_s")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and obj.endswith(".zarr"):
        return PLACEHOLDER
    return obj


def file_hash(model):
    doc = model.to_dict()
    store = (doc.get("provenance") or {}).get("store")
    if isinstance(store, dict) and "url" in store:
        store["url"] = PLACEHOLDER
    text = json.dumps(_strip(doc), indent=1, allow_nan=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def params_hash(model):
    diag = model.diagnostics or {}
    parts = [model.a, model.W, model.b, model.u, np.atleast_1d(model.c)]
    est = diag.get("moment_estimate") or {}
    parts += [np.asarray(est.get(k, []), dtype=np.float64) for k in ("a", "W", "b", "u", "c")]
    stages = diag.get("stages") or {}
    losses = [stages.get("moment", {}).get("rel_mse_train", np.nan)]
    losses += [s.get("rel_mse_end", np.nan) for s in stages.get("refined", [])]
    parts.append(np.asarray(losses, dtype=np.float64))
    h = hashlib.sha256()
    for p in parts:
        h.update(np.ascontiguousarray(np.asarray(p, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def _store(workdir, label, maker, n, noise, chunk, seed, reuse):
    # G5 fits G1's store without --hidden; variants of one case share its store
    path = workdir / f"{label.split('-')[0].replace('G5', 'G1')}-s{seed}-{n}-r{noise}.zarr"  # noise: cluster vs cluster-passes
    if not (reuse and path.exists()):
        sr.simulate_store(str(path), truth=maker(), n_samples=n, noise=noise, seed=seed, chunk_rows=chunk, overwrite=True)
    return str(path)


def _estimator_line(workdir, reuse):
    from stream_relu.sklearn import ReluNetworkRegressor

    path = _store(workdir, "G1-s0", lambda: _g1_truth(0), 1_000_000, 0.0, 65536, 0, reuse)
    x, y = _read(path)
    est = ReluNetworkRegressor(n_hidden=6, random_state=0).fit(x[:300_000], y[:300_000])
    xt = np.random.default_rng(99).standard_normal((20_000, 20))
    pred = est.predict(xt)
    np.save(workdir / "estimator-g1-pred.npy", pred)
    h = hashlib.sha256(np.ascontiguousarray(pred, dtype=np.float64).tobytes()).hexdigest()[:16]
    return f"{'estimator-G1':<20} predictions {h}"


def _read(path):
    import zarr

    g = zarr.open_group(path, mode="r")
    return np.asarray(g["x"][:300_000]), np.asarray(g["y"][:300_000])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/stream-relu-hashes")
    parser.add_argument("--reuse", action="store_true", help="keep stores already written under --workdir")
    parser.add_argument("--cases", default=None, help="comma-separated label prefixes (default: all)")
    parser.add_argument("--out", default=None, help="also write the lines to this file")
    parser.add_argument("--predictions", default=None, help="an earlier estimator-g1-pred.npy to compare with")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    wanted = None if args.cases is None else tuple(args.cases.split(","))
    lines = []
    for label, maker, n, noise, chunk, seed, kwargs in _cases():
        if wanted is not None and not label.startswith(wanted):
            continue
        store = _store(workdir, label, maker, n, noise, chunk, seed, args.reuse)
        t0 = time.perf_counter()
        result = sr.fit(store, scheduler="synchronous", progress=False, **kwargs)
        line = f"{label:<20} file {file_hash(result.model)}  params {params_hash(result.model)}"
        lines.append(line)
        print(f"{line}   ({time.perf_counter() - t0:.1f} s)", flush=True)
    if wanted is None or "estimator".startswith(wanted):
        line = _estimator_line(workdir, args.reuse)
        lines.append(line)
        print(line, flush=True)
        if args.predictions:
            old = np.load(args.predictions)
            new = np.load(workdir / "estimator-g1-pred.npy")
            rel = float(np.max(np.abs(new - old)) / np.max(np.abs(old)))
            print(f"estimator G1 predictions: largest change relative to max |prediction|: {rel:.3g}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
