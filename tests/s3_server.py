"""A real S3 endpoint for the tests: moto's server in a process of its own.

Run as a script (``python tests/s3_server.py PORT_FILE``) it starts
:class:`moto.server.ThreadedMotoServer` on 127.0.0.1 and a free port, writes
the port to PORT_FILE once it accepts connections, and serves until it is
terminated.  Used as a module, :class:`S3Server` starts and stops such a
process (the way tests/test_cluster.py starts ``dask scheduler``), so the
port is never guessed and moto's settings, which are per process, are per
server: switching authentication on in one leaves the others open.

moto accepts any credentials until authentication is switched on: the
environment variable ``INITIAL_NO_AUTH_ACTION_COUNT`` of the server process
(that many requests pass unchecked), or, as :meth:`S3Server.enforce_auth`
does once a test has made its IAM user, its access key and its bucket, a
POST of ``0`` to ``/moto-api/reset-auth`` (moto's own server-mode switch,
not fragile to counting requests).  From then on every request must be
signed with an access key moto's IAM knows; a wrong secret is refused with
403 (``SignatureDoesNotMatch``).
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

#: credentials moto accepts while authentication is off (any would do)
DUMMY_KEY = "testing-key"
DUMMY_SECRET = "testing-secret"
REGION = "us-east-1"


def aws_env(base=None):
    """``base`` (default ``os.environ``) with dummy AWS credentials and no user AWS configuration."""
    env = dict(os.environ if base is None else base)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        env.pop(name, None)
    env.update(
        AWS_ACCESS_KEY_ID=DUMMY_KEY,
        AWS_SECRET_ACCESS_KEY=DUMMY_SECRET,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


class S3Server:
    """A moto server process on 127.0.0.1.

    Attributes
    ----------
    endpoint : str
        ``http://127.0.0.1:PORT``.
    options : dict
        Storage options for the dummy credentials (see :meth:`storage_options`).
    env : dict
        Environment for subprocesses: the dummy credentials of :func:`aws_env`.
    """

    def __init__(self, workdir, *, timeout=60):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        port_file = workdir / f"moto-{uuid.uuid4().hex[:8]}.port"
        self.env = aws_env()
        server_env = dict(self.env)
        server_env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)  # authentication off until enforce_auth()
        self._log = open(workdir / "moto.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(port_file)], env=server_env, stdout=self._log, stderr=self._log
        )
        deadline = time.time() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError(f"moto server did not start; see {workdir / 'moto.log'}")
            time.sleep(0.05)
        self.endpoint = f"http://127.0.0.1:{int(port_file.read_text())}"
        self.options = self.storage_options()

    def storage_options(self, key=DUMMY_KEY, secret=DUMMY_SECRET):
        """fsspec options for this endpoint: nested ``client_kwargs``, as a user would write them."""
        return {"key": key, "secret": secret, "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION}}

    def client(self, service="s3", key=DUMMY_KEY, secret=DUMMY_SECRET):
        """A boto3 client of ``service`` on this endpoint."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    def new_bucket(self, prefix="test", **credentials):
        """Create a bucket with a unique name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client(**credentials).create_bucket(Bucket=name)
        return name

    def enforce_auth(self):
        """Switch authentication on from the next request (moto's ``/moto-api/reset-auth``)."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self._log.close()


def _serve(port_file):
    import signal
    import threading

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    tmp = f"{port_file}.tmp"
    Path(tmp).write_text(str(port))
    os.replace(tmp, port_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop()


if __name__ == "__main__":
    _serve(sys.argv[1])
