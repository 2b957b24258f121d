#!/usr/bin/env python3
"""Fit a store on SLURM: dask-jobqueue starts the worker jobs, this process drives the fit.

Run it from the virtual environment that holds stream_relu and dask-jobqueue,
on a node that can submit jobs (a login node, or inside a small SLURM job:
see submit.sbatch next to this file)::

    python deploy/slurm/submit.py s3://bucket/store.zarr --out model.json --jobs 4 \\
        --storage-options '{"endpoint_url": "https://s3.example.org"}'

The scheduler runs inside this process; the workers run in ``--jobs`` SLURM
jobs described by ``jobqueue.yaml`` (configuration name ``slurm``), kept at
that count while the fit runs (a job that reaches its walltime is replaced).
``--dry-run`` checks the configuration and prints the worker job script
without submitting anything.  ``--tls-dir DIR`` runs every connection over
TLS with ``DIR/ca.crt``, ``DIR/tls.crt`` and ``DIR/tls.key`` (DIR on a shared
filesystem; ``deploy/tls/make-certs.sh`` writes them).

Exit status: 0 on success, 2 for a bad configuration or argument, 1 when the
workers did not come up, and otherwise the status ``stream-relu fit`` uses
for the same error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "jobqueue.yaml"
DASK_SETTINGS = HERE.parent / "dask" / "stream-relu.yaml"

# SLURM --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
WALLTIME = re.compile(r"^(?:(?P<d>\d+)-(?P<h1>\d+)(?::(?P<m1>\d+)(?::(?P<s1>\d+))?)?|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$")
REQUIRED = ("cores", "processes", "memory", "walltime")


class ConfigError(ValueError):
    """The jobqueue configuration file cannot describe the worker jobs."""


def walltime_seconds(text):
    """Seconds of a SLURM ``--time`` value; raises :class:`ConfigError` when malformed."""
    match = WALLTIME.match(str(text))
    if not match:
        raise ConfigError(f"walltime {text!r} is not a SLURM time (M, M:S, H:M:S, D-H, D-H:M or D-H:M:S)")
    g = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    if "d" in g:
        if g["h1"] > 23 or g.get("m1", 0) > 59 or g.get("s1", 0) > 59:
            raise ConfigError(f"walltime {text!r} has a field out of range")
        seconds = ((g["d"] * 24 + g["h1"]) * 60 + g.get("m1", 0)) * 60 + g.get("s1", 0)
    elif "c" in g:  # H:M:S
        if g["b"] > 59 or g["c"] > 59:
            raise ConfigError(f"walltime {text!r} has a field out of range")
        seconds = (g["a"] * 60 + g["b"]) * 60 + g["c"]
    elif "b" in g:  # M:S
        if g["b"] > 59:
            raise ConfigError(f"walltime {text!r} has a field out of range")
        seconds = g["a"] * 60 + g["b"]
    else:  # M
        seconds = g["a"] * 60
    if seconds <= 0:
        raise ConfigError(f"walltime {text!r} is zero")
    return seconds


def _option(args, name):
    """Value following ``name`` in a worker argument list, or None."""
    args = [str(a) for a in args]
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def check_config(doc):
    """Check a parsed jobqueue configuration; returns its ``jobqueue.slurm`` mapping.

    Every key must be one of dask-jobqueue's own ``jobqueue.slurm`` settings
    (from the ``jobqueue.yaml`` shipped in the installed dask_jobqueue), the
    job size must be given and give one thread per worker, the walltime must
    parse as SLURM's, and a worker lifetime must end before it.
    """
    import importlib.util

    import yaml
    from dask.utils import parse_bytes, parse_timedelta

    # Located, not imported: importing dask_jobqueue copies its defaults into
    # the user's dask configuration folder.
    spec = importlib.util.find_spec("dask_jobqueue")
    if spec is None or spec.origin is None:
        raise ConfigError("dask-jobqueue is not installed (pip install dask-jobqueue)")
    with open(Path(spec.origin).with_name("jobqueue.yaml")) as fh:
        known = yaml.safe_load(fh)["jobqueue"]["slurm"]
    if not isinstance(doc, dict) or set(doc) != {"jobqueue"} or not isinstance(doc["jobqueue"], dict):
        raise ConfigError("the file must hold exactly one top-level key, 'jobqueue'")
    if set(doc["jobqueue"]) != {"slurm"} or not isinstance(doc["jobqueue"]["slurm"], dict):
        raise ConfigError("'jobqueue' must hold exactly one mapping, 'slurm'")
    slurm = doc["jobqueue"]["slurm"]
    unknown = sorted(set(slurm) - set(known))
    if unknown:
        raise ConfigError(f"unknown jobqueue.slurm key(s) {unknown}; dask-jobqueue knows {sorted(known)}")
    missing = [key for key in REQUIRED if slurm.get(key) in (None, "")]
    if missing:
        raise ConfigError(f"jobqueue.slurm must set {missing}")
    cores, processes = slurm["cores"], slurm["processes"]
    for key, value in (("cores", cores), ("processes", processes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"jobqueue.slurm.{key} must be a positive integer, got {value!r}")
    if cores != processes:
        raise ConfigError(
            f"cores ({cores}) must equal processes ({processes}): each worker is one single-threaded process"
        )
    try:
        memory = parse_bytes(slurm["memory"])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"jobqueue.slurm.memory {slurm['memory']!r} is not a size: {exc}") from None
    if memory <= 0:
        raise ConfigError("jobqueue.slurm.memory must be positive")
    walltime = walltime_seconds(slurm["walltime"])
    extra = [str(a) for a in slurm.get("worker-extra-args") or []]
    if "--nthreads" in extra or "--nworkers" in extra:
        raise ConfigError("worker-extra-args must not set --nthreads or --nworkers (cores and processes do)")
    lifetime = _option(extra, "--lifetime")
    if lifetime is not None:
        total = parse_timedelta(lifetime) + parse_timedelta(_option(extra, "--lifetime-stagger") or 0)
        if total >= walltime:
            raise ConfigError(
                f"worker lifetime {lifetime} (+ stagger) must end before the walltime {slurm['walltime']}"
            )
    directives = slurm.get("job-extra-directives") or []
    if not isinstance(directives, list) or not all(isinstance(d, str) and d.startswith("-") for d in directives):
        raise ConfigError("job-extra-directives must be a list of sbatch options such as '--hint=nomultithread'")
    return slurm


def load_config(path):
    """Read and check a jobqueue configuration file."""
    import yaml

    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    check_config(doc)
    return doc


def tls_security(tls_dir):
    """A distributed Security object using DIR/ca.crt, DIR/tls.crt and DIR/tls.key for every role."""
    from distributed.security import Security

    tls_dir = Path(tls_dir).resolve()
    files = {name: tls_dir / name for name in ("ca.crt", "tls.crt", "tls.key")}
    absent = [str(p) for p in files.values() if not p.is_file()]
    if absent:
        raise ConfigError(f"--tls-dir: missing {absent} (deploy/tls/make-certs.sh writes them)")
    cert, key = str(files["tls.crt"]), str(files["tls.key"])
    return Security(
        tls_ca_file=str(files["ca.crt"]),
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        tls_client_cert=cert,
        tls_client_key=key,
        require_encryption=True,
    )


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="submit.py",
        description="Fit a store on SLURM worker jobs started by dask-jobqueue.",
    )
    p.add_argument("store", nargs="?", help="path or URL of the zarr store (not needed with --dry-run)")
    p.add_argument("--out", help="model file to write (JSON)")
    p.add_argument("--jobs", type=int, default=2, help="SLURM worker jobs to keep running (default 2)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="jobqueue configuration (default: jobqueue.yaml here)")
    p.add_argument("--hidden", type=int, help="number of units (estimated when omitted)")
    p.add_argument("--storage-options", help="fsspec options as a JSON object (credentials: prefer the environment)")
    p.add_argument("--no-refine", action="store_true", help="return the pure moment estimate")
    p.add_argument("--seed", type=int, default=0, help="seed of the decomposition's random slices")
    p.add_argument("--tls-dir", help="folder with ca.crt, tls.crt, tls.key: run every connection over TLS")
    p.add_argument("--wait", type=float, default=1800, help="seconds to wait for the workers (default 1800)")
    p.add_argument(
        "--min-workers",
        type=int,
        help="start the fit after --wait seconds with at least this many workers (default: all of them)",
    )
    p.add_argument("--dry-run", action="store_true", help="check the configuration, print the job script, submit nothing")
    args = p.parse_args(argv)
    if not args.dry_run and (args.store is None or args.out is None):
        p.error("STORE and --out are required unless --dry-run")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    # The recommended dask settings, for the scheduler in this process and for
    # the workers (sbatch hands this environment to the jobs by default).
    os.environ.setdefault("DASK_CONFIG", str(DASK_SETTINGS))
    try:
        doc = load_config(args.config)
        storage_options = json.loads(args.storage_options) if args.storage_options else None
        if storage_options is not None and not isinstance(storage_options, dict):
            raise ConfigError("--storage-options must be a JSON object")
        security = tls_security(args.tls_dir) if args.tls_dir else None
    except (ConfigError, json.JSONDecodeError) as exc:
        print(f"submit.py: error: {exc}", file=sys.stderr)
        return 2

    import dask
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    slurm = doc["jobqueue"]["slurm"]
    tls = {"security": security, "protocol": "tls://"} if security is not None else {}
    # Set for the whole run: every job dask-jobqueue submits reads these.
    dask.config.set({f"jobqueue.slurm.{key}": value for key, value in slurm.items()})
    with SLURMCluster(config_name="slurm", **tls) as cluster:
        if args.dry_run:
            print(cluster.job_script())
            return 0
        from stream_relu import fit
        from stream_relu.errors import EXIT_CODES, StreamReluError

        n_workers = args.jobs * slurm["processes"]
        # adapt with minimum == maximum keeps --jobs jobs running: a job that
        # ends (walltime, --lifetime, node failure) is submitted again.
        cluster.adapt(minimum_jobs=args.jobs, maximum_jobs=args.jobs)
        print(f"submit.py: scheduler {cluster.scheduler_address}; waiting for {n_workers} workers", file=sys.stderr)
        with Client(cluster, security=security) as client:
            try:
                client.wait_for_workers(n_workers, timeout=args.wait)
            except TimeoutError:
                present = len(client.nthreads())
                minimum = n_workers if args.min_workers is None else args.min_workers
                if present < max(minimum, 1):
                    print(f"submit.py: error: {present} of {n_workers} workers after {args.wait:.0f}s", file=sys.stderr)
                    return 1
                print(f"submit.py: starting with {present} of {n_workers} workers", file=sys.stderr)
            try:
                result = fit(
                    args.store,
                    client=client,
                    n_hidden=args.hidden,
                    storage_options=storage_options,
                    refine_model=not args.no_refine,
                    random_state=args.seed,
                )
            except StreamReluError as exc:
                print(f"submit.py: error: {exc}", file=sys.stderr)
                return next(code for cls, code in EXIT_CODES.items() if isinstance(exc, cls))
        result.model.save(args.out)
        print(f"submit.py: wrote {args.out} ({result.diagnostics['n_units_returned']} units)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
