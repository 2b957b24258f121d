"""The whole S3 path against a real S3 server: moto's, as a process on 127.0.0.1 (no network).

Every command runs as ``stream-relu`` in a subprocess with
``--storage-options`` holding nested ``client_kwargs`` (the endpoint), as a
user of an S3-compatible store (MinIO, Ceph, ...) writes them: ``simulate``
to a bucket, ``check``, ``fit`` in this process, on a local cluster and on
``dask scheduler`` / ``dask worker`` processes (one model file, byte for
byte), a ``--state`` folder in the bucket surviving a killed driver, ``append``
and ``predict`` to the bucket.  The failures a user meets first (no such
bucket, an endpoint that is not there, a wrong secret with authentication
on) each end in one line on stderr and an exit status of the README's table.
"""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import stream_relu as sr
from stream_relu.errors import (
    EXIT_CODES,
    StorageAccessError,
    StorageUnreachableError,
    StoreNotFoundError,
)
from test_cluster import Cluster

D, M, N, CHUNK = 5, 2, 120_000, 10_000  # 12 chunks
BIN = os.path.dirname(sys.executable)
README = Path(__file__).resolve().parents[1] / "README.md"
FAILURE_SECONDS = 30


def _cli(server, *args, options=None, timeout=300):
    """Run ``stream-relu ARGS --storage-options JSON`` with the server's environment."""
    opts = json.dumps(server.options if options is None else options)
    return subprocess.run(
        [os.path.join(BIN, "stream-relu"), *args, "--storage-options", opts],
        env=server.env, capture_output=True, text=True, timeout=timeout,
    )


def _close(cluster):
    """Stop the workers, then the scheduler (:meth:`Cluster.close` does it in that order)."""
    cluster.close()


def _fit_args(url, out, *extra):
    return ["fit", url, "--out", str(out), "--hidden", str(M), "-q", *extra]


def _s3fs(server):
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **server.options)


@pytest.fixture(scope="module")
def bucket(s3_server):
    return s3_server.new_bucket("store")


@pytest.fixture(scope="module")
def store(s3_server, bucket):
    """``s3://BUCKET/s.zarr``: 120,000 rows in 12 chunks, written by ``stream-relu simulate``."""
    url = f"s3://{bucket}/s.zarr"
    run = _cli(s3_server, "simulate", url, "--features", str(D), "--hidden", str(M), "--samples", str(N),
               "--chunk-rows", str(CHUNK), "--seed", "3", "-q")
    assert run.returncode == 0, run.stderr
    return url


@pytest.fixture(scope="module")
def reference(s3_server, store, tmp_path_factory):
    """The model file of an uninterrupted in-process fit (``--scheduler synchronous``), as bytes."""
    out = tmp_path_factory.mktemp("s3-reference") / "sync.json"
    run = _cli(s3_server, *_fit_args(store, out, "--scheduler", "synchronous"))
    assert run.returncode == 0, run.stderr
    return out.read_bytes()


def test_check_passes_on_the_simulated_store(s3_server, store):
    run = _cli(s3_server, "check", store, "--hidden", str(M), "--scheduler", "synchronous", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] and report["stats"]["n_samples"] == N and report["stats"]["n_chunks"] == N // CHUNK


@pytest.mark.slow
def test_fit_is_the_same_file_in_process_on_a_local_cluster_and_on_dask_processes(
    s3_server, store, reference, tmp_path
):
    local = _cli(s3_server, *_fit_args(store, tmp_path / "local.json", "--n-workers", "2"))  # the default
    assert local.returncode == 0, local.stderr
    cluster = Cluster(tmp_path, n_workers=2)
    try:
        remote = _cli(s3_server, *_fit_args(store, tmp_path / "remote.json", "--scheduler", cluster.address))
    finally:
        _close(cluster)
    assert remote.returncode == 0, remote.stderr
    assert (tmp_path / "local.json").read_bytes() == reference
    assert (tmp_path / "remote.json").read_bytes() == reference
    truth = sr.load_truth(store, storage_options=s3_server.options)
    assert sr.evaluate(sr.load_model(tmp_path / "local.json"), truth)["rel_test_mse"] < 1e-8


