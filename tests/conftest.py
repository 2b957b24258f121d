"""Shared helpers and fixtures.

Helpers (import them with ``from conftest import ...``):

* :func:`planted` -- the parameters ``(a, W, b)`` of a planted network, for
  tests of the numerical core that work on raw arrays (with :func:`relu_net`
  and :func:`population_tensor`);
* :func:`planted_data` -- a network drawn by :func:`stream_relu.draw_network`
  and standard-normal rows labelled by it, for tests of the public API;
* :func:`stop_processes` -- terminate subprocesses, wait, kill what is left.

Fixtures:

* ``make_store`` (session) -- simulated stores, written once per argument set;
* ``local_cluster`` (module) -- a local dask cluster of two worker processes,
  and ``dask_client`` -- a client on it for one test;
* ``rng`` -- a seeded generator.
"""

import subprocess

import numpy as np
import pytest

from stream_relu.hermite import relu_coefficient


def planted(d, m, seed, b=None):
    """A planted network: mixed-sign a in +-[0.5, 1.5], b in [-1.5, 1.5], unit w."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, m))
    W /= np.linalg.norm(W, axis=0)
    a = rng.uniform(0.5, 1.5, m) * np.where(np.arange(m) % 2 == 0, 1.0, -1.0)
    b = rng.uniform(-1.5, 1.5, m) if b is None else np.asarray(b, dtype=float)
    return a, W, b


def relu_net(x, a, W, b):
    return np.maximum(x @ W + b, 0.0) @ a


def planted_data(n, d, m, seed=0):
    """``(x, y, net)``: ``net = draw_network(d, m, rng)``, then ``n`` rows ``x ~ N(0, I_d)`` and
    noiseless labels ``y = net.predict(x)``, all from one generator seeded with ``seed``."""
    import stream_relu as sr

    rng = np.random.default_rng(seed)
    net = sr.draw_network(d, m, rng)
    x = rng.standard_normal((n, d))
    return x, net.predict(x), net


def population_tensor(a, W, b, k):
    """T_k = sum_i a_i c_k(b_i) w_i^(x)k, built by explicit outer products."""
    lam = a * relu_coefficient(k, b)
    T = 0.0
    for i in range(a.size):
        t = np.array(lam[i])
        for _ in range(k):
            t = np.multiply.outer(t, W[:, i])
        T = T + t
    return T


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def make_store(tmp_path_factory):
    """``make_store(d, m, n, chunk_rows, seed=0, *, noise=0.0, dtype="float32") -> (path, truth)``.

    Calls :func:`stream_relu.simulate_store` once per distinct argument set in
    the session and returns the cached path and truth afterwards.  The stores
    are SHARED between tests: only read them; a test that writes to, appends
    to or corrupts a store must simulate its own under ``tmp_path``.
    """
    import stream_relu as sr

    root = tmp_path_factory.mktemp("stores")
    cache = {}

    def make(d, m, n, chunk_rows, seed=0, *, noise=0.0, dtype="float32"):
        key = (d, m, n, chunk_rows, seed, float(noise), str(dtype))
        if key not in cache:
            path = str(root / "d{}-m{}-n{}-c{}-seed{}-noise{}-{}.zarr".format(*key))
            truth = sr.simulate_store(
                path, n_features=d, n_hidden=m, n_samples=n, seed=seed, chunk_rows=chunk_rows, noise=noise, dtype=dtype
            )
            cache[key] = (path, truth)
        return cache[key]

    return make


@pytest.fixture(scope="module")
def local_cluster():
    """A ``distributed.LocalCluster`` of 2 worker processes x 1 thread, dashboard off, shared by a module.

    The scheduler's HTTP server (which serves more than the dashboard) listens
    on a free port, not 8787, so clusters of concurrent tests do not collide.
    """
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", scheduler_kwargs={"dashboard": False}
    ) as cluster:
        yield cluster


@pytest.fixture
def dask_client(local_cluster):
    """A ``distributed.Client`` on :func:`local_cluster`, the default client while the test runs.

    Opened and closed per test (as ``with Client(cluster) as client:`` in the
    test body would be), so no client outlives the test that asked for it;
    the cluster's processes are started once per module.
    """
    from distributed import Client

    with Client(local_cluster) as client:
        yield client


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 endpoint for the session: moto's server as its own process on 127.0.0.1 (``tests/s3_server.py``).

    Yields an :class:`s3_server.S3Server` with ``endpoint`` (the URL),
    ``options`` (storage options with nested ``client_kwargs``:
    ``{"key", "secret", "client_kwargs": {"endpoint_url", "region_name"}}``),
    ``env`` (the environment for subprocesses: dummy AWS credentials, no
    user AWS configuration) and ``new_bucket()`` (a bucket with a unique
    name; a test that writes should use its own).  Skips when moto or s3fs
    is not installed (the ``test`` extra has both).
    """
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from s3_server import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.close()


def stop_processes(processes, timeout=20):
    """Terminate ``processes`` (subprocess.Popen), wait up to ``timeout`` s each, kill what is left."""
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
