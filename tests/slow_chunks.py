"""dask worker preload for the cluster tests: every chunk task sleeps first.

``dask worker ... --preload tests/slow_chunks.py`` with
``STREAM_RELU_TEST_CHUNK_DELAY=SECONDS`` in the environment wraps
:func:`stream_relu.engine.tasks.run_chunk` on that worker so each task
sleeps that long, which lets a test kill a worker or the driver while a
pass is reliably in flight.  Production code never reads the variable.
"""

import functools
import os
import time

import stream_relu.engine.tasks as tasks

DELAY = float(os.environ.get("STREAM_RELU_TEST_CHUNK_DELAY", "0") or 0)

if DELAY > 0 and not getattr(tasks.run_chunk, "slowed", False):
    _original = tasks.run_chunk

    @functools.wraps(_original)
    def run_chunk(*args, **kwargs):
        time.sleep(DELAY)
        return _original(*args, **kwargs)

    run_chunk.slowed = True
    tasks.run_chunk = run_chunk
