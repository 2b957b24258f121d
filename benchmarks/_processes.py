"""A dask scheduler and workers as separate OS processes on 127.0.0.1, for the benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BIN = os.path.dirname(sys.executable)


class ProcessCluster:
    """Start ``dask scheduler`` and ``n_workers`` x ``dask worker --nthreads 1``; ``close()`` stops them.

    Parameters
    ----------
    workdir : path-like
        Where the scheduler file and the log go.
    n_workers : int
        Worker processes.
    nanny : bool
        Run the workers under a nanny (dask's default) or not.
    """

    def __init__(self, workdir, n_workers=2, nanny=True):
        workdir = Path(workdir)
        sched_file = workdir / "scheduler.json"
        log = open(workdir / "cluster.log", "ab")
        self.procs = [
            subprocess.Popen(
                [os.path.join(BIN, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                 "--dashboard-address", ":0", "--scheduler-file", str(sched_file)],
                stdout=log, stderr=log,
            )
        ]
        while not sched_file.exists():
            time.sleep(0.1)
        self.address = json.loads(sched_file.read_text())["address"]
        extra = [] if nanny else ["--no-nanny"]
        self.procs += [
            subprocess.Popen(
                [os.path.join(BIN, "dask"), "worker", self.address, "--nthreads", "1", "--host", "127.0.0.1",
                 "--dashboard-address", ":0", *extra],
                stdout=log, stderr=log,
            )
            for _ in range(n_workers)
        ]
        from distributed import Client

        with Client(self.address) as client:
            client.wait_for_workers(n_workers)

    @property
    def scheduler_pid(self):
        return self.procs[0].pid

    @property
    def worker_pids(self):
        return [p.pid for p in self.procs[1:]]

    def close(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def status_bytes(pid, field):
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``, ...) in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak(pid):
    """Reset the process's peak RSS (``VmHWM``) to its current RSS; returns that RSS in bytes."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")
    return status_bytes(pid, "VmRSS")
