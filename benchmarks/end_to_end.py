"""End-to-end ``fit`` time against one read of the store, and peak memory against n.

Stores: ``stream-relu simulate STORE --features d --hidden m --samples n
--seed 0`` (float32, 65536-row chunks, the default codec: zstd level 0 and
a crc32c checksum), written once into ``--workdir``.  A store left there by
an earlier run is reused when its attributes match and the ``.complete``
marker this script writes after ``simulate`` succeeded is present; stores
are deleted after their last measurement unless ``--keep`` is given.  The
fits use ``--hidden m`` (m = 10 unless ``--hidden`` says otherwise).

Speed (for every d in ``--dims`` and n in ``--samples``): a ``dask
scheduler`` and 2 ``dask worker --nthreads 1`` processes (under nannies) are
started for the store, the workers import stream_relu, and then
``--repeat`` rounds run, each one in this order:

* ``read``: from this process, ``distributed.Client(ADDRESS)``, both arrays
  opened as ``stream_relu`` opens them (``zarr.open_group(path)``, a local
  store) and wrapped by ``dask.array.from_zarr`` (one task per stored
  chunk; the tasks read and decode on the workers), and
  ``x.sum() + y.sum()`` (float64 sums) in one compute: the cluster reads
  and decodes x and y once.  Wall time around opening, graph building and compute.
* ``fit --no-refine``: ``stream-relu fit STORE --out MODEL --hidden m
  --scheduler ADDRESS --no-refine --json -q`` in a fresh process: both
  moment passes and the recovery.  Reported as the wall time around the
  subprocess (includes starting Python and the imports, ~1-2 s) and as the
  fit's own ``timings_s.total_s`` from its JSON.
* ``fit``: the same with refinement (default settings); its
  ``timings_s.refinement_s`` is the refinement time.

Medians (min-max) over the rounds; the ratio is median fit / median read.
The acceptance line checks ``fit --no-refine`` at d=32, n=1e8 against
2.5x the read, on both the wall time and ``total_s``.

An untimed read comes before the rounds.  Page cache: with ``--cache warm``
(default) that read leaves the store in the page cache as far as RAM allows
(24 GiB here: a d=64, n=1e8 store, 25.6 GB, cannot be); with ``--cache
cold`` every file of the store is flushed and dropped from the page cache
(``fdatasync`` + ``posix_fadvise(DONTNEED)``, no root needed) before each
timed run.  Either way the fraction of the store's file pages resident in
the page cache (``mincore``) is measured just before each timed run and
reported.

Memory (for every n in ``--memory-samples`` at d in ``--memory-dims``, same
65536-row chunks): the full ``fit`` (refinement on, default settings,
``--hidden m``) runs ``--repeat`` times through ``--scheduler`` against a
fresh ``dask scheduler`` and 2 ``dask worker --nthreads 1 --no-nanny``
processes.  Peak RSS per process, from the kernel's high-water marks: the
client is the ``stream-relu fit`` process (``ru_maxrss`` from ``wait4``);
for the scheduler and each worker ``VmHWM`` is reset through
``/proc/PID/clear_refs`` before each fit and read after it.  Reported: the
largest peak over the repetitions per process, the sum client + workers,
and the ratios of the largest n to the smallest.

Usage::

    python benchmarks/end_to_end.py [--dims 32,64] [--samples 1e7,1e8] [--repeat 5]
        [--memory-dims 32] [--memory-samples 1e6,1e7] [--hidden 10] [--cache warm|cold]
        [--workdir DIR] [--keep] [--speed-only | --memory-only] [--json OUT]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _processes import ProcessCluster, reset_peak, status_bytes

EXE = [sys.executable, "-m", "stream_relu.cli"]
CHUNK_ROWS = 65536
SEED = 0
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------- stores


def _sci(n):
    """1e8 style text for a count."""
    if n <= 0:
        return str(n)
    exp = int(math.floor(math.log10(n)))
    mant = n / 10**exp
    if abs(mant - round(mant)) < 1e-9:
        return f"{int(round(mant))}e{exp}"
    return f"{n:,}"


def _counts(text):
    return [int(float(t)) for t in text.split(",") if t.strip()]


def _store_files(store):
    out = []
    for root, _, files in os.walk(store):
        out += [os.path.join(root, f) for f in files]
    return out


def _store_matches(store, d, m, n):
    """True when ``store`` is a complete simulate store of these settings."""
    if not (Path(store).is_dir() and Path(store + ".complete").exists()):
        return False
    try:
        import zarr

        g = zarr.open_group(store, mode="r")
        truth, sim = g.attrs["truth"], g.attrs["simulation"]
        return (
            truth["n_features"] == d
            and truth["n_hidden"] == m
            and sim == {"seed": SEED, "noise_ratio": 0.0, "chunk_rows": CHUNK_ROWS}
            and tuple(g["x"].shape) == (n, d)
            and tuple(g["y"].shape) == (n,)
            and str(g["x"].dtype) == "float32"
        )
    except Exception:  # noqa: BLE001 (anything unreadable is rewritten)
        return False


def ensure_store(workdir, d, m, n):
    """Path of the store for (d, m, n), written unless a matching complete one is there; (path, write s or None)."""
    store = str(workdir / f"d{d}-m{m}-n{_sci(n)}.zarr")
    if _store_matches(store, d, m, n):
        print(f"reusing {store}", flush=True)
        return store, None
    Path(store + ".complete").unlink(missing_ok=True)
    print(f"writing {store} ({n * (d + 1) * 4 / 1e9:.1f} GB raw) ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run(
        EXE + ["simulate", store, "--features", str(d), "--hidden", str(m), "--samples", str(n),
               "--seed", str(SEED), "--overwrite", "-q"],
        check=True,
    )
    wall = time.perf_counter() - t0
    Path(store + ".complete").write_text(json.dumps({"d": d, "m": m, "n": n, "write_s": wall}))
    print(f"  written in {wall:.1f} s", flush=True)
    return store, wall


def remove_store(store):
    shutil.rmtree(store, ignore_errors=True)
    Path(store + ".complete").unlink(missing_ok=True)


# ---------------------------------------------------------------- page cache

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _resident_pages(path):
    """(resident pages, pages) of one file in the page cache, by mmap + mincore (nothing is read)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0, 0
    pages = (size + PAGE - 1) // PAGE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            return pages - bytes(vec).count(0), pages  # bit 0: resident; the other bits are 0
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def cached_fraction(store):
    """Fraction of the store's file pages resident in the page cache (None where mincore fails)."""
    try:
        res = tot = 0
        for f in _store_files(store):
            r, p = _resident_pages(f)
            res, tot = res + r, tot + p
        return res / tot if tot else 0.0
    except OSError:
        return None


