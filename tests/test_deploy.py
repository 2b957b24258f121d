"""The deployment files under deploy/: each one is exercised here, and a broken copy of each must fail.

* deploy/local: the launcher runs fits end to end (plain and TLS) and must
  leave no process behind, also when the fit fails;
* deploy/dask: every key must be declared in dask's and distributed's own
  configuration schemas, every value valid there;
* deploy/slurm: submit.py checks the dask-jobqueue configuration and renders
  the worker job script; submit.sbatch runs the whole fit with sbatch and
  scancel replaced by stand-ins that run the jobs on this machine;
* deploy/kubernetes: the DaskJob is validated against the CRD shipped in the
  installed dask-kubernetes, the volume claim against the Kubernetes API
  models of the kubernetes client;
* deploy/docker: the Dockerfile cannot be built here (no Docker engine); its
  image, versions, user and files must agree with pyproject.toml and the
  manifests;
* deploy/tls: the certificates make-certs.sh writes verify against their
  authority and no other.

The optional tools (dask-jobqueue, dask-kubernetes, kubernetes, openssl)
come with the test extras; without them their tests are skipped.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
LAUNCHER = DEPLOY / "local" / "run-local.sh"
MAKE_CERTS = DEPLOY / "tls" / "make-certs.sh"
DASK_SETTINGS = DEPLOY / "dask" / "stream-relu.yaml"
DASK_TLS = DEPLOY / "dask" / "tls.yaml"
JOBQUEUE = DEPLOY / "slurm" / "jobqueue.yaml"
SUBMIT = DEPLOY / "slurm" / "submit.py"
SBATCH = DEPLOY / "slurm" / "submit.sbatch"
DASKJOB = DEPLOY / "kubernetes" / "daskjob.yaml"
PVC = DEPLOY / "kubernetes" / "pvc.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
README = DEPLOY / "README.md"

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def package_dir(name):
    """Folder of an installed package, found without importing it (dask-jobqueue and
    dask-kubernetes copy their defaults into the user's dask folder on import); skips when absent."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        pytest.skip(f"{name} is not installed (test extras)")
    return Path(spec.origin).parent


def load_yaml(path):
    with open(path) as fh:
        return yaml.safe_load(fh)


def env_with_venv(**extra):
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    env.pop("DASK_CONFIG", None)
    env.update(extra)
    return env


def pyproject():
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]


# ---------------------------------------------------------------- dask config


def dask_schema():
    """dask's and distributed's configuration schemas, as shipped in the installed packages, merged."""
    import dask
    import distributed

    merged = {"type": "object", "properties": {}}
    for package, name in ((dask, "dask-schema.yaml"), (distributed, "distributed-schema.yaml")):
        merged["properties"].update(load_yaml(Path(package.__file__).with_name(name))["properties"])
    return merged


def check_dask_config(doc, schema):
    """Problems of a dask configuration document: each key must be declared, each value valid.

    The schemas accept unknown keys; here every key must be a property the
    schema declares at that path (dask would also take ``_`` for ``-``:
    not here).  A value whose schema has properties is walked the same way;
    any other value is validated by jsonschema against its fragment.
    """
    problems = []

    def walk(node, fragment, path):
        props = fragment.get("properties")
        if props is None or not isinstance(node, dict):
            for error in jsonschema.Draft7Validator(fragment).iter_errors(node):
                problems.append(f"{path}: {error.message}")
            return
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in props:
                close = difflib.get_close_matches(str(key), list(props), n=1)
                problems.append(f"{where}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
                continue
            walk(value, props[key], where)

    if not isinstance(doc, dict):
        return [f"top level: expected a mapping, got {type(doc).__name__}"]
    walk(doc, schema, "")
    return problems


@pytest.fixture(scope="module")
def schema():
    return dask_schema()


@pytest.mark.parametrize("path", [DASK_SETTINGS, DASK_TLS], ids=lambda p: p.name)
def test_dask_settings_are_declared_in_dask_schemas(path, schema):
    assert check_dask_config(load_yaml(path), schema) == []


def test_recommended_dask_settings_are_the_documented_ones():
    doc = load_yaml(DASK_SETTINGS)["distributed"]
    assert doc["scheduler"]["allowed-failures"] >= 3
    assert doc["scheduler"]["worker-saturation"] == 1.0
    memory = doc["worker"]["memory"]
    assert memory["target"] is False
    assert 0 < memory["spill"] < memory["pause"] < memory["terminate"] < 1
    tls = load_yaml(DASK_TLS)["distributed"]["comm"]
    assert tls["require-encryption"] is True and tls["default-scheme"] == "tls"
    for role in ("scheduler", "worker", "client"):
        assert set(tls["tls"][role]) == {"cert", "key"}


def _mutate(doc, path, value=None, rename=None):
    node = doc
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if rename is not None:
        node[rename] = node.pop(last)
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    "source, path, value, rename, expected",
    [
        (DASK_SETTINGS, "distributed.scheduler.allowed-failures", None, "allowed-failure", "did you mean 'allowed-failures'"),
        (DASK_SETTINGS, "distributed.scheduler.allowed-failures", "five", None, "is not of type 'integer'"),
        (DASK_SETTINGS, "distributed.scheduler.worker-saturation", -1, None, "distributed.scheduler.worker-saturation"),
        (DASK_SETTINGS, "distributed.worker.memory.pause", 1.5, None, "distributed.worker.memory.pause"),
        (DASK_SETTINGS, "distributed.worker.memory.terminate", None, "terminate_at", "unknown key"),
        (DASK_SETTINGS, "distributed", None, "distributd", "did you mean 'distributed'"),
        (DASK_TLS, "distributed.comm.tls.ca-file", None, "ca_file", "did you mean 'ca-file'"),
        (DASK_TLS, "distributed.comm.tls.min-version", 1.1, None, "distributed.comm.tls.min-version"),
        (DASK_TLS, "distributed.comm.require-encryption", "yes please", None, "distributed.comm.require-encryption"),
    ],
)
def test_broken_dask_settings_fail_the_check(source, path, value, rename, expected, schema):
    broken = _mutate(load_yaml(source), path, value, rename)
    problems = check_dask_config(broken, schema)
    assert problems and any(expected in p for p in problems), problems


