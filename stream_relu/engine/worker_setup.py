"""Preload of the local cluster's worker processes: Ctrl-C belongs to the driver.

A terminal's Ctrl-C sends SIGINT to the whole process group, worker
processes included; a worker would then die printing its own traceback.
The workers of :func:`~stream_relu.engine.runners.open_runner`'s local
cluster ignore SIGINT instead: the driver catches the interrupt, closes the
cluster (which stops its workers) and prints one line.
"""

import signal
import threading


def dask_setup(worker):  # noqa: ARG001  (the preload hook's signature)
    """Ignore SIGINT in this worker process (only the main thread may set signal handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
