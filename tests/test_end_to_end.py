"""End to end on small simulated stores: CLI, API (store, numpy, dask), schedulers, bitwise moments."""

import json
import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

import stream_relu as sr
from conftest import planted_data
from stream_relu.cli import main
from stream_relu.engine import DistributedRunner, SerialRunner, StoreSource, reduce_chunks
from stream_relu.moments import GAUSS, SUBSPACE, SubspacePlan, finalize_gauss
from stream_relu.recovery import subspace_basis

D, M, N, CHUNK = 8, 3, 200_000, 25_000


@pytest.fixture(scope="module")
def store(make_store):
    return make_store(D, M, N, CHUNK, seed=3)


def test_cli_simulate_fit_evaluate_predict(tmp_path, store, capsys):
    path, truth = store
    model_path = tmp_path / "m.json"
    assert main(["fit", path, "--out", str(model_path), "--hidden", str(M), "--scheduler", "synchronous", "-q"]) == 0
    assert main(["evaluate", str(model_path), "--truth", path, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    # noiseless float32 data: refinement reaches float32 rounding (rel MSE ~1e-14); floors with margin
    assert metrics["unmatched_true"] == 0 and metrics["unmatched_fitted"] == 0
    assert metrics["max_angle_deg"] < 1e-3 and metrics["max_abs_b_err"] < 1e-4
    assert metrics["rel_test_mse"] < 1e-10
    assert main(["evaluate", str(model_path), "--truth", path, "--json", "--stage", "moment"]) == 0
    moment = json.loads(capsys.readouterr().out)
    assert moment["max_angle_deg"] < 10  # the moment stage is an initializer
    pred = tmp_path / "p.zarr"
    assert main(["predict", str(model_path), path, "--out", str(pred), "-q"]) == 0
    import zarr

    y_pred = zarr.open_group(str(pred), mode="r")["y_pred"][:]
    x, _ = sr.open_store(path).read_rows(0, N)
    np.testing.assert_allclose(y_pred, sr.load_model(model_path).predict(x), rtol=1e-12)


def test_cli_refuses_m_larger_than_d(store, tmp_path, capsys):
    path, _ = store
    code = main(["fit", path, "--out", str(tmp_path / "m.json"), "--hidden", str(D + 1), "--scheduler", "synchronous"])
    assert code == 2
    assert "larger than n_features" in capsys.readouterr().err


def test_width_estimated_without_hidden(store):
    path, truth = store
    result = sr.fit(path, scheduler="synchronous", refine_model=False, progress=False)
    assert result.diagnostics["width"]["chosen"] == M
    assert not result.diagnostics["width"]["requested"]


def test_no_refine_is_the_moment_estimate(store):
    path, _ = store
    result = sr.fit(path, n_hidden=M, scheduler="synchronous", refine_model=False, progress=False)
    np.testing.assert_array_equal(result.model.W, result.moment_model.W)
    assert result.diagnostics["stages"]["refined"] == []


@pytest.mark.slow
def test_numpy_and_dask_inputs_match_the_store(store):
    path, truth = store
    x, y = sr.open_store(path).read_rows(0, N)
    ref = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False)
    from_numpy = sr.fit(x, y, n_hidden=M, chunk_rows=CHUNK, progress=False)
    with dask.config.set(scheduler="threads"):
        from_dask = sr.fit(da.from_array(x, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK), n_hidden=M, progress=False)
    # same chunking, same kernels, same fold order: bitwise the same model
    for other in (from_numpy, from_dask):
        np.testing.assert_array_equal(other.model.W, ref.model.W)
        np.testing.assert_array_equal(other.model.a, ref.model.a)


def _pass_states(runner, path):
    source = StoreSource.from_store(sr.open_store(path))
    g_state = reduce_chunks(source, GAUSS, None, runner).state
    g = finalize_gauss(g_state)
    plan = SubspacePlan.build(g, subspace_basis(g.T2, M))
    return g_state, reduce_chunks(source, SUBSPACE, plan, runner).state


def _bytes(state):
    return b"".join(state.sums[k].tobytes() for k in sorted(state.sums)) + str(state.count).encode()


@pytest.mark.slow
def test_bitwise_identical_moments_across_workers_and_threads(store, dask_client):
    path, _ = store
    ref = [_bytes(s) for s in _pass_states(SerialRunner(), path)]
    assert [_bytes(s) for s in _pass_states(DistributedRunner(dask_client), path)] == ref
    # a window of 1 task changes the completion order and grouping, not the bits
    assert [_bytes(s) for s in _pass_states(DistributedRunner(dask_client, window=1), path)] == ref
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, scheduler_kwargs={"dashboard": False}) as c1, Client(c1) as client:
        assert [_bytes(s) for s in _pass_states(DistributedRunner(client), path)] == ref


@pytest.mark.slow
def test_model_file_identical_on_cluster_and_in_process(store, dask_client, tmp_path):
    path, _ = store
    on_cluster = sr.fit(path, n_hidden=M, client=dask_client, progress=False)
    in_process = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False)
    on_cluster.model.save(tmp_path / "a.json")
    in_process.model.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


@pytest.mark.slow
def test_fit_through_scheduler_address(store, local_cluster):
    path, truth = store
    result = sr.fit(path, n_hidden=M, scheduler=local_cluster.scheduler_address, progress=False)
    assert sr.evaluate(result.model, truth)["rel_test_mse"] < 1e-10


