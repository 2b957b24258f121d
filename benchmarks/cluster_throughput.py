"""Moment-pass throughput: an external cluster of 2 worker processes x 1 thread vs the local default.

The same store (d=20, m=6, n=2e6, float32, 65536-row chunks) is fitted with
``--no-refine`` (both moment passes and the recovery) ``--repeat`` times by

* ``local default``: ``stream_relu.fit(store)``, which starts its own local
  cluster (one single-threaded worker process per core) each time;
* ``external 2x1``: ``stream_relu.fit(store, scheduler=ADDRESS)`` against
  a ``dask scheduler`` and two ``dask worker --nthreads 1`` processes
  started once, before the timed runs.

Reported: median rows per second over both passes (``timings["pass1_s"] +
timings["pass2_s"]``, which excludes cluster start-up) and the ratio.

Usage::

    python benchmarks/cluster_throughput.py [--repeat 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _processes import ProcessCluster

import stream_relu as sr

N = 2_000_000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="stream-relu-tput-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = str(workdir / "s.zarr")
    sr.simulate_store(store, n_features=20, n_hidden=6, n_samples=N, seed=0, overwrite=True)
    cluster = ProcessCluster(workdir, n_workers=2)
    address = cluster.address
    rates = {"local default": [], "external 2x1": []}
    try:
        for _ in range(args.repeat):  # interleaved, so drifts of the machine hit both alike
            for name, scheduler in (("local default", None), ("external 2x1", address)):
                r = sr.fit(store, n_hidden=6, scheduler=scheduler, refine_model=False, progress=False)
                rates[name].append(2 * N / (r.timings["pass1_s"] + r.timings["pass2_s"]))
    finally:
        cluster.close()
    print(f"{'runner':<15}{'median rows/s (2 passes)':>26}{'min':>14}{'max':>14}")
    for name, v in rates.items():
        print(f"{name:<15}{statistics.median(v):>26,.0f}{min(v):>14,.0f}{max(v):>14,.0f}")
    ratio = statistics.median(rates["external 2x1"]) / statistics.median(rates["local default"])
    print(f"ratio external 2x1 / local default: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