def drop_cache(store):
    """Flush and drop every file of the store from the page cache (no root needed: fadvise per file)."""
    for f in _store_files(store):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ------------------------------------------------------------------ measures


def run_fit(store, model, m, address, refine):
    """``stream-relu fit ... --json -q`` in a fresh process; (wall s, its JSON summary, peak RSS bytes)."""
    cmd = EXE + ["fit", store, "--out", model, "--hidden", str(m), "--scheduler", address, "--json", "-q",
                 "--overwrite", "--no-state"]  # replaces the model (the CLI's rule); no state: the baseline's work
    if not refine:
        cmd.append("--no-refine")
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # reaps it: its own high-water mark comes with it
        wall = time.perf_counter() - t0
        proc.stdout.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read().decode(errors='replace')}")
    return wall, json.loads(out), usage.ru_maxrss * 1024


def read_once(client, store):
    """Wall seconds for the cluster to read and decode x and y once (a dask sum, tasks on the workers)."""
    import dask.array as da
    import zarr

    t0 = time.perf_counter()
    g = zarr.open_group(store, mode="r")  # a local store, as stream_relu opens it
    x, y = da.from_zarr(g["x"]), da.from_zarr(g["y"])
    total = client.compute(x.sum(dtype="float64") + y.sum(dtype="float64")).result()
    wall = time.perf_counter() - t0
    if not math.isfinite(float(total)):
        raise RuntimeError(f"sum over {store} is not finite")
    return wall


