"""Time to relative test MSE 1e-6 and success rate: stream_relu against a PyTorch baseline.

Cases (truths from ``grid._case``; float32 stores with 65536-row chunks
written by ``simulate``, like ``grid.py``; one store per case and seed):

* ``G1``: d=20, m=6, n=1e6, noiseless, network drawn per seed;
* ``G4`` at k=10: d=m=10, a=1, b=0, W=I, n=1e6, noiseless (the network is
  the same for every seed; the samples differ).

Seeds 0-9 by default.  Success means relative test MSE
``mean((f_hat - f)^2) / Var f <= 1e-6`` on 200,000 fresh float64 draws
from the truth's input law against the noiseless truth: the test set of
``stream_relu.evaluate`` (same size, same seed), computed in float64 for
both methods.

stream_relu: ``stream_relu.fit(store, n_hidden=m, client=client,
refine_target=1e-7)`` (refinement stops once the relative *training* MSE
is at most 1e-7, 10x below the test target; nothing of the test set is
used), other settings at their defaults (moment passes, recovery,
refinement), on one ``LocalCluster`` of 2 worker processes x 1 thread
started once before everything (start-up excluded).  Its time is the wall
time of the ``fit`` call (page cache warm: the store was just written,
reading it is included); success is its final model's relative test MSE
<= 1e-6, scored with ``stream_relu.evaluate``.  The default fit (refinement
to convergence, about 1e-16 on these noiseless float32 stores) is timed
too and reported beside it.

PyTorch baseline (torch 2.13.0, CPU build; ``pip install -e .[bench]``),
fixed protocol:

* model ``Linear(d, m) -> ReLU -> Linear(m, 1)`` of the true width, biases
  on both layers (the output bias plays ``c``), no linear skip connection
  (the planted truths have ``u = 0``, so the truth lies in this class);
  PyTorch's default initialization, float32;
* the same n samples as stream_relu, read from the same store into memory
  as float32 tensors before the clock starts (loading excluded);
* ``torch.set_num_threads(2)``; Adam (PyTorch's fused CPU implementation,
  default betas and eps, no weight decay, constant learning rate, no
  schedule) on the mean squared error, minibatches of
  1024 rows (``--batch``) drawn without replacement from a fresh random
  permutation every epoch;
* step budget per restart: 20,000 steps (``--max-steps``) or 120 s of
  training wall time (``--max-seconds``), whichever comes first;
* the relative test MSE is evaluated every 250 steps (``--eval-every``)
  from the parameters, converted to float64; evaluation time is excluded
  from the training clock (in the baseline's favour), so time-to-target is
  the training wall time at the first evaluation at or below 1e-6, and a
  restart stops there;
* 3 restarts (``--restarts``) per case and seed, seeded
  ``torch.manual_seed`` per (case, seed, restart);
  reported both as the *best restart* (the smallest time-to-target among
  the successful restarts) and as *sequential* (restarts run one after the
  other until the first success: the failed restarts' full training time
  plus the successful one's time-to-target); a case and seed succeeds when
  any restart does;
* learning rate: chosen once from {1e-3, 3e-3, 1e-2, 3e-2} (``--lr-grid``)
  on G1 seed 0 only, each rate run with the same restarts, by the fastest
  best-restart time-to-target, else by the lowest relative test MSE
  reached; then fixed for every seed and both cases.  ``--lr`` skips the
  grid.

The data stays the same across both methods; the store is deleted after
each case and seed.  Printed: per case and seed, stream_relu's time and
relative test MSE, the baseline's best-restart and sequential times (or
``fail`` with the lowest relative test MSE it reached); then per case the
success rates, the median times, and the median over the seeds where the
baseline succeeded of the per-seed ratio baseline time / stream_relu time.

Usage::

    python benchmarks/torch_baseline.py [--cases G1,G4] [--seeds 0,...,9] [--restarts 3]
        [--max-steps 20000] [--max-seconds 120] [--batch 1024] [--lr LR]
        [--workdir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster

import stream_relu as sr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import _case  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - optional benchmark dependency
    sys.exit("torch_baseline.py needs PyTorch: pip install -e .[bench]  (torch==2.13.0, CPU build)")

TARGET = 1e-6
N_TEST = 200_000
TEST_SEED = 20211206  # the default seed of stream_relu.evaluate: the same test set for both methods
THREADS = 2
CASE_IDS = {"G1": 1, "G4": 4}


class Data:
    """One case and seed: truth, store, in-memory training tensors and test set."""

    def __init__(self, client, workdir, name, seed, k, n_override=None):
        truth, n, noise, hidden = _case(name, seed, k)
        if n_override:
            n = n_override
        self.name, self.seed, self.k, self.truth, self.n, self.hidden = name, seed, k, truth, n, hidden
        self.store = str(workdir / f"{name}-{k}-{seed}.zarr")
        sr.simulate_store(self.store, truth=truth, n_samples=n, noise=noise, seed=seed, overwrite=True, client=client)
        st = sr.open_store(self.store)
        self.x = torch.from_numpy(np.ascontiguousarray(st.x_array[: st.n_samples], dtype=np.float32))
        self.y = torch.from_numpy(np.ascontiguousarray(st.y_array[: st.n_samples], dtype=np.float32))
        self.x_test, self.f_test = truth.sample(np.random.default_rng(TEST_SEED), N_TEST)
        self.var_f = float(np.var(self.f_test))

    def rel_mse(self, model):
        """Relative test MSE of the torch model, computed in float64 from its parameters."""
        W1 = model[0].weight.detach().double().numpy()  # (m, d)
        b1 = model[0].bias.detach().double().numpy()
        a = model[2].weight.detach().double().numpy()[0]
        c = float(model[2].bias.detach().double().numpy()[0])
        f_hat = np.maximum(self.x_test @ W1.T + b1, 0.0) @ a + c
        return float(np.mean((f_hat - self.f_test) ** 2) / self.var_f)

    def close(self):
        shutil.rmtree(self.store, ignore_errors=True)


def torch_restart(data, lr, restart, args):
    """Train one restart; return its record (time-to-target or the best rel MSE reached)."""
    torch_seed = 1_000_000 * CASE_IDS[data.name] + 1000 * data.seed + restart
    torch.manual_seed(torch_seed)
    gen = torch.Generator().manual_seed(torch_seed)
    d, m = data.x.shape[1], data.hidden
    model = torch.nn.Sequential(torch.nn.Linear(d, m), torch.nn.ReLU(), torch.nn.Linear(m, 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    n, batch = data.x.shape[0], min(args.batch, data.x.shape[0])
    n_batches = n // batch  # full batches only; the tail of each permutation is dropped
    x, y = data.x, data.y
    rec = {"restart": restart, "torch_seed": torch_seed, "lr": lr, "steps": 0, "train_s": 0.0,
           "time_to_target_s": None, "steps_to_target": None, "best_rel_mse": float("inf"),
           "final_rel_mse": None, "diverged": False, "stopped_by": None}
    rel = data.rel_mse(model)
    rec["initial_rel_mse"] = rel
    rec["curve"] = []  # (step, training seconds, rel test MSE) at every evaluation
    clock, step, pos, perm = 0.0, 0, n_batches, None
    while True:
        seg = min(args.eval_every, args.max_steps - step)
        t0 = time.perf_counter()
        for _ in range(seg):
            if pos == n_batches:
                perm = torch.randperm(n, generator=gen)
                pos = 0
            idx = perm[pos * batch:(pos + 1) * batch]
            pos += 1
            loss = torch.nn.functional.mse_loss(model(x[idx]).squeeze(1), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        clock += time.perf_counter() - t0
        step += seg
        rel = data.rel_mse(model)  # not timed
        rec["curve"].append((step, clock, rel))
        rec["best_rel_mse"] = min(rec["best_rel_mse"], rel)
        if not np.isfinite(rel):
            rec["diverged"], rec["stopped_by"] = True, "diverged"
        elif rel <= args.target:
            rec["time_to_target_s"], rec["steps_to_target"], rec["stopped_by"] = clock, step, "target"
        elif step >= args.max_steps:
            rec["stopped_by"] = "max_steps"
        elif clock >= args.max_seconds:
            rec["stopped_by"] = "max_seconds"
        if rec["stopped_by"]:
            break
    rec.update(steps=step, train_s=clock, final_rel_mse=rel)
    return rec


def torch_runs(data, lr, args):
    """All restarts of one case and seed, with the best-restart and sequential summaries."""
    restarts = [torch_restart(data, lr, r, args) for r in range(args.restarts)]
    ok = [r for r in restarts if r["time_to_target_s"] is not None]
    out = {"lr": lr, "restarts": restarts, "success": bool(ok),
           "best_rel_mse": min(r["best_rel_mse"] for r in restarts),
           "best_s": min(r["time_to_target_s"] for r in ok) if ok else None, "sequential_s": None}
    if ok:
        seq = 0.0
        for r in restarts:
            if r["time_to_target_s"] is not None:
                out["sequential_s"] = seq + r["time_to_target_s"]
                break
            seq += r["train_s"]
    return out


def choose_lr(client, workdir, grid, args):
    """The grid's rate with the fastest best-restart time on G1 seed 0, else the lowest rel MSE."""
    data = Data(client, workdir, "G1", 0, None, args.samples)
    try:
        runs = []
        for lr in grid:
            res = torch_runs(data, lr, args)
            runs.append(res)
            shown = f"{res['best_s']:.2f} s" if res["success"] else f"fail (best rel MSE {res['best_rel_mse']:.2e})"
            print(f"  lr {lr:<8g} best restart {shown}", flush=True)
    finally:
        data.close()
    ok = [r for r in runs if r["success"]]
    best = min(ok, key=lambda r: r["best_s"]) if ok else min(runs, key=lambda r: r["best_rel_mse"])
    return best["lr"], runs


