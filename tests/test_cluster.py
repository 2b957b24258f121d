"""Real clusters: `dask scheduler` and `dask worker` processes on 127.0.0.1, a killed worker,
a killed driver resumed from --state, and appended rows picked up by the next fit.

Disruptions are made reliable by slowing the workers' chunk tasks: workers
start with ``--preload tests/slow_chunks.py``, which makes every chunk task
sleep STREAM_RELU_TEST_CHUNK_DELAY seconds (test code only; the package has
no such setting), and every test asserts that the disruption really happened
mid-run.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import stream_relu as sr
from conftest import planted_data, stop_processes
from stream_relu.checkpoint import CheckpointMismatchError
from stream_relu.data import append_rows

D, M, N, CHUNK = 5, 2, 120_000, 10_000  # 12 chunks
BIN = os.path.dirname(sys.executable)
SLOW_CHUNKS = str(Path(__file__).with_name("slow_chunks.py"))


def _env(delay=0.0):
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["STREAM_RELU_TEST_CHUNK_DELAY"] = str(delay)
    return env


class Cluster:
    """A scheduler and workers as separate OS processes (no mocks)."""

    def __init__(self, tmp, n_workers=2, delay=0.0):
        self.tmp = Path(tmp)
        self.file = self.tmp / "scheduler.json"
        env = _env(delay)
        log = open(self.tmp / "cluster.log", "ab")
        self.scheduler = subprocess.Popen(
            [os.path.join(BIN, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--dashboard-address", ":0", "--scheduler-file", str(self.file)],
            env=env, stdout=log, stderr=log,
        )
        deadline = time.time() + 60
        while not self.file.exists() and time.time() < deadline:
            time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [
            subprocess.Popen(
                [os.path.join(BIN, "dask"), "worker", self.address, "--nthreads", "1", "--no-nanny",
                 "--dashboard-address", ":0", "--host", "127.0.0.1", "--preload", SLOW_CHUNKS],
                env=env, stdout=log, stderr=log,
            )
            for _ in range(n_workers)
        ]
        from distributed import Client

        with Client(self.address, timeout=60) as c:
            c.wait_for_workers(n_workers, timeout=60)

    def close(self):
        # workers first: terminated together with the scheduler, a worker can hang in its close
        stop_processes(self.workers)
        stop_processes([self.scheduler])


@pytest.fixture(scope="module")
def store(make_store):
    return make_store(D, M, N, CHUNK, seed=6)


@pytest.fixture
def slow_cluster(tmp_path):
    c = Cluster(tmp_path, n_workers=2, delay=0.25)
    yield c
    c.close()


def _prefix_arrays(state_dir, kind):
    (pass_dir,) = [p for p in Path(state_dir).iterdir() if p.is_dir() and p.name.startswith(kind)]
    with np.load(io.BytesIO((pass_dir / "prefix.npz").read_bytes()), allow_pickle=False) as z:
        return {k: z[k].copy() for k in z.files}


def _same_bits(a, b):
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def _fit_cmd(store, out, state, scheduler, *extra):
    return [os.path.join(BIN, "stream-relu"), "fit", store, "--out", str(out), "--hidden", str(M),
            "--scheduler", scheduler, "--state", str(state), "--json", "-q", *extra]


def _chunk_records(state_dir):
    return len(list(Path(state_dir).glob("gauss-*/chunk-*.json")))


def _kill_driver_and_resume(cmd, out, ready, wait=120):
    """Start the fit ``cmd``, SIGKILL its driver once ``ready()``, rerun it: the rerun's ``run`` report."""
    driver = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + wait
    while not ready() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=10)
    assert not Path(out).exists()  # it died before the end
    run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)["run"]


def _reference(store, tmp_path):
    ref_state = tmp_path / "ref-state"
    result = sr.fit(store, n_hidden=M, scheduler="synchronous", state=str(ref_state), progress=False)
    result.model.save(tmp_path / "ref.json")
    return ref_state, (tmp_path / "ref.json").read_bytes()