def test_dask_loads_the_recommended_settings():
    """dask itself reads the file through DASK_CONFIG, as the launcher and submit.py set it."""
    code = (
        "import dask, distributed; g = dask.config.get; "
        "print(g('distributed.scheduler.allowed-failures'), g('distributed.worker.memory.target'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env_with_venv(DASK_CONFIG=str(DASK_SETTINGS)),
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    doc = load_yaml(DASK_SETTINGS)["distributed"]
    assert out == [str(doc["scheduler"]["allowed-failures"]), str(doc["worker"]["memory"]["target"])]


# ------------------------------------------------------------ TLS certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    out = tmp_path_factory.mktemp("tls") / "certs"
    subprocess.run(["bash", str(MAKE_CERTS), str(out)], check=True, capture_output=True, timeout=60)
    return out


@needs_openssl
def test_certificates_verify_against_their_own_authority_only(certs, tmp_path):
    assert {p.name for p in certs.iterdir()} == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert (certs / "tls.key").stat().st_mode & 0o077 == 0
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(certs / "ca.crt"), str(certs / "tls.crt")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    other = tmp_path / "other"
    subprocess.run(["bash", str(MAKE_CERTS), str(other)], check=True, capture_output=True, timeout=60)
    foreign = subprocess.run(["openssl", "verify", "-CAfile", str(other / "ca.crt"), str(certs / "tls.crt")],
                             capture_output=True, text=True)
    assert foreign.returncode != 0
    # never overwrites, and refuses a bad argument
    again = subprocess.run(["bash", str(MAKE_CERTS), str(certs)], capture_output=True, text=True)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    assert subprocess.run(["bash", str(MAKE_CERTS)], capture_output=True).returncode == 2


# ---------------------------------------------------------------- local launcher


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    subprocess.run(
        [str(BIN / "stream-relu"), "simulate", str(path), "--features", "5", "--hidden", "2",
         "--samples", "50000", "--chunk-rows", "10000", "-q"],
        check=True, timeout=120, env=env_with_venv(),
    )
    return path


def session_processes(sid):
    """Live processes of a session (zombies excluded)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append((proc.pid, " ".join(proc.info["cmdline"] or [])))
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_launcher(*args, interrupt_after=None, **env):
    """Runs the launcher in a session of its own; returns (result, pids it reported, leftovers).

    With ``interrupt_after``, the launcher gets SIGTERM as soon as it prints
    a line containing that text.
    """
    proc = subprocess.Popen(
        ["bash", str(LAUNCHER), *map(str, args)], env=env_with_venv(**env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        if interrupt_after is None:
            out, err = proc.communicate(timeout=180)
        else:
            lines = []
            for line in proc.stderr:
                lines.append(line)
                if interrupt_after in line:
                    proc.send_signal(signal.SIGTERM)
                    break
            out, rest = proc.communicate(timeout=180)
            err = "".join(lines) + rest
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    pids = [int(p) for line in err.splitlines() for p in re.findall(r"\b(\d+)\b", line)
            if re.match(r"run-local\.sh: (scheduler|worker) pids? ", line)]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = session_processes(proc.pid) + [(p, "reported") for p in pids if alive(p)]
        if not left:
            break
        time.sleep(0.2)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), pids, left


@pytest.mark.slow
def test_local_launcher_fits_and_stops_every_process(small_store, tmp_path):
    from stream_relu import load_model

    out = tmp_path / "model.json"
    result, pids, left = run_launcher(small_store, out, 2, "--hidden", "2", "-q")
    assert result.returncode == 0, result.stderr
    assert len(pids) == 3, result.stderr  # the scheduler and two workers
    assert "has 2 worker(s)" in result.stderr and "scheduler tcp://127.0.0.1:" in result.stderr
    assert load_model(out).n_features == 5
    assert left == []


@pytest.mark.slow
def test_local_launcher_stops_every_process_when_the_fit_fails(tmp_path):
    out = tmp_path / "model.json"
    result, pids, left = run_launcher(tmp_path / "missing.zarr", out, 1, "-q")
    assert result.returncode == 3, result.stderr  # StoreNotFoundError's exit status
    assert "does not exist" in result.stderr
    assert len(pids) == 2 and left == []
    assert not out.exists()


@pytest.mark.slow
def test_local_launcher_stops_every_process_when_interrupted(small_store, tmp_path):
    out = tmp_path / "model.json"
    result, pids, left = run_launcher(small_store, out, 1, interrupt_after="has 1 worker(s)")
    assert result.returncode == 143, result.stderr  # stopped by SIGTERM during the fit
    assert len(pids) == 2 and left == []
    assert not out.exists()


@pytest.mark.slow
def test_local_launcher_over_tls(small_store, certs, tmp_path):
    out = tmp_path / "model.json"
    result, pids, left = run_launcher(small_store, out, 2, "--hidden", "2", "-q", TLS_DIR=str(certs))
    assert result.returncode == 0, result.stderr
    assert "scheduler tls://127.0.0.1:" in result.stderr
    assert out.exists() and len(pids) == 3 and left == []


def test_local_launcher_refuses_bad_arguments(tmp_path):
    assert run_launcher()[0].returncode == 2
    result, pids, left = run_launcher(tmp_path / "s.zarr", tmp_path / "m.json", 1, TLS_DIR=str(tmp_path))
    assert result.returncode == 2 and "has no ca.crt" in result.stderr
    assert pids == [] and left == []


# ---------------------------------------------------------------------- SLURM


def import_submit():
    package_dir("dask_jobqueue")
    spec = importlib.util.spec_from_file_location("stream_relu_deploy_submit", SUBMIT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_submit(*args, cwd, **env):
    return subprocess.run([sys.executable, str(SUBMIT), *map(str, args)], cwd=cwd, env=env_with_venv(**env),
                          capture_output=True, text=True, timeout=120)


def check_job_script(script, slurm):
    """Problems of a rendered worker job script against the jobqueue settings it came from."""
    from dask.utils import parse_bytes

    problems = []
    directives = [line[len("#SBATCH "):] for line in script.splitlines() if line.startswith("#SBATCH ")]
    submit = import_submit()
    wanted = [
        f"--cpus-per-task={slurm['cores']}",
        f"-t {slurm['walltime']}",
        f"-J {slurm['name']}",
        *slurm.get("job-extra-directives", []),
    ]
    problems += [f"missing #SBATCH {d}" for d in wanted if d not in directives]
    mem = [d for d in directives if d.startswith("--mem=")]
    if len(mem) != 1 or not mem[0].endswith("G"):
        problems.append(f"expected one --mem=<n>G directive, got {mem}")
    elif abs(parse_bytes(mem[0][6:] + "iB") - parse_bytes(slurm["memory"])) > 2**30:  # rounded to GiB
        problems.append(f"{mem[0]} does not match memory {slurm['memory']}")
    try:
        submit.walltime_seconds(next(d[3:] for d in directives if d.startswith("-t ")))
    except (StopIteration, submit.ConfigError) as exc:
        problems.append(f"walltime directive: {exc}")
    commands = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    if len(commands) != 1:
        return problems + [f"expected one dask worker command, got {commands}"]
    words = commands[0].split()
    python = slurm.get("python") or sys.executable
    if words[:3] != [python, "-m", "distributed.cli.dask_worker"]:
        problems.append(f"worker command starts {words[:3]}")
    options = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
    if options.get("--nthreads") != "1":
        problems.append("workers are not single-threaded (--nthreads 1)")
    if int(options.get("--nworkers", 1)) != slurm["processes"]:
        problems.append(f"--nworkers {options.get('--nworkers')} != processes {slurm['processes']}")
    if slurm.get("local-directory") and options.get("--local-directory") != slurm["local-directory"]:
        problems.append("--local-directory missing")
    return problems


@pytest.fixture(scope="module")
def slurm_config():
    package_dir("dask_jobqueue")
    return load_yaml(JOBQUEUE)


def test_jobqueue_config_is_valid_and_renders_the_job_script(slurm_config, tmp_path):
    submit = import_submit()
    assert submit.check_config(slurm_config)["cores"] == slurm_config["jobqueue"]["slurm"]["processes"]
    result = run_submit("--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert check_job_script(result.stdout, slurm_config["jobqueue"]["slurm"]) == []
    assert " tcp://" in result.stdout and "--lifetime" in result.stdout


@needs_openssl
def test_slurm_job_script_over_tls(slurm_config, certs, tmp_path):
    result = run_submit("--dry-run", "--tls-dir", certs, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert check_job_script(result.stdout, slurm_config["jobqueue"]["slurm"]) == []
    assert " tls://" in result.stdout
    for flag, name in (("--tls-ca-file", "ca.crt"), ("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")):
        assert f"{flag} {certs.resolve() / name}" in result.stdout


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda s: s.pop("memory"), "must set ['memory']"),
        (lambda s: s.update(walltime="2 hours"), "is not a SLURM time"),
        (lambda s: s.update(walltime="02:75:00"), "out of range"),
        (lambda s: s.update(walltim=s.pop("walltime")), "unknown jobqueue.slurm key(s) ['walltim']"),
        (lambda s: s.update(cores=16), "must equal processes"),
        (lambda s: s.update(memory="lots"), "is not a size"),
        (lambda s: s.update({"worker-extra-args": ["--lifetime", "3h"]}), "must end before the walltime"),
        (lambda s: s.update({"worker-extra-args": ["--nthreads", "4"]}), "must not set --nthreads"),
    ],
)
def test_broken_jobqueue_config_fails_the_check(slurm_config, edit, expected):
    submit = import_submit()
    broken = copy.deepcopy(slurm_config)
    edit(broken["jobqueue"]["slurm"])
    with pytest.raises(submit.ConfigError) as info:
        submit.check_config(broken)
    assert expected in str(info.value)


def test_broken_jobqueue_config_stops_submit(slurm_config, tmp_path):
    broken = copy.deepcopy(slurm_config)
    broken["jobqueue"]["slurm"]["walltime"] = "two hours"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = run_submit("--dry-run", "--config", path, cwd=tmp_path)
    assert result.returncode == 2 and "is not a SLURM time" in result.stderr
    assert "#SBATCH" not in result.stdout
    # and a rendered script that lost a directive fails its check
    good = run_submit("--dry-run", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    script = good.stdout.replace("#SBATCH --cpus-per-task=", "#SBATCH --cpus=")
    assert any("--cpus-per-task" in p for p in check_job_script(script, slurm_config["jobqueue"]["slurm"]))


def sbatch_directives(path):
    """The #SBATCH directives of a batch script as {option: value}; raises ValueError when malformed."""
    submit = import_submit()
    from dask.utils import parse_bytes

    text = Path(path).read_text()
    if not text.startswith("#!"):
        raise ValueError("no shebang line")
    found = {}
    for line in text.splitlines()[1:]:
        if not line.startswith("#SBATCH"):
            if line.strip() and not line.startswith("#"):
                break  # sbatch stops reading directives at the first command
            continue
        match = re.fullmatch(r"#SBATCH (--[a-z-]+)=(\S+)", line)
        if not match:
            raise ValueError(f"malformed directive {line!r}")
        found[match.group(1)] = match.group(2)
    try:
        submit.walltime_seconds(found["--time"])
        parse_bytes(found["--mem"] + "iB" if found["--mem"][-1] in "KMGT" else found["--mem"])
    except KeyError as exc:
        raise ValueError(f"missing {exc}") from None
    except submit.ConfigError as exc:
        raise ValueError(str(exc)) from None
    return found


def test_driver_batch_script_directives(tmp_path):
    found = sbatch_directives(SBATCH)
    assert found["--ntasks"] == "1"
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    broken = tmp_path / "broken.sbatch"
    broken.write_text(SBATCH.read_text().replace("#SBATCH --time=06:00:00", "#SBATCH --time=six hours"))
    with pytest.raises(ValueError, match="malformed directive"):
        sbatch_directives(broken)
    broken.write_text(SBATCH.read_text().replace("#SBATCH --time=06:00:00", "#SBATCH --time=6h"))
    with pytest.raises(ValueError, match="not a SLURM time"):
        sbatch_directives(broken)
    usage = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


FAKE_SBATCH = '''#!{python}
"""Test stand-in for sbatch: runs the job script on this machine in a session of its own."""
import os, pathlib, subprocess, sys
jobs = pathlib.Path(os.environ["FAKE_SLURM_DIR"])
n = len(list(jobs.glob("job-*.sh")))
script = jobs / f"job-{{n}}.sh"
script.write_text(pathlib.Path(sys.argv[-1]).read_text())
log = open(jobs / f"job-{{n}}.log", "w")
proc = subprocess.Popen(["bash", str(script)], stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, start_new_session=True)
with open(jobs / "submitted", "a") as fh:
    fh.write(f"{{proc.pid}}\\n")
print(f"Submitted batch job {{proc.pid}}")
'''

FAKE_SCANCEL = '''#!{python}
"""Test stand-in for scancel: stops the job's process group."""
import os, pathlib, signal, sys, time
jobs = pathlib.Path(os.environ["FAKE_SLURM_DIR"])
for job in sys.argv[1:]:
    try:
        os.killpg(int(job), signal.SIGTERM)
        for _ in range(100):
            time.sleep(0.1)
            os.killpg(int(job), 0)
        os.killpg(int(job), signal.SIGKILL)
    except ProcessLookupError:
        pass
    with open(jobs / "cancelled", "a") as fh:
        fh.write(f"{{job}}\\n")
'''


def group_alive(pgid):
    """Whether a live (not zombie) process of this process group remains."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


@pytest.mark.slow
def test_slurm_fit_end_to_end_with_stand_in_sbatch(slurm_config, small_store, tmp_path):
    """submit.sbatch -> submit.py -> dask-jobqueue -> sbatch; the jobs run here, the fit completes, scancel stops them."""
    from stream_relu import load_model

    fake = tmp_path / "fake-slurm"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (fake / name).write_text(text.format(python=sys.executable))
        (fake / name).chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    config = copy.deepcopy(slurm_config)
    config["jobqueue"]["slurm"].update(
        {"cores": 1, "processes": 1, "memory": "2GB", "python": sys.executable,
         "local-directory": str(tmp_path / "scratch")}
    )
    (tmp_path / "jobqueue.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "model.json"
    env = env_with_venv(FAKE_SLURM_DIR=str(fake), SLURM_SUBMIT_DIR=str(REPO), STREAM_RELU_VENV=str(venv))
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        ["bash", str(SBATCH), small_store, out, "--jobs", "1", "--hidden", "2", "--wait", "60",
         "--config", tmp_path / "jobqueue.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    logs = "".join(p.read_text() for p in sorted(fake.glob("job-*.log")))
    assert result.returncode == 0, result.stderr + logs
    assert load_model(out).n_features == 5
    submitted = (fake / "submitted").read_text().split()
    assert submitted and set(submitted) <= set((fake / "cancelled").read_text().split())
    deadline = time.monotonic() + 15
    while any(group_alive(int(j)) for j in submitted) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(group_alive(int(j)) for j in submitted)
    assert "--nthreads 1" in (fake / "job-0.sh").read_text()


# ----------------------------------------------------------------- Kubernetes


def _crd_path():
    """The DaskJob CRD the operator's Helm chart installs, as shipped in dask-kubernetes."""
    return (package_dir("dask_kubernetes") / "operator" / "deployment" / "helm"
            / "dask-kubernetes-operator" / "crds" / "daskjob.yaml")


def strict_json_schema(node):
    """An OpenAPI v3 structural schema as JSON Schema that refuses unknown fields.

    ``nullable`` allows null, ``x-kubernetes-int-or-string`` allows both,
    ``x-kubernetes-preserve-unknown-fields`` keeps an object open; every
    other object with declared properties is closed (the API server drops
    unknown fields, or refuses them under strict field validation).
    """
    if isinstance(node, list):
        return [strict_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def daskjob_crd():
    path = _crd_path()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path) as fh:
        return yaml.load(fh, Loader=loader)


def check_daskjob(doc, crd):
    """Problems of a DaskJob manifest against the operator's CRD and the conventions of this project."""
    problems = []
    spec = crd["spec"]
    served = {v["name"]: v for v in spec["versions"] if v.get("served")}
    group, kind = spec["group"], spec["names"]["kind"]
    if doc.get("kind") != kind:
        problems.append(f"kind {doc.get('kind')!r} is not {kind!r}")
    api_group, _, version = str(doc.get("apiVersion", "")).partition("/")
    if api_group != group or version not in served:
        return problems + [f"apiVersion {doc.get('apiVersion')!r} is not one of {[f'{group}/{v}' for v in served]}"]
    schema = strict_json_schema(served[version]["schema"]["openAPIV3Schema"])
    schema["properties"].update(
        apiVersion={"type": "string"},
        kind={"type": "string"},
        metadata={
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
    )
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
        where = ".".join(map(str, error.absolute_path)) or "top level"
        problems.append(f"{where}: {error.message}")
    return problems


def _containers(doc):
    spec = doc["spec"]
    return {
        "job": spec["job"]["spec"].get("initContainers", []) + spec["job"]["spec"]["containers"],
        "worker": spec["cluster"]["spec"]["worker"]["spec"]["containers"],
        "scheduler": spec["cluster"]["spec"]["scheduler"]["spec"]["containers"],
    }


def _pod_specs(doc):
    spec = doc["spec"]
    return {
        "job": spec["job"]["spec"],
        "worker": spec["cluster"]["spec"]["worker"]["spec"],
        "scheduler": spec["cluster"]["spec"]["scheduler"]["spec"],
    }


def _env(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _expand(args, env):
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def check_daskjob_wiring(doc):
    """Problems of the fit's wiring: the job's command, the scheduler address, TLS files, workers."""
    from stream_relu.cli import build_parser

    problems = []
    name = doc["metadata"]["name"]
    service = doc["spec"]["cluster"]["spec"]["scheduler"]["service"]
    ports = {p.get("name"): p["port"] for p in service["ports"]}
    if service.get("selector") != {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}:
        problems.append(f"the service selector does not pick the scheduler of cluster {name!r}")
    if "tcp-comm" not in ports:
        return problems + ["the scheduler service has no port named tcp-comm (the operator looks it up by name)"]
    tls_paths = {
        v
        for v in _walk_values(load_yaml(DASK_TLS))
        if isinstance(v, str) and v.startswith("/")
    }
    address = f"tls://{name}-scheduler:{ports['tcp-comm']}"
    pods = _pod_specs(doc)
    for role, containers in _containers(doc).items():
        volumes = {v["name"]: v for v in pods[role].get("volumes", [])}
        for c in containers:
            env = _env(c)
            if env.get("DASK_CONFIG") != "/opt/stream-relu/dask-tls.yaml":
                problems.append(f"{role}: DASK_CONFIG does not enable the image's TLS settings")
            if role != "scheduler" and env.get("DASK_SCHEDULER_ADDRESS") != address:
                problems.append(f"{role}: DASK_SCHEDULER_ADDRESS {env.get('DASK_SCHEDULER_ADDRESS')!r} != {address!r}")
            mounts = [
                m["mountPath"] for m in c.get("volumeMounts", [])
                if "secret" in volumes.get(m["name"], {})
            ]
            for path in sorted(tls_paths):
                if not any(path.startswith(m.rstrip("/") + "/") for m in mounts):
                    problems.append(f"{role}: {path} (deploy/dask/tls.yaml) is not on a mounted secret")
            provided = set(env) | ({"DASK_WORKER_NAME"} if role == "worker" else set())
            for ref in re.findall(r"\$\((\w+)\)", " ".join(c.get("args", []))):
                if ref not in provided:
                    problems.append(f"{role}: $({ref}) is not defined in the container's env")
    job = doc["spec"]["job"]["spec"]["containers"][0]
    replicas = doc["spec"]["cluster"]["spec"]["worker"].get("replicas", 1)
    for init in doc["spec"]["job"]["spec"].get("initContainers", []):
        if init.get("args", [])[:2] == ["python", "-c"]:
            try:
                compile(init["args"][2], init["name"], "exec")
            except SyntaxError as exc:
                problems.append(f"initContainer {init['name']}: {exc}")
        if _env(init).get("WORKERS") != str(replicas):
            problems.append(f"initContainer {init['name']} waits for {_env(init).get('WORKERS')} workers, not {replicas}")
    args = _expand(job.get("args", []), _env(job))
    if args[:2] != ["stream-relu", "fit"]:
        problems.append(f"the job runs {args[:2]}, not stream-relu fit")
    else:
        try:
            parsed = build_parser().parse_args(args[1:])
        except SystemExit:
            return problems + [f"stream-relu does not accept {args[1:]}"]
        if parsed.scheduler != address:
            problems.append(f"the fit connects to {parsed.scheduler!r}, not {address!r}")
        if not re.match(r"^[a-z0-9]+://", parsed.store):
            problems.append(f"the store {parsed.store!r} is not an object-store URL")
        try:
            if not isinstance(json.loads(parsed.storage_options or "{}"), dict):
                raise ValueError
        except ValueError:
            problems.append("--storage-options is not a JSON object")
        job_mounts = [m["mountPath"] for m in job.get("volumeMounts", [])]
        if not any(parsed.out.startswith(m.rstrip("/") + "/") for m in job_mounts):
            problems.append(f"the model {parsed.out} is not written to a mounted volume")
    if pods["job"].get("restartPolicy") != "Never":
        problems.append("the job pod must not restart a finished fit (restartPolicy: Never)")
    worker_args = [str(a) for a in doc["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"][0].get("args", [])]
    if worker_args[:2] != ["dask", "worker"] or "--nthreads" not in worker_args \
            or worker_args[worker_args.index("--nthreads") + 1] != "1":
        problems.append("workers must be `dask worker ... --nthreads 1`")
    return problems


def _walk_values(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk_values(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_values(v)
    else:
        yield node


def test_daskjob_is_valid_against_the_operator_crd(daskjob_crd):
    doc = load_yaml(DASKJOB)
    assert check_daskjob(doc, daskjob_crd) == []
    assert check_daskjob_wiring(doc) == []


def test_daskjob_wait_for_workers_snippet_runs():
    """The job's init container returns once the cluster has its workers (here: a local one, tcp)."""
    from distributed import LocalCluster

    init = load_yaml(DASKJOB)["spec"]["job"]["spec"]["initContainers"][0]
    assert init["args"][:2] == ["python", "-c"]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        env = env_with_venv(DASK_SCHEDULER_ADDRESS=cluster.scheduler_address, WORKERS="1")
        done = subprocess.run([sys.executable, "-c", init["args"][2]], env=env, capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_daskjob_names_the_crd_version_it_was_checked_against():
    from importlib.metadata import version as installed_version

    package_dir("dask_kubernetes")
    version = installed_version("dask-kubernetes")
    assert f"dask-kubernetes {version}" in DASKJOB.read_text()
    assert f"--version {version}" in README.read_text()


def _set(doc, path, value=None, delete=False):
    node = doc
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        last = int(last)
    if delete:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    "path, value, delete, expected",
    [
        ("spec.cluster", None, True, "'cluster' is a required property"),
        ("spec.cluster.spec.worker.replicas", "two", False, "'two' is not of type 'integer'"),
        ("spec.cluster.spec.worker.replica", 4, False, "('replica' was unexpected)"),
        ("spec.cluster.spec.scheduler.service", None, True, "'service' is a required property"),
        ("spec.cluster.spec.scheduler.service.ports.0.targetPort", 8786, False, "is not of type 'string'"),
        ("spec.job.spec.containers.0.name", None, True, "'name' is a required property"),
        ("spec.job.spec.containers.0.resources.limits.memory", 2, False, "is not of type 'string'"),
        ("apiVersion", "kubernetes.dask.org/v2", False, "apiVersion"),
        ("kind", "DaskCluster", False, "kind 'DaskCluster'"),
        ("metadata.name", "Stream_Relu", False, "does not match"),
    ],
)
def test_broken_daskjob_fails_validation(daskjob_crd, path, value, delete, expected):
    broken = _set(load_yaml(DASKJOB), path, value, delete)
    problems = check_daskjob(broken, daskjob_crd)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("spec.job.spec.containers.0.env.0.value", "tcp://stream-relu-fit-scheduler:8786", "DASK_SCHEDULER_ADDRESS"),
        ("metadata.name", "another-fit", "DASK_SCHEDULER_ADDRESS"),
        ("spec.job.spec.containers.0.args.1", "fitt", "not stream-relu fit"),
        ("spec.job.spec.containers.0.args.8", "{not json", "JSON object"),
        ("spec.job.spec.restartPolicy", "OnFailure", "restartPolicy"),
        ("spec.cluster.spec.worker.spec.containers.0.args.6", "4", "--nthreads 1"),
        ("spec.cluster.spec.worker.spec.containers.0.volumeMounts.0.mountPath", "/etc/tls", "mounted secret"),
        ("spec.cluster.spec.scheduler.spec.containers.0.env.0.value", "/etc/dask/x.yaml", "DASK_CONFIG"),
        ("spec.cluster.spec.worker.replicas", 8, "waits for 4 workers, not 8"),
        ("spec.job.spec.initContainers.0.args.2", "import os\nwith Client(:", "initContainer wait-for-workers"),
        ("spec.job.spec.initContainers.0.volumeMounts", [], "mounted secret"),
    ],
)
def test_miswired_daskjob_fails_the_wiring_check(path, value, expected):
    broken = _set(load_yaml(DASKJOB), path, value)
    problems = check_daskjob_wiring(broken)
    assert any(expected in p for p in problems), problems


def check_k8s_object(doc, model):
    """Problems of a core Kubernetes object against the kubernetes client's API models (unknown fields, types)."""
    client = pytest.importorskip("kubernetes.client")
    problems = []

    def walk(value, kind, path):
        if kind.startswith(("List[", "list[")):
            if not isinstance(value, list):
                return problems.append(f"{path}: expected a list")
            for i, v in enumerate(value):
                walk(v, kind[5:-1], f"{path}.{i}")
        elif kind.startswith(("Dict[", "dict(", "dict[")):  # the spelling differs between client releases
            if not isinstance(value, dict):
                return problems.append(f"{path}: expected a mapping")
            inner = kind[5:-1].split(",", 1)[1].strip()
            for k, v in value.items():
                walk(v, inner, f"{path}.{k}")
        elif kind in ("str", "datetime"):
            if not isinstance(value, str):
                problems.append(f"{path}: {value!r} is not a string")
        elif kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{path}: {value!r} is not an integer")
        elif kind == "bool":
            if not isinstance(value, bool):
                problems.append(f"{path}: {value!r} is not a boolean")
        elif kind == "object":
            pass
        else:
            cls = getattr(client, kind)
            if not isinstance(value, dict):
                return problems.append(f"{path}: expected a {kind} mapping")
            fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
            for key, v in value.items():
                if key not in fields:
                    close = difflib.get_close_matches(key, list(fields), n=1)
                    problems.append(f"{path}.{key}: unknown field of {kind}" + (f" (did you mean {close[0]!r}?)" if close else ""))
                else:
                    walk(v, cls.openapi_types[fields[key]], f"{path}.{key}")

    walk(doc, model, doc.get("kind", "object"))
    if not problems:
        try:  # required fields: the models refuse to be built without them
            client.ApiClient()._ApiClient__deserialize(doc, model)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def test_volume_claim_is_a_valid_kubernetes_object():
    pytest.importorskip("kubernetes")
    doc = load_yaml(PVC)
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "PersistentVolumeClaim")
    assert check_k8s_object(doc, "V1PersistentVolumeClaim") == []
    claims = [v["persistentVolumeClaim"]["claimName"] for v in _pod_specs(load_yaml(DASKJOB))["job"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == [doc["metadata"]["name"]]


@pytest.mark.parametrize(
    "path, value, delete, expected",
    [
        ("spec.accessMode", ["ReadWriteOnce"], False, "unknown field"),
        ("spec.resources.requests.storage", 1, False, "is not a string"),
        ("spec.accessModes", "ReadWriteOnce", False, "expected a list"),
    ],
)
def test_broken_volume_claim_fails_the_check(path, value, delete, expected):
    pytest.importorskip("kubernetes")
    broken = _set(load_yaml(PVC), path, value, delete)
    problems = check_k8s_object(broken, "V1PersistentVolumeClaim")
    assert any(expected in p for p in problems), problems


# --------------------------------------------------------------------- Docker


def parse_dockerfile(text):
    """The facts the checks need: image, FROM, ARG defaults, labels, pins, COPY lines, USER."""
    lines = text.replace("\\\n", " ").splitlines()
    facts = {"image": None, "from": None, "args": {}, "labels": {}, "pins": {}, "copies": [], "user": None}
    for line in lines:
        stripped = line.strip()
        match = re.match(r"#\s*image:\s*(\S+)$", stripped)
        if match:
            facts["image"] = match.group(1)
        if not stripped or stripped.startswith("#"):
            continue
        instruction, _, rest = stripped.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            facts["from"] = rest.split()[0]
        elif instruction == "ARG":
            name, _, default = rest.partition("=")
            facts["args"][name.strip()] = default.strip()
        elif instruction == "LABEL":
            for key, value in re.findall(r'(\S+?)="([^"]*)"', rest):
                facts["labels"][key] = re.sub(r"\$\{(\w+)\}", lambda m: facts["args"].get(m.group(1), ""), value)
        elif instruction == "RUN" and "pip install" in rest:
            for name, version in re.findall(r"(?<![\w.-])([A-Za-z][\w.-]*(?:\[[\w,]+\])?)==([\w.]+)", rest):
                facts["pins"][re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version
        elif instruction == "COPY":
            words = [w for w in rest.split() if not w.startswith("--")]
            facts["copies"].append((words[:-1], words[-1]))
        elif instruction == "USER":
            facts["user"] = rest.strip()
    return facts


def manifest_images(doc):
    return sorted({c["image"] for containers in _containers(doc).values() for c in containers})


def check_image_consistency(dockerfile_text, daskjob_doc, dockerignore_text):
    """Problems between the Dockerfile, pyproject.toml and the manifests."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    problems = []
    facts = parse_dockerfile(dockerfile_text)
    project = pyproject()
    version = project["version"]
    image = facts["image"] or ""
    if not re.fullmatch(r"[a-z0-9.-]+(/[a-z0-9._-]+)+:[\w.-]+", image):
        return [f"the Dockerfile documents no image name:tag ('# image: ...'), got {image!r}"]
    if image.rsplit(":", 1)[1] != version:
        problems.append(f"image tag {image.rsplit(':', 1)[1]} != package version {version}")
    if facts["args"].get("STREAM_RELU_VERSION") != version:
        problems.append(f"ARG STREAM_RELU_VERSION {facts['args'].get('STREAM_RELU_VERSION')} != {version}")
    if facts["labels"].get("org.opencontainers.image.version") != version:
        problems.append("LABEL org.opencontainers.image.version disagrees with the package version")
    base = re.fullmatch(r"python:(\d+\.\d+)-slim", facts["from"] or "")
    if not base or base.group(1) + ".0" not in SpecifierSet(project["requires-python"]):
        problems.append(f"base image {facts['from']} does not satisfy requires-python {project['requires-python']}")
    for line in project["dependencies"]:
        req = Requirement(line)
        names = [req.name.lower()] + [e.lower() for e in req.extras]
        for name in names:
            pin = facts["pins"].get(name)
            if name in ("dask", "distributed", "zarr") and pin is None:
                problems.append(f"{name} is not pinned in the image")
            if pin is not None and name == req.name.lower() and pin not in req.specifier:
                problems.append(f"{name}=={pin} does not satisfy pyproject's {line!r}")
    pins = facts["pins"]
    if pins.get("dask") != pins.get("distributed"):
        problems.append(f"dask {pins.get('dask')} and distributed {pins.get('distributed')} must be the same release")
    if "s3fs" in pins and pins.get("fsspec") != pins["s3fs"]:
        problems.append(f"s3fs {pins['s3fs']} needs fsspec of the same release, got {pins.get('fsspec')}")
    for found in manifest_images(daskjob_doc):
        if found != image:
            problems.append(f"the DaskJob runs {found}, the Dockerfile builds {image}")
    uid = (facts["user"] or "").split(":")[0]
    for role, pod in _pod_specs(daskjob_doc).items():
        if str(pod.get("securityContext", {}).get("runAsUser")) != uid:
            problems.append(f"{role}: runAsUser is not the image's USER {uid}")
    allowed = [p[1:].rstrip("/") for p in dockerignore_text.split() if p.startswith("!")]
    destinations = {}
    for sources, dest in facts["copies"]:
        for src in sources:
            if not (REPO / src).exists():
                problems.append(f"COPY {src}: no such file in the repository")
            if not any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed):
                problems.append(f"COPY {src}: excluded by Dockerfile.dockerignore")
            destinations[src] = dest
    if not destinations.get("deploy/dask/stream-relu.yaml", "").startswith("/etc/dask/"):
        problems.append("deploy/dask/stream-relu.yaml is not copied to /etc/dask/")
    dask_config = {_env(c).get("DASK_CONFIG") for cs in _containers(daskjob_doc).values() for c in cs}
    if dask_config != {destinations.get("deploy/dask/tls.yaml")}:
        problems.append(f"the manifest's DASK_CONFIG {dask_config} is not where the image keeps tls.yaml")
    return problems


@pytest.fixture(scope="module")
def image_files():
    pytest.importorskip("packaging")
    return DOCKERFILE.read_text(), load_yaml(DASKJOB), DOCKERIGNORE.read_text()


def test_image_name_and_versions_agree(image_files):
    dockerfile, daskjob, ignore = image_files
    assert check_image_consistency(dockerfile, daskjob, ignore) == []
    facts = parse_dockerfile(dockerfile)
    assert {"dask", "distributed", "zarr", "s3fs"} <= set(facts["pins"])
    assert "ENTRYPOINT" in dockerfile and facts["user"].split(":")[0] != "0"


@pytest.mark.parametrize(
    "target, old, new, expected",
    [
        ("manifest", ":0.1.0", ":0.0.9", "the DaskJob runs ghcr.io/example/stream-relu:0.0.9"),
        ("dockerfile", "ARG STREAM_RELU_VERSION=0.1.0", "ARG STREAM_RELU_VERSION=0.2.0", "ARG STREAM_RELU_VERSION"),
        ("dockerfile", "# image: ghcr.io/example/stream-relu:0.1.0", "# image: ghcr.io/example/stream-relu:latest", "image tag latest"),
        ("dockerfile", "dask==2026.8.0", "dask==2024.1.0", "does not satisfy pyproject"),
        ("dockerfile", "distributed==2026.8.0", "distributed==2026.7.0", "must be the same release"),
        ("dockerfile", "FROM python:3.11-slim", "FROM python:3.10-slim", "requires-python"),
        ("dockerfile", "USER 1000:1000", "USER 1001:1001", "runAsUser"),
        ("dockerfile", "/opt/stream-relu/dask-tls.yaml", "/opt/stream-relu/tls.yaml", "DASK_CONFIG"),
        ("ignore", "!deploy/dask/tls.yaml", "", "excluded by Dockerfile.dockerignore"),
    ],
)
def test_mismatched_image_fails_the_check(image_files, target, old, new, expected):
    dockerfile, daskjob, ignore = image_files
    if target == "manifest":
        text = DASKJOB.read_text()
        assert old in text
        daskjob = yaml.safe_load(text.replace(old, new, 1))
    elif target == "dockerfile":
        assert old in dockerfile
        dockerfile = dockerfile.replace(old, new)
    else:
        assert old in ignore
        ignore = ignore.replace(old, new)
    problems = check_image_consistency(dockerfile, daskjob, ignore)
    assert any(expected in p for p in problems), problems


# --------------------------------------------------------------------- README


def test_deploy_readme_covers_every_file():
    text = README.read_text()
    files = [p.relative_to(REPO).as_posix() for p in DEPLOY.rglob("*") if p.is_file() and p != README
             and "__pycache__" not in p.parts]
    assert files
    missing = [f for f in files if f not in text]
    assert missing == []
    named = set(re.findall(r"deploy/[\w./-]+[\w]", text))
    assert [n for n in sorted(named) if not (REPO / n).exists()] == []
    for topic in ("SLURM", "Kubernetes", "Docker", "TLS", "--storage-options", "s3://"):
        assert topic in text
