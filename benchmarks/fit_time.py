"""Wall time and peak memory of ``stream-relu fit`` end to end (CLI, default local cluster).

For each case (G1: d=20, m=6, n=1e6; G3: d=50, m=10, n=4e6, noise 0.1;
seed 0, float32 store with 65536-row chunks written by ``simulate``), runs
``stream-relu fit STORE --out MODEL --hidden m`` ``--repeat`` times in a
fresh process and reports the median wall time and the peak resident memory
of the whole process tree (the CLI, the scheduler and the workers), sampled
every 50 ms from /proc.  The store is written once, before the timed runs
(page cache warm).

``--estimate-width`` omits ``--hidden`` (the width is measured);
``--baseline DIR`` also times the CLI of another checkout (``PYTHONPATH=DIR``,
for example a git worktree of stream_relu 0.1, commit 5a7f287) on the same
store, alternating with this checkout's runs, and prints the ratio of the
medians.

Usage::

    python benchmarks/fit_time.py [--cases G1,G3] [--repeat 3] [--workdir DIR] [--estimate-width] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CASES = {
    "G1": {"features": 20, "hidden": 6, "samples": 1_000_000, "noise": 0.0},
    "G3": {"features": 50, "hidden": 10, "samples": 4_000_000, "noise": 0.1},
}


def _children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def _tree_rss(pid):
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
        stack += _children(p)
    return total


def run_timed(cmd, env=None, cwd=None):
    """Run ``cmd`` in ``cwd``; return (wall seconds, peak RSS of its process tree in bytes).

    Run a ``python -m stream_relu.cli`` of another checkout (``PYTHONPATH``)
    outside this repository: ``-m`` puts the working directory first on
    ``sys.path``, so from the repository root this checkout's package wins.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err}")
    return wall, peak[0]


def _fit_command(exe, store, model, c, args, baseline):
    width = [] if args.estimate_width else ["--hidden", str(c["hidden"])]
    if baseline:  # an older CLI: no --overwrite or --no-state, a fresh output path instead
        return exe + ["fit", store, "--out", model] + width + ["-q"]
    # --overwrite: each repeat replaces the model (the CLI's rule); --no-state: the same work as the baseline
    return exe + ["fit", store, "--out", model] + width + ["--overwrite", "--no-state", "-q"]


def _time_case(exe, workdir, name, c, args):
    """Median walls and peaks of this checkout (and the baseline's) on one case's store."""
    store = str(workdir / f"{name}.zarr")
    subprocess.run(
        exe + ["simulate", store, "--features", str(c["features"]), "--hidden", str(c["hidden"]),
               "--samples", str(c["samples"]), "--noise", str(c["noise"]), "--seed", "0", "--overwrite", "-q"],
        check=True,
    )
    runs = {"this": ([], []), "baseline": ([], [])}
    base_env = {**os.environ, "PYTHONPATH": str(args.baseline)} if args.baseline else None
    for i in range(args.repeat):
        for who in ("this", "baseline") if args.baseline else ("this",):
            model = str(workdir / (f"{name}.json" if who == "this" else f"{name}-baseline-{i}.json"))
            cmd = _fit_command(exe, store, model, c, args, who == "baseline")
            wall, peak = run_timed(cmd, env=base_env if who == "baseline" else None, cwd=workdir)
            if who == "baseline" and json.loads(Path(model).read_text()).get("format_version") != 1:
                raise RuntimeError(f"the baseline run wrote a model of this checkout, not of {args.baseline}")
            runs[who][0].append(wall)
            runs[who][1].append(peak)
    return store, runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="G1,G3")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--estimate-width", action="store_true", help="omit --hidden")
    parser.add_argument("--baseline", default=None, help="a checkout of another version to time beside this one")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="stream-relu-time-")).resolve()
    exe = [sys.executable, "-m", "stream_relu.cli"]
    print(f"{'case':<5}{'version':>9}{'n':>10}{'d':>4}{'m':>4}{'median wall s':>15}{'min':>8}{'max':>8}{'peak RSS MiB':>14}{'rel test MSE':>14}")
    for name in args.cases.split(","):
        c = CASES[name]
        store, runs = _time_case(exe, workdir, name, c, args)
        metrics = json.loads(
            subprocess.run(exe + ["evaluate", str(workdir / f"{name}.json"), "--truth", store, "--json"],
                           check=True, capture_output=True, text=True).stdout
        )
        for who, (walls, peaks) in runs.items():
            if walls:
                print(
                    f"{name:<5}{who:>9}{c['samples']:>10}{c['features']:>4}{c['hidden']:>4}{statistics.median(walls):>15.1f}"
                    f"{min(walls):>8.1f}{max(walls):>8.1f}{max(peaks) / 2**20:>14.0f}"
                    + (f"{metrics['rel_test_mse']:>14.2e}" if who == "this" else ""),
                    flush=True,
                )
        if runs["baseline"][0]:
            ratio = statistics.median(runs["this"][0]) / statistics.median(runs["baseline"][0])
            print(f"{name}: median wall time this / baseline = {ratio:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