SR_TRAIN_TARGET = 1e-7  # stream_relu stops refining at this relative training MSE (10x below the test target)


def fit_stream_relu(client, data):
    """Two fits: to the target (``refine_target``, timed for the ratio) and to convergence (defaults)."""
    out = {}
    for key, kwargs in (("full", {}), ("target", {"refine_target": SR_TRAIN_TARGET})):
        t0 = time.perf_counter()
        result = sr.fit(data.store, n_hidden=data.hidden, client=client, progress=False, **kwargs)
        wall = time.perf_counter() - t0
        rel = sr.evaluate(result.model, data.truth)["rel_test_mse"]
        out[key] = {"wall_s": wall, "fit_total_s": result.timings["total_s"], "rel_test_mse": rel}
    return {**out["target"], "success": out["target"]["rel_test_mse"] <= TARGET, "full": out["full"]}


def _t(v):
    return f"{v:.2f}" if v is not None else "-"


def _median(v):
    return statistics.median(v) if v else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="G1,G4")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--g4-k", type=int, default=10, help="k of the G4 case (default 10)")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=20_000, help="Adam steps per restart")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="training wall seconds per restart")
    parser.add_argument("--batch", type=int, default=1024, help="minibatch rows")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between test evaluations")
    parser.add_argument("--lr", type=float, default=None, help="fixed learning rate; skips the grid on G1 seed 0")
    parser.add_argument("--lr-grid", default="1e-3,3e-3,1e-2,3e-2")
    parser.add_argument("--target", type=float, default=TARGET, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=None, help=argparse.SUPPRESS)  # smoke tests only
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None, help="write all results as JSON here")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="stream-relu-torch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    cases = args.cases.split(",")
    for name in cases:
        if name not in CASE_IDS:
            parser.error(f"unknown case {name!r}; expected G1 and/or G4")
    torch.set_num_threads(THREADS)
    try:
        torch.set_num_interop_threads(THREADS)
    except RuntimeError:
        pass
    out = {"torch_version": torch.__version__, "threads": THREADS, "target": args.target,
           "protocol": {k: getattr(args, k) for k in ("restarts", "max_steps", "max_seconds", "batch", "eval_every")},
           "samples": args.samples, "lr_grid_runs": None, "rows": []}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; Adam, batch {args.batch}, "
          f"<= {args.max_steps} steps or {args.max_seconds:g} s per restart, best of {args.restarts}, "
          f"evaluated every {args.eval_every} steps (evaluation not timed)")
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, scheduler_kwargs={"dashboard": False}
    ) as cluster, Client(cluster) as client:
        if args.lr is None:
            grid = [float(v) for v in args.lr_grid.split(",")]
            print(f"learning rate grid on G1 seed 0: {grid}", flush=True)
            lr, out["lr_grid_runs"] = choose_lr(client, workdir, grid, args)
        else:
            lr = args.lr
        out["lr"] = lr
        print(f"learning rate: {lr:g}" + (" (given)" if args.lr is not None else " (chosen on G1 seed 0)"))
        print(f"\n{'case':<7}{'seed':>5}{'sr s':>8}{'sr rel MSE':>12}{'sr full s':>10}{'full rel MSE':>13}"
              f"{'torch best s':>14}{'torch seq s':>13}"
              f"{'ok/restarts':>13}{'torch best rel MSE':>20}{'ratio':>8}")
        for name in cases:
            k = args.g4_k if name == "G4" else None
            label = name if k is None else f"{name}k{k}"
            for seed in seeds:
                data = Data(client, workdir, name, seed, k, args.samples)
                try:
                    srr = fit_stream_relu(client, data)
                    tr = torch_runs(data, lr, args)
                finally:
                    data.close()
                n_ok = sum(r["time_to_target_s"] is not None for r in tr["restarts"])
                ratio = tr["best_s"] / srr["wall_s"] if tr["success"] else None
                row = {"case": name, "label": label, "k": k, "seed": seed, "n": data.n, "d": data.x.shape[1],
                       "m": data.hidden, "stream_relu": srr, "torch": tr, "ratio_best": ratio,
                       "ratio_sequential": tr["sequential_s"] / srr["wall_s"] if tr["success"] else None}
                out["rows"].append(row)
                print(f"{label:<7}{seed:>5}{srr['wall_s']:>8.2f}{srr['rel_test_mse']:>12.2e}"
                      f"{srr['full']['wall_s']:>10.2f}{srr['full']['rel_test_mse']:>13.2e}"
                      f"{(_t(tr['best_s']) if tr['success'] else 'fail'):>14}{_t(tr['sequential_s']):>13}"
                      f"{f'{n_ok}/{args.restarts}':>13}{tr['best_rel_mse']:>20.2e}"
                      f"{(f'{ratio:.1f}x' if ratio is not None else '-'):>8}", flush=True)
    print("\nsummary (ratios: per-seed baseline time / stream_relu time, median over the seeds where the baseline succeeded)")
    summary = {}
    for name in cases:
        rows = [r for r in out["rows"] if r["case"] == name]
        ok = [r for r in rows if r["torch"]["success"]]
        s = {
            "seeds": len(rows),
            "stream_relu_success": sum(r["stream_relu"]["success"] for r in rows),
            "stream_relu_median_s": _median([r["stream_relu"]["wall_s"] for r in rows]),
            "stream_relu_worst_rel_mse": max(r["stream_relu"]["rel_test_mse"] for r in rows),
            "torch_success": len(ok),
            "torch_restart_success": sum(x["time_to_target_s"] is not None for r in rows for x in r["torch"]["restarts"]),
            "torch_restarts": sum(len(r["torch"]["restarts"]) for r in rows),
            "torch_median_best_s": _median([r["torch"]["best_s"] for r in ok]),
            "torch_median_sequential_s": _median([r["torch"]["sequential_s"] for r in ok]),
            "median_ratio_best": _median([r["ratio_best"] for r in ok]),
            "median_ratio_sequential": _median([r["ratio_sequential"] for r in ok]),
            "min_ratio_best": min((r["ratio_best"] for r in ok), default=None),
            "stream_relu_faster_every_torch_success": all(r["ratio_best"] > 1 for r in ok),
        }
        summary[rows[0]["label"] if rows else name] = s
        print(f"  {rows[0]['label'] if rows else name}: stream_relu {s['stream_relu_success']}/{s['seeds']} seeds, median "
              f"{_t(s['stream_relu_median_s'])} s, worst rel MSE {s['stream_relu_worst_rel_mse']:.2e}; "
              f"torch {s['torch_success']}/{s['seeds']} seeds ({s['torch_restart_success']}/{s['torch_restarts']} restarts), "
              f"median best restart {_t(s['torch_median_best_s'])} s, sequential {_t(s['torch_median_sequential_s'])} s; "
              f"ratio best {_t(s['median_ratio_best'])} (min {_t(s['min_ratio_best'])}), "
              f"sequential {_t(s['median_ratio_sequential'])}")
    out["summary"] = summary
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    ok_all = all(s["stream_relu_success"] == s["seeds"] and s["stream_relu_faster_every_torch_success"] for s in summary.values())
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
