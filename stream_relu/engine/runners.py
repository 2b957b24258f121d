"""Runners: evaluate a chunk kernel over chunks somewhere, yielding ``(index, ChunkResult)`` in any order.

:class:`SerialRunner` runs in this process; :class:`DaskRunner` on the
active dask scheduler (dask-array inputs); :class:`DistributedRunner` on a
``dask.distributed`` cluster.  :func:`open_runner` picks one for a source
and the user's ``client`` / ``scheduler`` choice, and closes whatever it
started.  dask and distributed are imported lazily, only by the runner that
needs them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid

from ..errors import ClusterError
from .sources import ArraySource, DaskArraySource
from .tasks import ChunkOptions, apply_kernel, run_chunk

__all__ = ["SerialRunner", "DaskRunner", "DistributedRunner", "open_runner", "open_client", "local_cluster"]

log = logging.getLogger("stream_relu")


def _dask_windows(source, kernel, plan, options, order, window, compute):
    """Blocks of a dask-array source as delayed kernel calls, ``window`` at a time through ``compute``."""
    import dask

    blocks = source.delayed_blocks()
    task = dask.delayed(apply_kernel, pure=True)
    for lo in range(0, len(order), window):
        batch = order[lo : lo + window]
        yield from zip(batch, compute([task(kernel, *blocks[i], plan, options) for i in batch]))


class SerialRunner:
    """Runs every chunk in this process, in order."""

    name = "serial"

    def imap(self, source, kernel, plan, options=ChunkOptions(), indices=None):
        for i in range(source.n_chunks) if indices is None else indices:
            yield i, run_chunk(source, i, kernel, plan, options)


class DaskRunner:
    """Runs dask-array blocks on the active dask scheduler, a bounded window at a time."""

    name = "dask"

    def __init__(self, window=None):
        self.window = window or 4 * (os.cpu_count() or 1)

    def imap(self, source, kernel, plan, options=ChunkOptions(), indices=None):
        import dask

        order = list(range(source.n_chunks) if indices is None else indices)
        yield from _dask_windows(source, kernel, plan, options, order, self.window, lambda t: dask.compute(*t))


class DistributedRunner:
    """Runs chunks on a ``dask.distributed`` cluster with a bounded window of tasks.

    The plan is scattered once (broadcast) so tasks carry only the store
    spec and the chunk index.  Task keys are deterministic, so a task lost
    with a worker is recomputed and can never be counted twice.
    """

    name = "distributed"

    def __init__(self, client, window=None):
        self.client = client
        if window is None:
            n_threads = sum(client.nthreads().values()) or 1
            # enough tasks in flight to hide the scheduler's round trip on small
            # chunks; bounded, so client and scheduler memory stay flat
            window = max(4 * n_threads, 32)
        self.window = window

    def imap(self, source, kernel, plan, options=ChunkOptions(), indices=None):
        order = list(range(source.n_chunks) if indices is None else indices)
        if isinstance(source, DaskArraySource):
            client = self.client
            yield from _dask_windows(
                source, kernel, plan, options, order, self.window, lambda t: client.gather(client.compute(t))
            )
            return
        yield from self._imap_chunks(source, kernel, plan, options, order)

    def _imap_chunks(self, source, kernel, plan, options, order):
        from dask.base import tokenize
        from distributed import as_completed

        plan_f = self.client.scatter(plan, broadcast=True, hash=False) if plan is not None else None
        # Keys name the kernel, its plan, the source and this reduction: a
        # recomputed task (lost worker) keeps its key, while another reduction
        # of the same chunks (a later fit on the same scheduler, whose
        # released keys may still be being forgotten) never reuses one.
        token = tokenize(source, options, uuid.uuid4().hex)
        prefix = f"stream-relu-{kernel.name}-{getattr(plan, 'key', 'none')}-{token}"
        pending = as_completed(loop=self.client.loop)  # this client, default or not
        futures = {}
        queue = iter(order)

        def submit_next():
            i = next(queue, None)
            if i is not None:
                f = self.client.submit(run_chunk, source, i, kernel, plan_f, options, key=f"{prefix}-{i}", pure=False)
                futures[f.key] = i
                pending.add(f)

        for _ in range(self.window):
            submit_next()
        for fut in pending:
            i = futures.pop(fut.key)
            result = fut.result()
            fut.release()
            submit_next()
            yield i, result


def _connect(address):
    from distributed import Client

    try:
        return Client(address)
    except (OSError, ValueError, TypeError) as exc:
        raise ClusterError(
            f"cannot connect to the dask scheduler at {address}: {exc} (for tls:// addresses, "
            "dask's distributed.comm.tls settings must name the certificates)"
        ) from None


def _has_bokeh():
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


@contextlib.contextmanager
def local_cluster(sizing=None):
    """A client of a local cluster of worker processes (closed on exit).

    ``sizing`` (:class:`~stream_relu.settings.LocalClusterSettings`) sets
    the workers, threads per worker and memory limit; by default one
    single-threaded worker per core.  The dashboard listens on a free port
    when bokeh is installed (its link is logged at debug level); workers
    ignore Ctrl-C (:mod:`stream_relu.engine.worker_setup`).
    """
    from distributed import Client, LocalCluster

    from ..settings import LocalClusterSettings

    sizing = LocalClusterSettings.from_config() if sizing is None else sizing
    dashboard = _has_bokeh()
    # workers log errors only (a cancelled task at Ctrl-C is not news), all of it when debugging
    debugging = logging.getLogger("distributed").getEffectiveLevel() <= logging.DEBUG
    with LocalCluster(
        n_workers=sizing.n_workers or os.cpu_count() or 1,
        threads_per_worker=sizing.threads_per_worker,
        memory_limit=sizing.memory_limit,
        processes=True,
        dashboard_address=":0",
        scheduler_kwargs={"dashboard": dashboard},
        preload=["stream_relu.engine.worker_setup"],
        silence_logs=logging.DEBUG if debugging else logging.ERROR,
    ) as cluster, Client(cluster) as c:
        if dashboard:
            log.debug("dask dashboard: %s", c.dashboard_link)
        yield c


@contextlib.contextmanager
def open_runner(source, client=None, scheduler=None, cluster=None):
    """The runner for ``source``: closes whatever it started (a connection, a local cluster).

    In-memory arrays run in this process (arrays are never shipped in
    tasks); then a given ``client``; a scheduler address (``tcp://``,
    ``tls://``; :class:`~stream_relu.errors.ClusterError` if unreachable);
    ``"synchronous"`` in this process; dask arrays on the active dask
    scheduler; otherwise a :func:`local_cluster` sized by ``cluster``.
    """
    if isinstance(source, ArraySource):
        yield SerialRunner()
    elif client is not None:
        yield DistributedRunner(client)
    elif scheduler not in (None, "local", "synchronous"):
        with _connect(scheduler) as c:
            yield DistributedRunner(c)
    elif scheduler == "synchronous":
        yield SerialRunner()
    elif isinstance(source, DaskArraySource):
        yield DaskRunner()
    else:
        with local_cluster(cluster) as c:
            yield DistributedRunner(c)


@contextlib.contextmanager
def open_client(client=None, scheduler=None, cluster=None):
    """A ``dask.distributed`` client for ``scheduler``, or None for dask's local threads / ``"synchronous"``.

    A given ``client`` is used as is; a scheduler address is connected to
    (:class:`~stream_relu.errors.ClusterError` if unreachable); ``"local"``
    starts a :func:`local_cluster` sized by ``cluster``.  Whatever is
    started here is closed on exit.
    """
    if client is not None or scheduler in (None, "synchronous"):
        yield client
    elif scheduler == "local":
        with local_cluster(cluster) as c:
            yield c
    else:
        with _connect(scheduler) as c:
            yield c