@pytest.mark.slow
def test_demo_command_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "stream_relu.cli", "demo", "--samples", "100000", "--features", "6", "--hidden", "2",
         "--workdir", str(tmp_path), "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "rel_test_mse" in out.stdout and "moment stage" in out.stdout
    assert (tmp_path / "model.json").exists()


def test_general_gaussian_inputs_from_a_truth_file(tmp_path):
    # x ~ N(mu, Sigma) with cond(Sigma) = 10: whitening, then the network mapped back.
    d, m = 5, 2
    rng = np.random.default_rng(11)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.logspace(0, 1, d)
    cov, inv_sqrt = (Q * lam) @ Q.T, (Q / np.sqrt(lam)) @ Q.T
    mu = rng.standard_normal(d) / np.sqrt(d)
    z_net = sr.draw_network(d, m, np.random.default_rng(5))
    net = sr.ReluNetwork.from_whitened(z_net.a, z_net.W, z_net.b, np.zeros(d), 0.0, mu, inv_sqrt)
    truth_file = tmp_path / "truth.json"
    truth_file.write_text(json.dumps(sr.Truth(net, mu, cov).to_dict()))
    store, model = str(tmp_path / "g.zarr"), str(tmp_path / "m.json")
    assert main(["simulate", store, "--truth", str(truth_file), "--samples", "200000", "--chunk-rows", "50000", "-q"]) == 0
    assert main(["fit", store, "--out", model, "--hidden", "2", "--scheduler", "synchronous", "-q"]) == 0
    metrics = sr.evaluate(sr.load_model(model), sr.load_truth(str(truth_file)))
    assert metrics["rel_test_mse"] < 1e-10 and metrics["max_angle_deg"] < 1e-3


def test_full_data_refinement_passes_and_their_switch(make_store):
    path, truth = make_store(4, 2, 40_000, 10_000, seed=2, noise=0.3)
    kw = dict(n_hidden=2, scheduler="synchronous", refine_rows=10_000, refine_rows_max=10_000, progress=False)
    result = sr.fit(path, **kw)
    passes = result.diagnostics["stages"]["full_data"]["passes"]
    assert 1 <= passes <= 3
    assert result.model.provenance["rows_used"]["refinement"][-1] == {"rows": 40_000, "streamed": True, "passes": passes}
    rel = result.diagnostics["stages"]["full_data"]["rel_mse"]
    assert rel[-1] <= rel[0]  # the loss over every row never rises from the in-memory estimate's
    none = sr.fit(path, refine_passes=0, **kw)
    assert "full_data" not in none.diagnostics["stages"] and none.run["refine_passes"] == 0
    assert none.model.provenance["rows_used"]["refinement"][-1] == {"chunks": [0], "rows": 10_000}
    for bad in (True, -1, 1.5):
        with pytest.raises(sr.InputError, match="refine_passes must be an integer >= 0"):
            sr.fit(path, refine_passes=bad, **kw)


def test_warns_outside_the_envelope(caplog):
    x, y, _ = planted_data(20_000, 6, 2, seed=4)
    with caplog.at_level("WARNING", logger="stream_relu"):
        result = sr.fit(x, y, n_hidden=2, progress=False)
    assert any("rows for d = 6, m = 2" in w for w in result.diagnostics["warnings"])
    assert "are needed" in caplog.text


def test_linear_and_dead_units_land_in_the_affine_term():
    # b = 4: relu(t + 4) = t + 4 but with probability 3e-5; b = -4: dead. Orders >= 2 cannot
    # see either at this n, so the width is 2 and the affine term carries a_0 (w_0, b_0).
    x, _, net = planted_data(400_000, 6, 4, seed=8)
    net = sr.ReluNetwork(net.a, net.W, [4.0, -4.0, net.b[2], net.b[3]], np.zeros(6), 0.0)
    result = sr.fit(x, net.predict(x), progress=False)
    assert result.diagnostics["width"]["chosen"] == 2
    # residual nonlinearity of the folded units: E[relu(-t - 4)^2] ~ 1e-5 relative
    np.testing.assert_allclose(result.model.u, net.a[0] * net.W[:, 0], atol=2e-3)
    assert result.model.c == pytest.approx(4.0 * net.a[0], abs=5e-3)
    truth = sr.Truth(net, np.zeros(6), np.eye(6))
    assert sr.evaluate(result.model, truth)["rel_test_mse"] < 1e-5


def test_refine_target_stops_early(store):
    path, truth = store
    full = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False)
    early = sr.fit(path, n_hidden=M, scheduler="synchronous", progress=False, refine_target=1e-6)
    s_full, s_early = full.diagnostics["stages"]["refined"], early.diagnostics["stages"]["refined"]
    assert len(s_early) == 1 and s_early[0]["target_reached"]
    assert s_early[0]["rel_mse_end"] <= 1e-6 < s_early[0]["rel_mse_start"]
    assert s_early[0]["iterations"] < s_full[0]["iterations"]
    # noiseless data: the training target carries over to the test set (within 10x)
    assert sr.evaluate(early.model, truth)["rel_test_mse"] < 1e-5
    assert early.model.provenance["settings"]["refine_target"] == 1e-6