def _state_records(fs, root):
    """Chunk records and prefixes of pass 1 under the state folder in the bucket, listed afresh."""
    fs.invalidate_cache()
    try:
        names = fs.find(root)
    except FileNotFoundError:
        return 0
    return sum(1 for n in names if re.search(r"/gauss-[^/]+/(chunk-\d+|prefix)\.json$", n))


@pytest.mark.slow
def test_state_in_the_bucket_survives_a_killed_driver_bitwise(s3_server, store, bucket, reference, tmp_path):
    fs = _s3fs(s3_server)
    root = f"{bucket}/state-{tmp_path.name}"
    cluster = Cluster(tmp_path, n_workers=2, delay=0.25)
    try:
        args = _fit_args(store, tmp_path / "m.json", "--scheduler", cluster.address, "--state", f"s3://{root}",
                         "--json")
        opts = json.dumps(s3_server.options)
        cmd = [os.path.join(BIN, "stream-relu"), *args, "--storage-options", opts]
        driver = subprocess.Popen(cmd, env=s3_server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while _state_records(fs, root) < 4 and time.time() < deadline and driver.poll() is None:
            time.sleep(0.1)
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=10)
        assert driver.returncode == -signal.SIGKILL
        assert not (tmp_path / "m.json").exists()  # it died before the end
        run = subprocess.run(cmd, env=s3_server.env, capture_output=True, text=True, timeout=300)
    finally:
        _close(cluster)
    assert run.returncode == 0, run.stderr
    reused = json.loads(run.stdout)["run"]["pass1_reused_chunks"]
    assert 0 < reused < N // CHUNK  # resumed mid-run, computed only what was missing
    assert (tmp_path / "m.json").read_bytes() == reference
    fs.invalidate_cache()
    (prefix,) = fs.glob(f"{root}/gauss-*/prefix.npz")
    with np.load(io.BytesIO(fs.cat_file(prefix)), allow_pickle=False) as z:
        assert int(z["count"]) == N  # every row folded once