def _import_stream_relu():
    import stream_relu.engine  # noqa: F401  (the workers of a cluster in use have it imported)


def speed(store, d, m, n, args, workdir):
    from distributed import Client

    cdir = Path(tempfile.mkdtemp(prefix=f"cluster-speed-d{d}-n{_sci(n)}-", dir=workdir))
    model = str(cdir / "model.json")
    runs = {"read": [], "fit_norefine": [], "fit": []}
    cluster = ProcessCluster(cdir, n_workers=2)
    try:
        with Client(cluster.address) as client:
            client.run(_import_stream_relu)
            # untimed: the first use of the arrays on the workers, and (warm) the page cache
            w = read_once(client, store)
            print(f"  untimed warm-up read {w:.1f} s; cached {cached_fraction(store):.0%}", flush=True)
            for r in range(args.repeat):
                for kind in ("read", "fit_norefine", "fit"):
                    if args.cache == "cold":
                        drop_cache(store)
                    cached = cached_fraction(store)
                    if kind == "read":
                        rec = {"wall_s": read_once(client, store)}
                    else:
                        wall, summary, _ = run_fit(store, model, m, cluster.address, refine=kind == "fit")
                        rec = {"wall_s": wall, "timings_s": summary["timings_s"]}
                    rec["cached"] = cached
                    runs[kind].append(rec)
                    t = rec.get("timings_s")
                    print(
                        f"  round {r + 1} {kind:<13} wall {rec['wall_s']:7.1f} s"
                        + (f"  total_s {t['total_s']:7.1f}  refinement_s {t['refinement_s']:6.1f}" if t else "")
                        + (f"  cached {cached:.0%}" if cached is not None else ""),
                        flush=True,
                    )
    finally:
        cluster.close()
    return runs


def memory(store, d, m, n, args, workdir):
    from distributed import Client

    cdir = Path(tempfile.mkdtemp(prefix=f"cluster-mem-d{d}-n{_sci(n)}-", dir=workdir))
    model = str(cdir / "model.json")
    runs = []
    cluster = ProcessCluster(cdir, n_workers=2, nanny=False)  # the worker pids are the workers themselves
    try:
        with Client(cluster.address) as client:
            client.run(_import_stream_relu)
            pids = {"scheduler": cluster.scheduler_pid}
            pids.update({f"worker {i}": pid for i, pid in enumerate(cluster.worker_pids)})
            for r in range(args.repeat):
                client.run(gc.collect)
                base = {}
                for name, pid in pids.items():
                    reset_peak(pid)
                    base[name] = status_bytes(pid, "VmRSS")
                wall, summary, client_peak = run_fit(store, model, m, cluster.address, refine=True)
                peak = {"client": client_peak}
                peak.update({name: status_bytes(pid, "VmHWM") for name, pid in pids.items()})
                runs.append({"wall_s": wall, "timings_s": summary["timings_s"], "peak_rss": peak, "baseline_rss": base})
                print(
                    f"  round {r + 1} fit wall {wall:6.1f} s  peak RSS "
                    + "  ".join(f"{k} {v / 2**20:6.0f} MiB" for k, v in peak.items()),
                    flush=True,
                )
    finally:
        cluster.close()
    return runs


# ------------------------------------------------------------------ reports