@pytest.mark.slow
def test_cli_and_api_against_real_processes(store, tmp_path):
    path, truth = store
    cluster = Cluster(tmp_path, n_workers=2)
    try:
        out = tmp_path / "m.json"
        run = subprocess.run(
            [os.path.join(BIN, "stream-relu"), "fit", path, "--out", str(out), "--hidden", str(M),
             "--scheduler", cluster.address, "-q"],
            env=_env(), capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, run.stderr
        api = sr.fit(path, n_hidden=M, scheduler=cluster.address, progress=False)
        api.model.save(tmp_path / "api.json")
        assert out.read_bytes() == (tmp_path / "api.json").read_bytes()
        assert sr.evaluate(api.model, truth)["rel_test_mse"] < 1e-10
    finally:
        cluster.close()


@pytest.mark.slow
def test_killed_worker_changes_nothing(store, tmp_path, slow_cluster):
    path, _ = store
    ref_state, ref_model = _reference(path, tmp_path)
    state = tmp_path / "state"
    fit = subprocess.Popen(_fit_cmd(path, tmp_path / "m.json", state, slow_cluster.address),
                           env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while _chunk_records(state) < 3 and time.time() < deadline:
        time.sleep(0.05)
    done_at_kill = _chunk_records(state)
    victim = slow_cluster.workers[0]
    os.kill(victim.pid, signal.SIGKILL)
    out, err = fit.communicate(timeout=300)
    assert fit.returncode == 0, err
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert 3 <= done_at_kill < N // CHUNK  # killed mid-run
    assert _same_bits(_prefix_arrays(state, "gauss"), _prefix_arrays(ref_state, "gauss"))
    assert _same_bits(_prefix_arrays(state, "subspace"), _prefix_arrays(ref_state, "subspace"))
    assert int(_prefix_arrays(state, "gauss")["count"]) == N  # no chunk counted twice
    assert (tmp_path / "m.json").read_bytes() == ref_model


@pytest.mark.slow
def test_killed_driver_resumes_bitwise(store, tmp_path, slow_cluster):
    path, _ = store
    ref_state, ref_model = _reference(path, tmp_path)
    state = tmp_path / "state"
    cmd = _fit_cmd(path, tmp_path / "m.json", state, slow_cluster.address)
    run = _kill_driver_and_resume(cmd, tmp_path / "m.json",
                                  lambda: _chunk_records(state) + len(list(Path(state).glob("gauss-*/prefix.json"))) >= 4)
    reused = run["pass1_reused_chunks"]
    assert 0 < reused < N // CHUNK  # resumed mid-run, computed only what was missing
    assert _same_bits(_prefix_arrays(state, "gauss"), _prefix_arrays(ref_state, "gauss"))
    assert (tmp_path / "m.json").read_bytes() == ref_model


def test_appended_rows_equal_a_fresh_fit(store, tmp_path):
    path, truth = store
    part = str(tmp_path / "part.zarr")
    sr.simulate_store(part, truth=truth, n_samples=65_000, seed=6, chunk_rows=CHUNK)
    state = tmp_path / "state"
    first = sr.fit(part, n_hidden=M, scheduler="synchronous", state=str(state), progress=False)
    assert first.run["pass1_reused_chunks"] == 0
    x, y = sr.open_store(path).read_rows(65_000, N)
    assert append_rows(part, x, y) == N
    second = sr.fit(part, n_hidden=M, scheduler="synchronous", state=str(state), progress=False)
    # chunks 0-5 are full and reused; chunk 6 grew from 5,000 rows and is recomputed; pass 2's
    # inputs changed, so it is recomputed whole
    assert second.run["pass1_reused_chunks"] == 6 and second.run["pass2_reused_chunks"] == 0
    ref_state, ref_model = _reference(path, tmp_path)
    assert _same_bits(_prefix_arrays(state, "gauss"), _prefix_arrays(ref_state, "gauss"))
    assert _same_bits(_prefix_arrays(state, "subspace"), _prefix_arrays(ref_state, "subspace"))
    # the model file differs only in the store's identity (another path); parameters and
    # diagnostics are bitwise the same
    fresh = json.loads(ref_model)
    appended = json.loads(json.dumps(second.model.to_dict()))
    for key in ("a", "W", "b", "u", "c", "diagnostics"):
        assert appended[key] == fresh[key]


def test_uncommitted_rows_are_not_read(store, tmp_path):
    path, truth = store
    part = str(tmp_path / "part.zarr")
    sr.simulate_store(part, truth=truth, n_samples=30_000, seed=6, chunk_rows=CHUNK)
    import zarr

    g = zarr.open_group(part, mode="r+")
    g.attrs["committed_rows"] = 30_000
    g["x"].resize((40_000, D))  # a crashed append: rows landed, never committed
    g["y"].resize((40_000,))
    opened = sr.open_store(part)
    assert opened.n_samples == 30_000 and any("committed rows" in note for note in opened.notes)


def test_resume_refuses_another_store_or_a_changed_one(store, tmp_path, make_store):
    path, truth = store
    state = tmp_path / "state"
    sr.fit(path, n_hidden=M, scheduler="synchronous", state=str(state), refine_model=False, progress=False)
    other, _ = make_store(D + 1, M, 20_000, CHUNK)
    with pytest.raises(CheckpointMismatchError, match="another store or other settings"):
        sr.fit(other, n_hidden=M, scheduler="synchronous", state=str(state), progress=False)
    with pytest.raises(CheckpointMismatchError, match="other settings"):
        sr.fit(path, n_hidden=M, scheduler="synchronous", state=str(state), nonfinite="skip", progress=False)
    copy = str(tmp_path / "copy.zarr")
    sr.simulate_store(copy, truth=truth, n_samples=N, seed=6, chunk_rows=CHUNK)
    state2 = tmp_path / "state2"
    sr.fit(copy, n_hidden=M, scheduler="synchronous", state=str(state2), refine_model=False, progress=False)
    sr.simulate_store(copy, truth=truth, n_samples=N, seed=7, chunk_rows=CHUNK, overwrite=True)  # new content
    with pytest.raises(CheckpointMismatchError, match="changed since the state was written"):
        sr.fit(copy, n_hidden=M, scheduler="synchronous", state=str(state2), progress=False)


def test_state_files_are_not_pickles_and_carry_checksums(store, tmp_path):
    path, _ = store
    state = tmp_path / "state"
    sr.fit(path, n_hidden=M, scheduler="synchronous", state=str(state), refine_model=False, progress=False)
    for npz in state.rglob("*.npz"):
        with np.load(npz, allow_pickle=False) as z:  # raises if any array needed pickle
            assert all(z[k].dtype != object for k in z.files)
        meta = json.loads(npz.with_suffix(".json").read_text())
        assert len(meta["sha256"]) == 64
    # a corrupted record is detected and recomputed, never used
    prefix = next(state.glob("gauss-*/prefix.npz"))
    raw = bytearray(prefix.read_bytes())
    raw[-20] ^= 0xFF
    prefix.write_bytes(bytes(raw))
    again = sr.fit(path, n_hidden=M, scheduler="synchronous", state=str(state), refine_model=False, progress=False)
    assert again.run["pass1_reused_chunks"] == 0


def test_state_with_a_single_partial_chunk(tmp_path):
    import zarr

    path = str(tmp_path / "small.zarr")
    x, y, _ = planted_data(5_000, 3, 1, seed=1)
    g = zarr.open_group(path, mode="w")
    g.create_array("x", shape=x.shape, chunks=(8_000, 3), dtype="f8")[...] = x  # one chunk, 5,000 of 8,000 rows
    g.create_array("y", shape=(5_000,), chunks=(8_000,), dtype="f8")[...] = y
    state = str(tmp_path / "state")
    first = sr.fit(path, n_hidden=1, scheduler="synchronous", state=state, refine_model=False, progress=False)
    again = sr.fit(path, n_hidden=1, scheduler="synchronous", state=state, refine_model=False, progress=False)
    # the only chunk is partial: kept as a chunk record (not in a prefix) and reused
    assert first.run["pass1_reused_chunks"] == 0 and again.run["pass1_reused_chunks"] == 1
    np.testing.assert_array_equal(first.model.W, again.model.W)


# Full-data refinement passes: noisy labels and in-memory rows well under the store's, so the fit
# makes passes over every row after the moment passes (checkpointed as refine-* in the state folder).
REFINE_ARGS = ("--refine-rows", "20000", "--refine-rows-max", "30000")


@pytest.fixture(scope="module")
def noisy_store(make_store):
    return make_store(D, M, N, CHUNK, seed=6, noise=0.3)


def _refine_prefixes(state_dir):
    out = {}
    for pass_dir in sorted(Path(state_dir).glob("refine-*")):
        with np.load(io.BytesIO((pass_dir / "prefix.npz").read_bytes()), allow_pickle=False) as z:
            out[pass_dir.name] = {k: z[k].copy() for k in z.files}
    return out


def _refine_reference(path, tmp_path):
    ref_state = tmp_path / "ref-state"
    result = sr.fit(path, n_hidden=M, scheduler="synchronous", state=str(ref_state), progress=False,
                    refine_rows=20_000, refine_rows_max=30_000)
    assert result.run["refine_passes"] >= 1
    result.model.save(tmp_path / "ref.json")
    return ref_state, (tmp_path / "ref.json").read_bytes()


def _refine_records(state_dir):
    """Chunks of refinement passes kept so far: chunk records plus the chunks folded into prefixes."""
    folded = 0
    for prefix in Path(state_dir).glob("refine-*/prefix.json"):
        try:
            folded += json.loads(prefix.read_text())["k"]
        except (ValueError, KeyError, OSError):  # being written
            pass
    return len(list(Path(state_dir).glob("refine-*/chunk-*.json"))) + folded


@pytest.mark.slow
def test_refinement_passes_survive_a_killed_worker_and_a_killed_driver_bitwise(noisy_store, tmp_path, slow_cluster):
    path, _ = noisy_store
    ref_state, ref_model = _refine_reference(path, tmp_path)
    # a worker killed during a refinement pass: the other worker finishes it; the same bits
    state = tmp_path / "state-worker"
    fit = subprocess.Popen(_fit_cmd(path, tmp_path / "m.json", state, slow_cluster.address, *REFINE_ARGS),
                           env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while _refine_records(state) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert _refine_records(state) >= 2  # the kill lands inside the first refinement pass
    victim = slow_cluster.workers[0]
    os.kill(victim.pid, signal.SIGKILL)
    out, err = fit.communicate(timeout=300)
    assert fit.returncode == 0, err
    assert _refine_prefixes(state).keys() == _refine_prefixes(ref_state).keys()
    assert all(_same_bits(a, b) for a, b in zip(_refine_prefixes(state).values(), _refine_prefixes(ref_state).values()))
    assert (tmp_path / "m.json").read_bytes() == ref_model
    assert json.loads(out)["run"]["refine_passes"] >= 1


@pytest.mark.slow
def test_killed_driver_during_a_refinement_pass_resumes_bitwise(noisy_store, tmp_path):
    path, _ = noisy_store
    ref_state, ref_model = _refine_reference(path, tmp_path)
    cluster = Cluster(tmp_path, n_workers=1, delay=0.25)  # 1 worker here, 2 in the test above, 0 in the reference
    try:
        state = tmp_path / "state"
        cmd = _fit_cmd(path, tmp_path / "m.json", state, cluster.address, *REFINE_ARGS)
        reused = _kill_driver_and_resume(cmd, tmp_path / "m.json", lambda: _refine_records(state) >= 3, wait=180)
        assert reused["pass1_reused_chunks"] == N // CHUNK and 3 <= reused["refine_reused_chunks"]
        assert all(_same_bits(a, b) for a, b in zip(_refine_prefixes(state).values(), _refine_prefixes(ref_state).values()))
        assert (tmp_path / "m.json").read_bytes() == ref_model
    finally:
        cluster.close()