@pytest.mark.slow
def test_append_then_predict_into_the_bucket(s3_server, reference, tmp_path):
    import zarr

    bucket = s3_server.new_bucket("append")
    url, pred = f"s3://{bucket}/grow.zarr", f"s3://{bucket}/pred.zarr"
    run = _cli(s3_server, "simulate", url, "--features", str(D), "--hidden", str(M), "--samples", "25000",
               "--chunk-rows", str(CHUNK), "--seed", "4", "-q")
    assert run.returncode == 0, run.stderr
    source = str(tmp_path / "more.zarr")  # a local store: append reads --from without storage options
    sr.simulate_store(source, n_features=D, n_hidden=M, n_samples=15_000, chunk_rows=CHUNK, seed=5)
    run = _cli(s3_server, "append", url, "--from", source, "-q")
    assert run.returncode == 0, run.stderr
    grown = sr.open_store(url, storage_options=s3_server.options)
    assert grown.n_samples == 40_000 and grown.attrs["committed_rows"] == 40_000
    x, y = grown.read_rows(0, grown.n_samples)
    x_new, y_new = sr.open_store(source).read_rows(0, 15_000)
    np.testing.assert_array_equal(x[25_000:], x_new)
    np.testing.assert_array_equal(y[25_000:], y_new)

    model_file = tmp_path / "model.json"
    model_file.write_bytes(reference)
    run = _cli(s3_server, "predict", str(model_file), url, "--out", pred, "-q", "--scheduler", "synchronous")
    assert run.returncode == 0, run.stderr
    y_pred = zarr.open_group(pred, mode="r", storage_options=s3_server.options)["y_pred"][:]
    assert y_pred.shape == (40_000,)
    np.testing.assert_allclose(y_pred, sr.load_model(model_file).predict(x), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# failures: one line on stderr, an exit status of the README's table, in time
# ---------------------------------------------------------------------------


def _readme_statuses():
    """``{error class name: status}`` from the exit-status table of README.md."""
    return {name: int(code) for code, name in re.findall(r"^\| (\d+) \| `(\w+)` \|", README.read_text(), re.M)}


def _one_line_failure(run, error_class, seconds):
    """The error line of a failed run, after checking it is the only line and the status is the class's."""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.returncode == EXIT_CODES[error_class], run.stderr
    assert _readme_statuses().get(error_class.__name__) == run.returncode, (
        f"README.md's exit-status table has no line for {error_class.__name__} ({run.returncode})"
    )
    assert seconds < FAILURE_SECONDS
    return lines[0]


def _timed(server, *args, options=None):
    start = time.monotonic()
    run = _cli(server, *args, options=options, timeout=2 * FAILURE_SECONDS)
    return run, time.monotonic() - start


def test_a_missing_bucket_is_one_line(s3_server):
    run, seconds = _timed(s3_server, "check", "s3://no-such-bucket-here/s.zarr", "--scheduler", "synchronous")
    line = _one_line_failure(run, StoreNotFoundError, seconds)
    assert "bucket 'no-such-bucket-here' does not exist" in line
    run, seconds = _timed(s3_server, "simulate", "s3://no-such-bucket-here/s.zarr", "--features", "3",
                          "--hidden", "1", "--samples", "100")
    assert "bucket 'no-such-bucket-here' does not exist" in _one_line_failure(run, StoreNotFoundError, seconds)


def test_a_missing_state_bucket_is_refused_before_anything_is_created(s3_server, store, tmp_path):
    run, seconds = _timed(s3_server, *_fit_args(store, tmp_path / "m.json", "--scheduler", "synchronous",
                                                "--state", "s3://no-such-state-bucket/state"))
    assert "bucket 'no-such-state-bucket' does not exist" in _one_line_failure(run, StoreNotFoundError, seconds)
    assert "no-such-state-bucket" not in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_an_unreachable_endpoint_is_one_line(s3_server, tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    options = dict(s3_server.options, client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
    run, seconds = _timed(s3_server, *_fit_args("s3://bucket/s.zarr", tmp_path / "m.json"), options=options)
    line = _one_line_failure(run, StorageUnreachableError, seconds)
    assert "cannot reach the storage of 's3://bucket/s.zarr'" in line and endpoint in line


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A second moto server whose S3 checks signatures: an IAM user allowed s3:*, then authentication on."""
    pytest.importorskip("moto.server")
    from s3_server import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3-auth"))
    try:
        iam = server.client("iam")
        iam.create_user(UserName="fitter")
        key = iam.create_access_key(UserName="fitter")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="fitter", PolicyName="s3", PolicyDocument=json.dumps(policy))
        server.key, server.secret = key["AccessKeyId"], key["SecretAccessKey"]
        server.bucket = server.new_bucket("auth")
        assert server.enforce_auth()["status"] == "ok"
        yield server
    finally:
        server.close()


@pytest.mark.slow
def test_wrong_credentials_are_one_line(auth_server):
    from botocore.exceptions import ClientError

    url = f"s3://{auth_server.bucket}/s.zarr"
    good = auth_server.storage_options(auth_server.key, auth_server.secret)
    wrong = auth_server.storage_options(auth_server.key, auth_server.secret[::-1])
    with pytest.raises(ClientError):  # authentication is on: moto's dummy credentials are refused
        auth_server.client().list_objects_v2(Bucket=auth_server.bucket)
    run = _cli(auth_server, "simulate", url, "--features", "3", "--hidden", "1", "--samples", "2000",
               "--chunk-rows", "1000", "-q", options=good)
    assert run.returncode == 0, run.stderr
    run, seconds = _timed(auth_server, "check", url, "--scheduler", "synchronous", options=wrong)
    line = _one_line_failure(run, StorageAccessError, seconds)
    assert f"access to '{url}' was refused" in line
    assert auth_server.secret[::-1] not in run.stderr  # credentials are never printed
    with pytest.raises(PermissionError):  # the API raises the same class, a PermissionError too
        sr.open_store(url, storage_options=wrong)
    assert sr.open_store(url, storage_options=good).n_samples == 2000