def _mmm(values):
    fmt = "{:.1f}" if min(values) >= 10 else "{:.2f}"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def _cached_text(recs):
    c = [r["cached"] for r in recs if r["cached"] is not None]
    if not c:
        return "unknown"
    lo, hi = min(c), max(c)
    return f"{lo:.0%}" if round(lo * 100) == round(hi * 100) else f"{lo:.0%}-{hi:.0%}"


def speed_tables(results, args):
    print(f"\n## fit --no-refine against one read of the store ({args.cache} cache; "
          f"cached = page-cache residency before each timed run, min-max)\n")
    print("| d | n | m | chunks | cached | read s | fit --no-refine wall s | ratio | fit --no-refine total_s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for res in results:
        runs = res["runs"]
        read = [r["wall_s"] for r in runs["read"]]
        wall = [r["wall_s"] for r in runs["fit_norefine"]]
        tot = [r["timings_s"]["total_s"] for r in runs["fit_norefine"]]
        rw = statistics.median(wall) / statistics.median(read)
        rt = statistics.median(tot) / statistics.median(read)
        res["ratio_wall"], res["ratio_total_s"] = rw, rt
        allrecs = runs["read"] + runs["fit_norefine"] + runs["fit"]
        print(
            f"| {res['d']} | {_sci(res['n'])} | {res['m']} | {math.ceil(res['n'] / CHUNK_ROWS):,} "
            f"| {_cached_text(allrecs)} "
            f"| {_mmm(read)} | {_mmm(wall)} | {rw:.2f} | {_mmm(tot)} | {rt:.2f} |"
        )
        if res["d"] == 32 and res["n"] == 100_000_000:
            verdicts.append(
                f"acceptance (d=32, n=1e8, fit --no-refine <= 2.5x one read): wall {rw:.2f}x "
                f"{'PASS' if rw <= 2.5 else 'FAIL'}, total_s {rt:.2f}x {'PASS' if rt <= 2.5 else 'FAIL'}"
            )
    print("\n## full fit (refinement on, default settings)\n")
    print("| d | n | m | wall s | total_s | moments + recovery s | refinement_s |")
    print("|---|---|---|---|---|---|---|")
    for res in results:
        fits = res["runs"]["fit"]
        t = [r["timings_s"] for r in fits]
        moments = [sum(x.get(k, 0.0) for k in ("pilot_s", "pass1_s", "pass2_s", "recovery_s")) for x in t]
        print(
            f"| {res['d']} | {_sci(res['n'])} | {res['m']} | {_mmm([r['wall_s'] for r in fits])} "
            f"| {_mmm([x['total_s'] for x in t])} | {_mmm(moments)} | {_mmm([x['refinement_s'] for x in t])} |"
        )
    print(f"\nmedians (min-max) of {args.repeat} interleaved rounds; ratio = median fit / median read")
    for v in verdicts:
        print(v)


def memory_table(results, args):
    if not results:
        return
    names = list(results[0]["peak"].keys())
    print(f"\n## peak RSS of the full fit, MiB (largest of {args.repeat} fits; {CHUNK_ROWS}-row chunks)\n")
    print("| d | n | m | fit wall s | " + " | ".join(names) + " | client + workers |")
    print("|---|---|---|---|" + "---|" * (len(names) + 1))
    for res in results:
        p = res["peak"]
        row = " | ".join(f"{p[k] / 2**20:.0f}" for k in names)
        print(f"| {res['d']} | {_sci(res['n'])} | {res['m']} | {_mmm([r['wall_s'] for r in res['runs']])} "
              f"| {row} | {res['client_workers'] / 2**20:.0f} |")
    for d in sorted({r["d"] for r in results}):
        rs = sorted((r for r in results if r["d"] == d), key=lambda r: r["n"])
        if len(rs) < 2:
            continue
        lo, hi = rs[0], rs[-1]
        def largest_worker(res):
            return max(v for k, v in res["peak"].items() if k.startswith("worker"))

        ratios = {
            "client": hi["peak"]["client"] / lo["peak"]["client"],
            "largest worker": largest_worker(hi) / largest_worker(lo),
            "client + workers": hi["client_workers"] / lo["client_workers"],
        }
        worst = max(ratios.values())
        sched = hi["peak"]["scheduler"] / lo["peak"]["scheduler"]
        print(
            f"\nd={d}: peak RSS n={_sci(hi['n'])} / n={_sci(lo['n'])}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
            + f" (scheduler {sched:.2f}); acceptance (client and workers within 20%): "
            + f"{'PASS' if worst <= 1.2 else 'FAIL'} (largest ratio {worst:.2f})"
        )


# --------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="32,64", help="d of the speed stores (default 32,64)")
    parser.add_argument("--samples", default="1e7,1e8", help="n of the speed stores (default 1e7,1e8)")
    parser.add_argument("--memory-dims", default="32", help="d of the memory stores (default 32)")
    parser.add_argument("--memory-samples", default="1e6,1e7", help="n of the memory stores (default 1e6,1e7)")
    parser.add_argument("--hidden", type=int, default=10, help="m of the stores and the fits (default 10)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per store (default 5)")
    parser.add_argument("--cache", choices=("warm", "cold"), default="warm")
    parser.add_argument("--workdir", default=None, help="stores and cluster logs (default a new folder in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the stores for a later run")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--speed-only", action="store_true")
    only.add_argument("--memory-only", action="store_true")
    parser.add_argument("--json", dest="json_out", help="write the raw results here")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="stream-relu-e2e-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    m = args.hidden

    speed_keys = [] if args.memory_only else [(d, n) for n in _counts(args.samples) for d in _counts(args.dims)]
    mem_keys = [] if args.speed_only else [
        (d, n) for n in _counts(args.memory_samples) for d in _counts(args.memory_dims)
    ]
    keys = sorted(set(speed_keys) | set(mem_keys), key=lambda k: (k[1], k[0]))
    print(f"workdir {workdir}; stores (d, n): {[(d, _sci(n)) for d, n in keys]}; m={m}; "
          f"repeat {args.repeat}; cache {args.cache}", flush=True)

    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {**vars(args), "chunk_rows": CHUNK_ROWS, "seed": SEED, "workdir": str(workdir)},
        "stores": {},
        "speed": [],
        "memory": [],
    }
    for d, n in keys:
        store, write_s = ensure_store(workdir, d, m, n)
        out["stores"][store] = {"d": d, "m": m, "n": n, "write_s": write_s,
                                "bytes": sum(os.path.getsize(f) for f in _store_files(store))}
        try:
            if (d, n) in speed_keys:
                print(f"speed d={d} n={_sci(n)}", flush=True)
                out["speed"].append({"d": d, "m": m, "n": n, "store": store,
                                     "runs": speed(store, d, m, n, args, workdir)})
            if (d, n) in mem_keys:
                print(f"memory d={d} n={_sci(n)}", flush=True)
                runs = memory(store, d, m, n, args, workdir)
                peak = {k: max(r["peak_rss"][k] for r in runs) for k in runs[0]["peak_rss"]}
                client_workers = max(
                    r["peak_rss"]["client"] + sum(v for k, v in r["peak_rss"].items() if k.startswith("worker"))
                    for r in runs
                )
                out["memory"].append({"d": d, "m": m, "n": n, "store": store, "runs": runs,
                                      "peak": peak, "client_workers": client_workers})
        finally:
            if not args.keep:
                remove_store(store)
    if args.json_out:  # before the tables: a table bug must not lose the measurements
        Path(args.json_out).write_text(json.dumps(out, indent=1))
    sizes = [f"{Path(s).name} {v['bytes'] / 1e9:.2f} GB on disk" for s, v in out["stores"].items()]
    print("\nstores: " + ", ".join(sizes))
    if out["speed"]:
        speed_tables(out["speed"], args)
    if out["memory"]:
        memory_table(out["memory"], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
