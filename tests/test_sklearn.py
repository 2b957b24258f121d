"""The scikit-learn estimator: the estimator checks, planted recovery, dask and store input, partial_fit."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import stream_relu as sr  # noqa: E402
from stream_relu.sklearn import FallbackWarning, ReluNetworkRegressor  # noqa: E402

# The checks fit tiny, non-Gaussian data sets: those fits take the documented
# affine fallback, which warns every time.
pytestmark = pytest.mark.filterwarnings("ignore::stream_relu.sklearn.FallbackWarning")

# Checks that cannot apply to this model, with the reason for each.  None so
# far: every check of scikit-learn's suite passes.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(
    [
        ReluNetworkRegressor(),
        # a requested width: tiny data then go through the moment recovery
        # instead of the fallback; rows with NaN are dropped
        ReluNetworkRegressor(n_hidden=1, nonfinite="skip"),
    ],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _planted(d, m, n, seed):
    net = sr.draw_network(d, m, np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 1])
    x = rng.standard_normal((n, d))
    return net, x, net.predict(x)


def _assert_same_model(est, ref, rtol=1e-10):
    assert est.n_hidden_ == ref.n_hidden_
    for name in ("a_", "W_", "b_", "u_", "c_"):
        np.testing.assert_allclose(getattr(est, name), getattr(ref, name), rtol=rtol, atol=rtol, err_msg=name)


def test_planted_recovery_numpy():
    net, x, y = _planted(6, 2, 200_000, seed=3)
    est = ReluNetworkRegressor().fit(x, y)
    rng = np.random.default_rng(99)
    x_test = rng.standard_normal((20_000, 6))
    assert est.score(x_test, net.predict(x_test)) > 1 - 1e-8
    assert est.n_hidden_ == 2 and est.n_features_in_ == 6
    assert est.diagnostics_["fallback"] is None
    m = est.model_
    assert isinstance(m, sr.ReluNetwork)
    for name in ("a", "W", "b", "u"):
        np.testing.assert_array_equal(getattr(est, name + "_"), getattr(m, name))
    assert est.c_ == m.c
    assert est.W_.shape == (6, 2) and est.a_.shape == est.b_.shape == (2,) and est.u_.shape == (6,)
    np.testing.assert_allclose(np.linalg.norm(est.W_, axis=0), 1.0)
    np.testing.assert_array_equal(est.predict(x_test), m.predict(x_test))


def test_dask_and_store_input_match_numpy(tmp_path):
    da = pytest.importorskip("dask.array")
    path = tmp_path / "planted.zarr"
    sr.simulate_store(str(path), n_features=5, n_hidden=2, n_samples=100_000, chunk_rows=25_000)
    store = sr.open_store(str(path))
    x, y = store.read_rows(0, store.n_samples)

    ref = ReluNetworkRegressor(chunk_rows=25_000).fit(x, y)
    assert ref.n_hidden_ == 2 and ref.diagnostics_["fallback"] is None

    from_store = ReluNetworkRegressor(scheduler="synchronous").fit(path)  # os.PathLike
    _assert_same_model(from_store, ref)
    assert from_store.n_features_in_ == 5
    assert not hasattr(from_store, "feature_names_in_")

    dx, dy = da.from_array(x, chunks=(25_000, 5)), da.from_array(y, chunks=25_000)
    from_dask = ReluNetworkRegressor(scheduler="synchronous").fit(dx, dy)
    _assert_same_model(from_dask, ref)

    # predictions: a path gives a numpy array, a dask array a dask array
    expected = ref.predict(x)
    pred_store = from_store.predict(str(path))
    assert isinstance(pred_store, np.ndarray)
    np.testing.assert_allclose(pred_store, expected, rtol=1e-9, atol=1e-9)
    pred_dask = from_dask.predict(dx)
    assert isinstance(pred_dask, da.Array)
    np.testing.assert_allclose(pred_dask.compute(scheduler="synchronous"), expected, rtol=1e-9, atol=1e-9)

    with pytest.raises(ValueError, match="y must be None"):
        ReluNetworkRegressor(scheduler="synchronous").fit(str(path), y)
    with pytest.raises(ValueError, match="expecting 5 features"):
        from_dask.predict(dx[:, :4])


def test_default_client_is_used_for_stores(tmp_path):
    distributed = pytest.importorskip("distributed")
    path = str(tmp_path / "small.zarr")
    sr.simulate_store(path, n_features=3, n_hidden=1, n_samples=20_000, chunk_rows=5_000)
    ref = ReluNetworkRegressor(scheduler="synchronous").fit(path)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        with distributed.get_task_stream(client) as tasks:
            est = ReluNetworkRegressor().fit(path)  # scheduler=None: the default client, no new cluster
    _assert_same_model(est, ref)
    assert any(str(t["key"]).startswith("stream-relu-gauss") for t in tasks.data)


def test_affine_fallback_on_tiny_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 3.0 + 0.01 * rng.standard_normal(40)
    with pytest.warns(FallbackWarning, match="affine"):
        est = ReluNetworkRegressor().fit(x, y)
    assert est.n_hidden_ == 0 and est.a_.shape == (0,) and est.W_.shape == (3, 0)
    assert est.diagnostics_["fallback"]["error"] == "RecoveryError"
    coef, *_ = np.linalg.lstsq(np.column_stack([x, np.ones(40)]), y, rcond=None)
    np.testing.assert_allclose(est.u_, coef[:3], rtol=1e-12)
    np.testing.assert_allclose(est.c_, coef[3], rtol=1e-12)
    np.testing.assert_allclose(est.predict(x), np.column_stack([x, np.ones(40)]) @ coef, rtol=1e-12, atol=1e-12)

    # more features than rows: singular covariance (a DataError), same fallback
    with pytest.warns(FallbackWarning, match="singular"):
        est = ReluNetworkRegressor().fit(rng.standard_normal((4, 6)), rng.standard_normal(4))
    assert est.diagnostics_["fallback"]["error"] == "DataError"


def test_measured_width_zero_keeps_fits_affine_model():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50_000, 4))
    y = x @ np.array([0.3, 0.0, -0.8, 0.1]) + 0.5 + 0.1 * rng.standard_normal(50_000)
    with pytest.warns(FallbackWarning, match="no structure found"):
        est = ReluNetworkRegressor().fit(x, y)
    assert est.n_hidden_ == 0 and est.diagnostics_["fallback"]["model"].startswith("fit's affine model")
    assert est.diagnostics_["width"]["chosen"] == 0  # fit's diagnostics are kept
    # fit's affine model is least squares on whitened inputs: the same as lstsq up to rounding
    coef, *_ = np.linalg.lstsq(np.column_stack([x, np.ones(x.shape[0])]), y, rcond=None)
    np.testing.assert_allclose(np.append(est.u_, est.c_), coef, rtol=1e-9, atol=1e-12)


def test_affine_fallback_on_tiny_dask_data():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 3))
    y = x @ np.array([0.5, 1.0, -1.0]) - 1.0
    ref = ReluNetworkRegressor().fit(x, y)
    with pytest.warns(FallbackWarning):
        est = ReluNetworkRegressor(scheduler="synchronous").fit(
            da.from_array(x, chunks=20), da.from_array(y, chunks=20)
        )
    assert est.n_hidden_ == 0
    np.testing.assert_allclose(est.u_, ref.u_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(est.c_, ref.c_, rtol=1e-9)
    # a NaN is invalid input, not a reason to fall back
    x[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ReluNetworkRegressor(scheduler="synchronous").fit(da.from_array(x, chunks=20), da.from_array(y, chunks=20))


def test_invalid_input_raises():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((50, 3)), rng.standard_normal(50)
    with pytest.raises(ValueError, match="--hidden 4 is larger than n_features = 3"):
        ReluNetworkRegressor(n_hidden=4).fit(x, y)
    with pytest.raises(ValueError, match="n_hidden must be"):
        ReluNetworkRegressor(n_hidden=0).fit(x, y)
    with pytest.raises(ValueError, match="1 sample"):
        ReluNetworkRegressor().fit(x[:1], y[:1])
    x[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ReluNetworkRegressor().fit(x, y)


def test_partial_fit_merges_batches_and_replans_on_doubling():
    net, x, y = _planted(6, 2, 200_000, seed=5)
    rng = np.random.default_rng(7)
    x_test = rng.standard_normal((20_000, 6))
    y_test = net.predict(x_test)
    est = ReluNetworkRegressor()
    keys, replanned = [], []
    for k in range(4):
        sl = slice(50_000 * k, 50_000 * (k + 1))
        assert est.partial_fit(x[sl], y[sl]) is est
        info = est.diagnostics_["partial_fit"]
        keys.append(info["plan_key"])
        replanned.append(info["replanned"])
        assert info["n_calls"] == k + 1 and info["rows_seen"] == 50_000 * (k + 1)
    # plans at calls 1, 2 and 4 (rows seen 50k, 100k >= 2 * 50k, 200k >= 2 * 100k)
    assert info["plan_calls"] == [1, 2, 4] and info["n_plans"] == 3
    assert replanned == [True, True, False, True]
    assert keys[0] != keys[1] and keys[1] == keys[2] and keys[2] != keys[3]
    # pass 2 restarted with the fourth batch; the plan rests on all 200k rows
    assert info["plan_rows"] == 200_000 and info["pass2_rows"] == 50_000
    assert est.n_hidden_ == 2 and est.diagnostics_["fallback"] is None
    assert est.score(x_test, y_test) > 1 - 1e-6

    with pytest.raises(ValueError, match="expecting 6 features"):
        est.partial_fit(x[:100, :5], y[:100])
    # fit discards the incremental state
    with pytest.warns(FallbackWarning):
        est.fit(x[:50, :3], y[:50])
    with pytest.warns(FallbackWarning):
        est.partial_fit(x[:50, :3], y[:50])
    assert est.diagnostics_["partial_fit"]["n_calls"] == 1 and est.n_features_in_ == 3


def test_partial_fit_dask_matches_numpy():
    da = pytest.importorskip("dask.array")
    net, x, y = _planted(4, 1, 60_000, seed=11)
    ref, est = ReluNetworkRegressor(chunk_rows=10_000), ReluNetworkRegressor(scheduler="synchronous")
    for sl in (slice(0, 30_000), slice(30_000, 60_000)):
        ref.partial_fit(x[sl], y[sl])
        est.partial_fit(da.from_array(x[sl], chunks=(10_000, 4)), da.from_array(y[sl], chunks=10_000))
    _assert_same_model(est, ref)
    assert est.diagnostics_["partial_fit"]["plan_calls"] == [1, 2]


def test_partial_fit_single_rows_fall_back_to_affine():
    rng = np.random.default_rng(4)
    est = ReluNetworkRegressor()
    with pytest.warns(FallbackWarning):
        est.partial_fit(rng.standard_normal((1, 2)), np.array([2.5]))
    assert est.n_hidden_ == 0 and est.c_ == 2.5 and np.all(est.u_ == 0)


def test_get_set_params_and_clone():
    est = ReluNetworkRegressor(3, random_state=7, refine=False, refine_rows=1000, scheduler="synchronous")
    params = est.get_params()
    assert params == {
        "n_hidden": 3,
        "random_state": 7,
        "refine": False,
        "refine_rows": 1000,
        "chunk_rows": 65536,
        "scheduler": "synchronous",
        "nonfinite": "error",
        "progress": False,
    }
    other = ReluNetworkRegressor().set_params(**params)
    assert other.get_params() == params
    assert other.set_params(n_hidden=None) is other and other.n_hidden is None

    rng = np.random.default_rng(0)
    with pytest.warns(FallbackWarning):
        est.set_params(n_hidden=None).fit(rng.standard_normal((30, 2)), rng.standard_normal(30))
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "model_") and not hasattr(twin, "n_features_in_")
