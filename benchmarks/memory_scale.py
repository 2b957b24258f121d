"""Peak memory of client, scheduler and workers against the number of chunks (bounded window).

Starts a real ``dask scheduler`` and two ``dask worker`` processes (1 thread
each), writes tiny-chunk stores (4 rows x 2 features per chunk) with 1,000,
10,000 and 100,000 chunks, and runs pass 1 of the fit over each:

* ``bounded``: stream_relu's runner (a window of 4 tasks per worker thread,
  states folded in chunk order as they arrive);
* ``unbounded``: a deliberately naive variant that submits every chunk at
  once and gathers all states before folding, to show the measurement sees
  growth.

For each process the peak RSS above its baseline is measured with the
kernel's own high-water mark: after connecting, ``/proc/PID/clear_refs`` is
reset (needs root or the process owner) and ``VmRSS`` recorded as the
baseline; after the run, ``VmHWM - baseline`` is the growth.  A warm-up run
on a 200-chunk store comes first, so imports and first connections are not
counted.

Usage::

    python benchmarks/memory_scale.py [--chunks 1000,10000,100000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from _processes import ProcessCluster, reset_peak, status_bytes

ROWS, FEATURES = 4, 2


def _store(path, n_chunks):
    n = n_chunks * ROWS
    rng = np.random.default_rng(0)
    g = zarr.open_group(str(path), mode="w")
    g.create_array("x", shape=(n, FEATURES), chunks=(ROWS, FEATURES), dtype="float32")[...] = rng.standard_normal(
        (n, FEATURES)
    ).astype("float32")
    g.create_array("y", shape=(n,), chunks=(ROWS,), dtype="float32")[...] = rng.standard_normal(n).astype("float32")
    return str(path)


def _unbounded(client, source):
    from stream_relu.engine import run_chunk
    from stream_relu.moments import GAUSS

    futures = [client.submit(run_chunk, source, i, GAUSS, None, pure=False) for i in range(source.n_chunks)]
    results = client.gather(futures)
    return sum(r.state for r in results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="1000,10000,100000")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="stream-relu-mem-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = ProcessCluster(workdir, n_workers=2, nanny=False)
    address = cluster.address
    from distributed import Client

    from stream_relu import open_store
    from stream_relu.engine import DistributedRunner, StoreSource, reduce_chunks
    from stream_relu.moments import GAUSS

    rows = []
    try:
        with Client(address) as client:
            pids = {"client": os.getpid(), "scheduler": cluster.scheduler_pid}
            pids.update({f"worker {i}": pid for i, pid in enumerate(cluster.worker_pids)})
            # warm-up (imports, first connections, caches) before any baseline is taken
            warm = StoreSource.from_store(open_store(_store(workdir / "warm.zarr", 200)))
            reduce_chunks(warm, GAUSS, None, DistributedRunner(client))
            _unbounded(client, warm)
            for n_chunks in [int(c) for c in args.chunks.split(",")]:
                store = _store(workdir / f"s{n_chunks}.zarr", n_chunks)
                source = StoreSource.from_store(open_store(store))
                for variant in ("bounded", "unbounded"):
                    client.run(lambda: __import__("gc").collect())
                    base = {name: reset_peak(pid) for name, pid in pids.items()}
                    t0 = time.perf_counter()
                    if variant == "bounded":
                        state = reduce_chunks(source, GAUSS, None, DistributedRunner(client)).state
                    else:
                        state = _unbounded(client, source)
                    wall = time.perf_counter() - t0
                    assert state.count == n_chunks * ROWS
                    growth = {name: (status_bytes(pid, "VmHWM") - base[name]) / 2**20 for name, pid in pids.items()}
                    rows.append((n_chunks, variant, wall, growth))
                    print(
                        f"{n_chunks:>8} {variant:<10} {wall:8.1f} s  "
                        + "  ".join(f"{k} {v:7.1f} MiB" for k, v in growth.items()),
                        flush=True,
                    )
    finally:
        cluster.close()
    print("\npeak RSS growth above the baseline after connecting (MiB)")
    print(f"{'chunks':>8} {'variant':<10} {'client':>8} {'scheduler':>10} {'worker 0':>9} {'worker 1':>9}")
    for n_chunks, variant, _, g in rows:
        print(f"{n_chunks:>8} {variant:<10} {g['client']:8.1f} {g['scheduler']:10.1f} {g['worker 0']:9.1f} {g['worker 1']:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
