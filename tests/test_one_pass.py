"""One data pass after a pilot: same answer as two passes, bitwise reproducible, resumable, re-planned when the pilot is poor."""

import shutil

import numpy as np
import pytest

import stream_relu as sr
import stream_relu.settings as settings
from stream_relu.data import append_rows

D, M, N, CHUNK = 8, 3, 200_000, 12_500


@pytest.fixture(scope="module")
def store(make_store):
    return make_store(D, M, N, CHUNK, seed=5)


@pytest.fixture
def small_pilot(monkeypatch):
    # Stores of the test suite are small: a pilot of the first 2 of the 16 chunks.
    monkeypatch.setattr(settings, "PILOT_MIN_ROWS", 25_000)


def test_one_pass_agrees_with_two_passes(store, small_pilot):
    path, truth = store
    one = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False)
    two = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False, two_pass=True)
    assert one.run["data_passes"] == 1 and one.run["pilot_chunks"] == 2
    assert two.run["data_passes"] == 2 and two.run["pilot_chunks"] == 0
    assert one.run["pilot_span_sine"] < settings.PILOT_MAX_SIN
    assert one.diagnostics["moments"]["data_passes"] == 1
    # Moment stage: both read every row for every moment; they differ by the
    # control variates' constants and float32 rounding, far below the
    # sampling error (a few degrees at this n), so 1 degree is a loose bound.
    for result in (one, two):
        metrics = sr.evaluate(result.moment_model, truth)
        assert metrics["max_angle_deg"] < 5.0
        assert sr.evaluate(result.model, truth)["rel_test_mse"] < 1e-10
    ang = np.degrees(np.arccos(np.clip(np.abs(np.sum(one.moment_model.W * two.moment_model.W, axis=0))
                                       / np.linalg.norm(one.moment_model.W, axis=0)
                                       / np.linalg.norm(two.moment_model.W, axis=0), -1, 1)))
    assert ang.max() < 1.0


def test_poor_pilot_is_followed_by_a_second_pass(store, small_pilot, monkeypatch):
    path, truth = store
    monkeypatch.setattr(settings, "PILOT_MAX_SIN", 0.0)
    result = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False)
    assert result.run["data_passes"] == 2 and result.run["pilot_chunks"] == 2
    assert sr.evaluate(result.model, truth)["rel_test_mse"] < 1e-10


@pytest.mark.slow
def test_one_pass_model_file_identical_on_cluster_and_in_process(store, small_pilot, tmp_path, dask_client):
    path, _ = store
    on_cluster = sr.fit(path, n_hidden=M, client=dask_client, progress=False)
    in_process = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False)
    assert on_cluster.run["data_passes"] == 1
    on_cluster.model.save(tmp_path / "a.json")
    in_process.model.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_one_pass_resumes_from_its_state_folder(store, small_pilot, tmp_path):
    path, _ = store
    state = tmp_path / "state"
    first = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False, state=str(state))
    assert first.run["pass1_reused_chunks"] == 0
    again = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False, state=str(state))
    assert again.run["pass1_reused_chunks"] == N // CHUNK
    first.model.save(tmp_path / "a.json")
    again.model.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_appended_rows_reuse_the_one_pass_state_bitwise(tmp_path, small_pilot):
    path = str(tmp_path / "s.zarr")
    truth = sr.simulate_store(path, n_features=D, n_hidden=M, n_samples=N, seed=5, chunk_rows=CHUNK)
    x_more, y_more = truth.sample(np.random.default_rng(10), N // 2, dtype=np.float32)
    state = tmp_path / "state"
    before = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False, state=str(state))
    assert before.run["data_passes"] == 1
    append_rows(path, x_more, y_more)
    after = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False, state=str(state))
    assert after.run["data_passes"] == 1
    assert after.run["pass1_reused_chunks"] == N // CHUNK  # every old (full) chunk
    fresh = str(tmp_path / "fresh.zarr")
    shutil.copytree(path, fresh)
    ref = sr.fit(fresh, n_hidden=M, scheduler="synchronous", progress=False)
    after.model.save(tmp_path / "a.json")
    ref.model.save(tmp_path / "b.json")
    a = (tmp_path / "a.json").read_text()
    b = (tmp_path / "b.json").read_text()
    assert a.replace("fresh.zarr", "s.zarr") == b.replace("fresh.zarr", "s.zarr")
