"""Stores and state folders at fsspec URLs, and TLS connections with self-signed certificates."""

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import stream_relu as sr
from conftest import stop_processes

BIN = os.path.dirname(sys.executable)


def test_file_and_memory_urls_for_store_and_state(tmp_path, make_store):
    plain, truth = make_store(4, 2, 40_000, 10_000, seed=2)
    ref = sr.fit(plain, n_hidden=2, scheduler="synchronous", progress=False)
    url = f"file://{plain}"
    via_url = sr.fit(url, n_hidden=2, scheduler="synchronous", state=f"file://{tmp_path}/state", progress=False)
    np.testing.assert_array_equal(via_url.model.W, ref.model.W)
    again = sr.fit(url, n_hidden=2, scheduler="synchronous", state=f"file://{tmp_path}/state", progress=False)
    assert again.run["pass1_reused_chunks"] == 4
    mem = "memory://stream-relu-test/s.zarr"
    sr.simulate_store(mem, truth=truth, n_samples=40_000, seed=2, chunk_rows=10_000, overwrite=True)
    in_memory = sr.fit(mem, n_hidden=2, scheduler="synchronous", state="memory://stream-relu-test/state", progress=False)
    np.testing.assert_array_equal(in_memory.model.W, ref.model.W)


def _self_signed(tmp_path):
    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stream-relu-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@pytest.mark.slow
def test_tls_cluster_with_self_signed_certificates(tmp_path, make_store):
    cert, key = _self_signed(tmp_path)
    store, truth = make_store(4, 2, 40_000, 10_000, seed=3)
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    # dask's own configuration: every connection of the client must be TLS with these files
    for role in ("client", "scheduler", "worker"):
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role.upper()}__CERT"] = cert
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role.upper()}__KEY"] = key
    env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] = cert
    env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
    tls = ["--tls-ca-file", cert, "--tls-cert", cert, "--tls-key", key]
    sched_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "cluster.log", "ab")
    procs = [
        subprocess.Popen(
            [os.path.join(BIN, "dask"), "scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0",
             "--dashboard-address", ":0", "--scheduler-file", str(sched_file), *tls],
            env=env, stdout=log, stderr=log,
        )
    ]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tls://")
        procs.append(
            subprocess.Popen(
                [os.path.join(BIN, "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                 "--dashboard-address", ":0", *tls],
                env=env, stdout=log, stderr=log,
            )
        )
        out = tmp_path / "m.json"
        run = subprocess.run(
            [os.path.join(BIN, "stream-relu"), "fit", store, "--out", str(out), "--hidden", "2",
             "--scheduler", address, "-q"],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, run.stderr
        assert sr.evaluate(sr.load_model(out), truth)["rel_test_mse"] < 1e-10
        # without the certificates the same address is refused
        bare = {k: v for k, v in env.items() if not k.startswith("DASK_DISTRIBUTED__COMM__TLS")}
        bare["DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"] = "5s"
        refused = subprocess.run(
            [os.path.join(BIN, "stream-relu"), "fit", store, "--out", str(tmp_path / "x.json"), "--hidden", "2",
             "--scheduler", address, "-q"],
            env=bare, capture_output=True, text=True, timeout=120,
        )
        assert refused.returncode == 8
        assert "cannot connect to the dask scheduler at tls://" in refused.stderr
    finally:
        stop_processes(procs)
    assert Path(out).exists()
