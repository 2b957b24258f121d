"""Every row counts: the fit's test error against the least-squares optimum over every row, and against 0.1.

Cases (x ~ N(0, I), float32 stores with 65536-row chunks, ``--hidden m``):

    E1  d = 24, m = 6,  Gaussian noise 0.2 std f, n = 2e7, seeds 0..2
    E2  d = 32, m = 10, Gaussian noise 0.5 std f, n = 1e8, seed 0
    G3  the core grid's G3: d = 50, m = 10, noise 0.1 std f, n = 4e6, seeds 0..2

E networks are drawn as in the core grid (``draw_network``: |a| uniform
[0.5, 1.5] with mixed signs, b uniform [-1.5, 1.5]) from the generator
``[seed, 31]``; G3's is the grid's.  Per case and seed: ``stream-relu fit``
of this checkout and of stream_relu 0.1 (``--baseline DIR``, a worktree of
5a7f287, whose refinement stops at the in-memory subsample) on the same
store, each on its default local cluster, timed end to end with the peak
RSS of its process tree; then the yardsticks:

- the oracle ``r^2 p / n`` (r: noise over std f; p = m (d + 1) + d + 1);
- the full-data optimum: plain L-BFGS (scipy) over every row held in memory
  as float64, on a loss and gradient written here with numpy (independent
  of the package's kernels), from this checkout's model to convergence
  (skipped when the rows do not fit in ``--optimum-max-gib``).

Relative test MSE: ``E[(f_hat - f)^2] / Var f`` on 2,000,000 fresh draws
(the same draws for every model of a case and seed).

    python benchmarks/efficiency.py [--cases E1,E2,G3] [--seeds ...] [--baseline DIR] [--workdir DIR] [--json OUT]
        [--n ROWS] [--scheduler ADDRESS] [--time-no-refine]

With ``--scheduler`` this checkout's fits run on that running cluster
(peak RSS: the client's process tree plus the workers' peak sum, sampled
every 0.1 s); ``--time-no-refine`` also times
``fit --no-refine`` there, the issue's yardstick for the refinement's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

import stream_relu as sr
from fit_time import _tree_rss, run_timed

CASES = {
    "E1": {"d": 24, "m": 6, "ratio": 0.2, "n": 20_000_000, "seeds": (0, 1, 2)},
    "E2": {"d": 32, "m": 10, "ratio": 0.5, "n": 100_000_000, "seeds": (0,)},
    "G3": {"d": 50, "m": 10, "ratio": 0.1, "n": 4_000_000, "seeds": (0, 1, 2)},
}
N_TEST = 2_000_000
BLOCK = 1 << 20


def truth_of(name, seed):
    c = CASES[name]
    key = [seed, 0] if name == "G3" else [seed, 31]
    net = sr.draw_network(c["d"], c["m"], np.random.default_rng(key))
    return sr.Truth(net, np.zeros(c["d"]), np.eye(c["d"]))


def _unpack(theta, d, m):
    a, W = theta[:m], theta[m : m + d * m].reshape(d, m)
    b, u, c = theta[m + d * m : 2 * m + d * m], theta[2 * m + d * m : -1], theta[-1]
    return a, W, b, u, c


def _loss_grad(theta, x, y, d, m):
    """Half the mean squared error over every row and its gradient, plain numpy, in blocks."""
    a, W, b, u, c = _unpack(theta, d, m)
    loss, ga, gW, gb, gu, gc = 0.0, np.zeros(m), np.zeros((d, m)), np.zeros(m), np.zeros(d), 0.0
    for s in range(0, y.shape[0], BLOCK):
        xb, yb = x[s : s + BLOCK], y[s : s + BLOCK]
        h = xb @ W + b
        act = np.maximum(h, 0.0)
        e = act @ a + xb @ u + c - yb
        on = (h > 0) * (e[:, None] * a)
        loss += 0.5 * float(e @ e)
        ga += act.T @ e
        gW += xb.T @ on
        gb += on.sum(axis=0)
        gu += xb.T @ e
        gc += float(e.sum())
    n = y.shape[0]
    return loss / n, np.concatenate([ga, gW.ravel(), gb, gu, [gc]]) / n


def full_data_optimum(store, model):
    """L-BFGS over every row from ``model`` to convergence: (ReluNetwork, iterations, final gradient norm)."""
    src = sr.open_store(store)
    x = np.empty((src.n_samples, src.n_features))
    y = np.empty(src.n_samples)
    for i in range(src.n_chunks):
        xb, yb = src.read_chunk(i)
        s = i * src.chunk_rows
        x[s : s + xb.shape[0]], y[s : s + yb.shape[0]] = xb, yb
    d, m = model.n_features, model.n_hidden
    theta0 = np.concatenate([model.a, model.W.ravel(), model.b, model.u, [model.c]])
    res = minimize(_loss_grad, theta0, args=(x, y, d, m), jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000, "maxcor": 30, "ftol": 1e-16, "gtol": 1e-12})
    a, W, b, u, c = _unpack(res.x, d, m)
    return sr.ReluNetwork(a, W, b, u, c), int(res.nit), float(np.linalg.norm(res.jac))


def rel_mse(model, xt, ft):
    return float(np.mean((model.predict(xt) - ft) ** 2) / np.var(ft))


def _worker_pids(address):
    from distributed import Client

    with Client(address, timeout=30) as client:
        return list(client.run(os.getpid).values())


def _fit(exe, store, out, m, env=None, extra=(), workers=()):
    """Run a CLI fit: (model, wall s, peak RSS of the client's process tree plus the given worker processes)."""
    peak = [0]
    stop = threading.Event()

    def sample():  # the workers of a running cluster are not the client's children
        while not stop.is_set():
            peak[0] = max(peak[0], sum(_tree_rss(p) for p in workers))
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        # cwd: the store's folder, never the repository root (whose package `-m` would import first)
        wall, client_peak = run_timed(exe + ["fit", store, "--out", out, "--hidden", str(m), "-q", *extra], env=env,
                                      cwd=os.path.dirname(store))
    finally:
        stop.set()
        thread.join()
    return sr.load_model(out), wall, client_peak + peak[0]


def _same_store(store, truth, n, ratio, seed):
    """Whether ``store`` is the one :func:`run_one` would simulate (same network, rows, noise and seed)."""
    try:
        src = sr.open_store(store)
        attrs = json.loads((Path(store) / "zarr.json").read_text())["attributes"]
    except Exception:  # noqa: BLE001 - absent or unreadable: simulate it
        return False
    t = attrs["truth"]
    same_net = all(np.array_equal(np.asarray(t[k], dtype=float), np.asarray(getattr(truth.network, k), dtype=float))
                   for k in ("a", "W", "b"))
    sim = attrs.get("simulation", {})
    return same_net and src.n_samples == n and sim.get("seed") == seed and sim.get("noise_ratio") == ratio


def _time_no_refine(row, exe, store, stem, m, where, workers, repeat):
    """``fit`` and ``fit --no-refine`` on the same cluster, alternating ``repeat`` times: medians and each run."""
    fits, bare = [row["this"]["wall_s"]], []
    for k in range(repeat):
        if k:
            _, wall, _ = _fit(exe, store, f"{stem}.json", m, extra=("--no-state", "--overwrite", *where), workers=workers)
            fits.append(wall)
        _, wall, peak = _fit(exe, store, f"{stem}-norefine.json", m,
                             extra=("--no-state", "--overwrite", "--no-refine", *where), workers=workers)
        bare.append(wall)
        print(f"  {row['case']} seed {row['seed']} run {k + 1}: fit {fits[-1]:.1f} s, fit --no-refine {wall:.1f} s: "
              f"{fits[-1] / wall:.2f}x", flush=True)
    row["this"].update(wall_s=float(np.median(fits)), walls_s=fits)
    row["no_refine"] = {"wall_s": float(np.median(bare)), "walls_s": bare, "peak_mib": peak / 2**20}
    print(f"  {row['case']} seed {row['seed']}: medians of {repeat}: fit {np.median(fits):.1f} s, fit --no-refine "
          f"{np.median(bare):.1f} s: {np.median(fits) / np.median(bare):.2f}x", flush=True)


def _earlier_optimum(path, row):
    """The full-data optimum of an earlier run's JSON for the same case, seed and rows (its store and test
    draws are the same: both are seeded), marked as reused; None without one."""
    if path is None:
        return None
    for old in json.loads(Path(path).read_text()):
        if (old["case"], old["seed"], old["n"]) == (row["case"], row["seed"], row["n"]) and "optimum" in old:
            return {**old["optimum"], "reused_from": str(path)}
    return None


def run_one(name, seed, workdir, args):
    c = CASES[name]
    d, m, n = c["d"], c["m"], args.n or c["n"]
    truth = truth_of(name, seed)
    store = str(workdir / f"{name}-{seed}.zarr")
    t0 = time.perf_counter()
    if not (args.reuse_stores and _same_store(store, truth, n, c["ratio"], seed)):
        sr.simulate_store(store, truth=truth, n_samples=n, noise=c["ratio"], seed=seed, overwrite=True)
    sim_s = time.perf_counter() - t0
    exe = [sys.executable, "-m", "stream_relu.cli"]
    where = ("--scheduler", args.scheduler) if args.scheduler else ()
    workers = _worker_pids(args.scheduler) if args.scheduler else ()
    this, wall, peak = _fit(exe, store, str(workdir / f"{name}-{seed}.json"), m, extra=("--no-state", "--overwrite", *where),
                            workers=workers)
    row = {"case": name, "seed": seed, "n": n, "d": d, "m": m, "p": m * (d + 1) + d + 1, "simulate_s": sim_s,
           "this": {"wall_s": wall, "peak_mib": peak / 2**20, "passes": this.diagnostics["stages"].get("full_data", {}).get("passes", 0),
                    "grad_norm": this.diagnostics["stages"].get("full_data", {}).get("grad_norm")}}
    if args.time_no_refine:  # the moment passes alone, on the same cluster: the cost of the refinement
        _time_no_refine(row, exe, store, workdir / f"{name}-{seed}", m, where, workers, args.repeat)
    if args.baseline:  # on its own default local cluster: 0.1's code on its workers too
        env = {**os.environ, "PYTHONPATH": str(args.baseline)}
        base, wall, peak = _fit(exe, store, str(workdir / f"{name}-{seed}-v01.json"), m, env=env)
        if json.loads((workdir / f"{name}-{seed}-v01.json").read_text())["format_version"] != 1:
            raise RuntimeError(f"the baseline run wrote a model of this checkout, not of {args.baseline}")
        row["v01"] = {"wall_s": wall, "peak_mib": peak / 2**20}
    xt, ft = truth.sample(np.random.default_rng([seed, 77]), N_TEST)
    row["oracle"] = c["ratio"] ** 2 * row["p"] / n
    row["this"]["rel_mse"] = rel_mse(this, xt, ft)
    if args.baseline:
        row["v01"]["rel_mse"] = rel_mse(base, xt, ft)
    earlier = _earlier_optimum(args.optimum_from, row)
    if earlier is not None:
        row["optimum"] = earlier
    elif n * (d + 1) * 8 <= args.optimum_max_gib * 2**30:
        t0 = time.perf_counter()
        opt, iters, gnorm = full_data_optimum(store, this)
        row["optimum"] = {"rel_mse": rel_mse(opt, xt, ft), "iterations": iters, "grad_norm": gnorm, "seconds": time.perf_counter() - t0}
    if not args.keep:
        shutil.rmtree(store, ignore_errors=True)
    return row


def _print(row):
    opt = row.get("optimum", {}).get("rel_mse")
    this = row["this"]["rel_mse"]
    base = row.get("v01", {}).get("rel_mse")

    def ratio(a, b):
        return f"{a / b:8.3f}" if a is not None and b else f"{'-':>8}"

    print(
        f"{row['case']:<4}{row['seed']:>5}{row['n']:>11.0e}{row['p']:>5}"
        f"{this:>11.3e}{(opt if opt is not None else float('nan')):>11.3e}{row['oracle']:>11.3e}"
        f"{ratio(this, opt)}{ratio(this, row['oracle'])}{row['this']['passes']:>7}{row['this']['wall_s']:>9.1f}"
        f"{(base if base is not None else float('nan')):>11.3e}{ratio(base, opt)}{ratio(base, row['oracle'])}"
        f"{row.get('v01', {}).get('wall_s', float('nan')):>9.1f}"
        f"{row['this']['peak_mib']:>9.0f}{row.get('v01', {}).get('peak_mib', float('nan')):>9.0f}",
        flush=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="E1,G3,E2")
    parser.add_argument("--seeds", default=None, help="override every case's seeds, e.g. 0")
    parser.add_argument("--baseline", default=None, help="a checkout of stream_relu 0.1 (worktree of 5a7f287)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--optimum-max-gib", type=float, default=8.0, help="rows held in memory for the optimum, at most")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument("--n", type=lambda t: int(float(t)), default=None, help="override the cases' row counts")
    parser.add_argument("--scheduler", default=None, help="run this checkout's fits on this cluster (default: a local one each)")
    parser.add_argument("--time-no-refine", action="store_true", help="also time fit --no-refine (same cluster)")
    parser.add_argument("--repeat", type=int, default=1, help="with --time-no-refine: alternate both fits this many times (medians)")
    parser.add_argument("--reuse-stores", action="store_true",
                        help="use a store kept (--keep) in --workdir when it holds the same network, rows, noise and seed")
    parser.add_argument("--optimum-from", default=None,
                        help="an earlier run's --json: reuse its full-data optimum for the same case, seed and rows")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="stream-relu-efficiency-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{'case':<4}{'seed':>5}{'n':>11}{'p':>5}{'rel MSE':>11}{'optimum':>11}{'oracle':>11}{'/opt':>8}{'/oracle':>8}"
          f"{'passes':>7}{'time s':>9}{'0.1 MSE':>11}{'/opt':>8}{'/oracle':>8}{'0.1 s':>9}{'peak MiB':>9}{'0.1 MiB':>9}")
    rows = []
    for name in args.cases.split(","):
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else CASES[name]["seeds"]
        for seed in seeds:
            rows.append(run_one(name, seed, workdir, args))
            _print(rows[-1])
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
