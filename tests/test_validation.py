"""Bad input never yields a silent wrong answer: every case gets a clear error or warning.

Each test builds a store (plain zarr unless stated) that exhibits one case and
checks the CLI's exit status and the one line it prints on stderr, or the
warning a fit records in its diagnostics.
"""

import json
import os

import numpy as np
import pytest
import zarr

import stream_relu as sr
from conftest import planted_data
from stream_relu.cli import main
from stream_relu.errors import EXIT_CODES, DataError, InputError, ModelFileError, StoreFormatError, StoreNotFoundError


def _plain_store(path, x=None, y=None, *, x_chunks=None, y_chunks=None, zarr_format=3, names=("x", "y")):
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    for name, arr, chunks in ((names[0], x, x_chunks), (names[1], y, y_chunks)):
        if arr is None:
            continue
        arr = np.asarray(arr)
        a = g.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=chunks or arr.shape or (1,))
        if arr.size:
            a[...] = arr
    return str(path)


def _fit(store, tmp_path, *extra):
    return main(["fit", store, "--out", str(tmp_path / "m.json"), "--scheduler", "synchronous", "-q", *extra])


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


# ---------------------------------------------------------------- format cases


@pytest.mark.parametrize("missing", ["x", "y"])
def test_missing_array(tmp_path, capsys, missing):
    x, y, _ = planted_data(100, 4, 2)
    store = _plain_store(tmp_path / "s.zarr", None if missing == "x" else x, None if missing == "y" else y)
    assert _fit(store, tmp_path) == EXIT_CODES[StoreNotFoundError]
    assert f"array '{missing}' not found in store" in _err(capsys)


def test_missing_store(tmp_path, capsys):
    assert _fit(str(tmp_path / "nope.zarr"), tmp_path) == EXIT_CODES[StoreNotFoundError]
    assert "nope.zarr" in _err(capsys)


@pytest.mark.parametrize(
    "x_shape,y_shape,message",
    [
        ((10, 2, 2), (10,), "array 'x' in store '{s}' has 3 dimensions (shape (10, 2, 2)); expected 2"),
        ((10, 3), (10, 2), "array 'y' in store '{s}' has 2 dimensions (shape (10, 2)); expected 1"),
        ((10, 3), (9,), "array 'y' in store '{s}' has 9 rows (shape (9,)); expected 10"),
        ((0, 3), (0,), "array 'x' in store '{s}' has 0 rows"),
        ((10, 0), (10,), "array 'x' in store '{s}' has 0 columns"),
    ],
)
def test_shapes(tmp_path, capsys, x_shape, y_shape, message):
    store = _plain_store(tmp_path / "s.zarr", np.ones(x_shape), np.ones(y_shape))
    assert _fit(store, tmp_path) == EXIT_CODES[StoreFormatError]
    assert message.format(s=store) in _err(capsys)


@pytest.mark.filterwarnings("ignore::UserWarning")  # zarr warns that '<U3' has no stable v3 spec
@pytest.mark.parametrize("dtype", ["complex64", "<U3"])
def test_non_real_dtypes(tmp_path, capsys, dtype):
    x = np.ones((10, 3)).astype(dtype)
    store = _plain_store(tmp_path / "s.zarr", x, np.ones(10))
    assert _fit(store, tmp_path) == EXIT_CODES[StoreFormatError]
    assert "array 'x'" in _err(capsys)


def test_y_column_and_int_dtype_are_accepted_with_notes(tmp_path):
    x, y, _ = planted_data(40_000, 4, 2)
    store = _plain_store(tmp_path / "s.zarr", (x * 1000).astype(np.int32), y[:, None], x_chunks=(10_000, 4), y_chunks=(7_000, 1))
    opened = sr.open_store(store)
    notes = " | ".join(opened.notes)
    assert "it is read as a vector of shape (40000,)" in notes
    assert "has dtype int32; its values are converted to float64 when read" in notes
    assert "chunked by 7000 rows" in notes
    result = sr.fit(store, n_hidden=2, scheduler="synchronous", progress=False)
    assert result.model.n_hidden == 2


# ---------------------------------------------------------------- values


def _nan_store(tmp_path):
    x, y, _ = planted_data(40_000, 4, 2)
    x[12_345, 1] = np.nan
    y[30_001] = np.inf
    y[30_002] = np.nan
    return _plain_store(tmp_path / "s.zarr", x, y, x_chunks=(10_000, 4), y_chunks=(10_000,))


def test_nonfinite_values_name_chunks_and_count(tmp_path, capsys):
    store = _nan_store(tmp_path)
    assert _fit(store, tmp_path, "--hidden", "2") == EXIT_CODES[DataError]
    assert "3 rows hold NaN or infinity in x or y, in chunk(s) 1, 3 (first: chunk 1 (rows 10000-19999)" in _err(capsys)


def test_nonfinite_skip_drops_and_reports(tmp_path):
    store = _nan_store(tmp_path)
    result = sr.fit(store, n_hidden=2, scheduler="synchronous", nonfinite="skip", progress=False)
    assert result.diagnostics["data"]["nonfinite_rows_dropped"] == 3
    assert any("dropped 3 rows" in w for w in result.diagnostics["warnings"])
    assert np.all(np.isfinite(result.model.W))


def test_corrupted_chunk_is_named(tmp_path, capsys):
    store = str(tmp_path / "s.zarr")
    sr.simulate_store(store, n_features=4, n_hidden=2, n_samples=40_000, chunk_rows=10_000)
    chunk = os.path.join(store, "x", "c", "2", "0")
    raw = bytearray(open(chunk, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(chunk, "wb").write(bytes(raw))
    assert _fit(store, tmp_path, "--hidden", "2") == EXIT_CODES[DataError]
    msg = _err(capsys)
    assert "cannot decode rows [20000, 30000) of array 'x'" in msg and "checksum" in msg.lower()


def test_missing_chunk_is_not_read_as_zeros(tmp_path, capsys):
    x, y, _ = planted_data(40_000, 4, 2)
    x[10_000:20_000] = 0.0  # plain zarr skips writing a chunk equal to the fill value
    store = _plain_store(tmp_path / "s.zarr", x, y, x_chunks=(10_000, 4), y_chunks=(10_000,))
    assert not os.path.exists(os.path.join(store, "x", "c", "1", "0"))
    assert _fit(store, tmp_path, "--hidden", "2") == EXIT_CODES[DataError]
    msg = _err(capsys)
    assert "chunk c/1/0 is missing from storage" in msg and "write_empty_chunks=True" in msg
    assert "--missing-chunks fill" in msg
    # opt-in: the absent chunk is read as the fill value (0.0)
    report = sr.check(store, missing_chunks="fill", scheduler="synchronous", progress=False)
    assert not any("missing" in e for e in report.errors)


# ---------------------------------------------------------------- degenerate data


def test_constant_labels(tmp_path, capsys):
    x, _, _ = planted_data(20_000, 4, 2)
    store = _plain_store(tmp_path / "s.zarr", x, np.full(20_000, 2.5))
    assert _fit(store, tmp_path) == EXIT_CODES[DataError]
    assert "y is constant (every row is 2.5): there is nothing to learn" in _err(capsys)


def test_all_zero_x(tmp_path, capsys):
    store = _plain_store(tmp_path / "s.zarr", np.zeros((1000, 3)), np.arange(1000.0), x_chunks=(500, 3))
    assert _fit(store, tmp_path, "--missing-chunks", "fill") == EXIT_CODES[DataError]
    assert "x is constant (every column has zero variance; all-zero x?)" in _err(capsys)


def test_constant_column_is_named(tmp_path, capsys):
    x, y, _ = planted_data(20_000, 4, 2)
    x[:, 2] = 1.0
    store = _plain_store(tmp_path / "s.zarr", x, y)
    assert _fit(store, tmp_path) == EXIT_CODES[DataError]
    assert "columns [2] of x are constant (zero variance)" in _err(capsys)


def test_collinear_columns_are_named(tmp_path, capsys):
    x, y, _ = planted_data(20_000, 4, 2)
    x[:, 3] = x[:, 0] - 2.0 * x[:, 1]
    store = _plain_store(tmp_path / "s.zarr", x, y)
    assert _fit(store, tmp_path) == EXIT_CODES[DataError]
    assert "columns [0, 1, 3] of x are collinear" in _err(capsys)


def test_duplicated_chunks_warn(tmp_path):
    x, y, _ = planted_data(40_000, 4, 2)
    x[30_000:], y[30_000:] = x[10_000:20_000], y[10_000:20_000]
    store = _plain_store(tmp_path / "s.zarr", x, y, x_chunks=(10_000, 4), y_chunks=(10_000,))
    result = sr.fit(store, n_hidden=2, scheduler="synchronous", refine_model=False, progress=False)
    assert result.diagnostics["data"]["duplicate_chunks"] == [[1, 3]]
    assert any("chunks [1, 3] have identical content" in w for w in result.diagnostics["warnings"])


# ---------------------------------------------------------------- width and rows


def test_hidden_larger_than_features(tmp_path, capsys):
    x, y, _ = planted_data(1000, 4, 2)
    store = _plain_store(tmp_path / "s.zarr", x, y)
    assert _fit(store, tmp_path, "--hidden", "5") == EXIT_CODES[InputError]
    assert "--hidden 5 is larger than n_features = 4" in _err(capsys)


def test_hidden_larger_than_the_evidence_warns_with_spectrum():
    x, y, _ = planted_data(200_000, 6, 2)
    result = sr.fit(x, y, n_hidden=4, refine_model=False, progress=False)
    w = [t for t in result.diagnostics["warnings"] if "requested units stand above" in t]
    assert w and "only 2 of the 4 requested units" in w[0] and "|eigenvalues| [" in w[0]


def test_too_few_rows_warn_with_estimate_and_flag_units():
    x, y, _ = planted_data(5_000, 8, 3, seed=2)
    result = sr.fit(x, y, n_hidden=3, refine_model=False, progress=False)
    assert any("5000 rows for d = 8, m = 3: about 48000 are needed" in t for t in result.diagnostics["warnings"])
    # 5,000 rows are a tenth of what is needed: the weakest unit (order-2 strength ~4 noise
    # levels, below UNRELIABLE_STRENGTH) must be flagged, by a valid moment-estimate index
    flagged = result.diagnostics["recovery"]["unreliable_units"]
    assert flagged and set(flagged) <= {0, 1, 2}, flagged
    assert any(f"units {flagged}" in t for t in result.diagnostics["warnings"])  # and named in a warning


# ---------------------------------------------------------------- Gaussianity


def _normality_warnings(x, y):
    result = sr.fit(x, y, n_hidden=2, refine_model=False, progress=False)
    return [t for t in result.diagnostics["warnings"] if "does not look Gaussian" in t], result


def test_non_gaussian_x_warns_with_statistic():
    rng = np.random.default_rng(3)
    net = sr.draw_network(5, 2, rng)
    x = rng.uniform(-np.sqrt(3), np.sqrt(3), (200_000, 5))  # unit variance, excess kurtosis -1.2
    warned, _ = _normality_warnings(x, net.predict(x))
    assert warned and "excess kurtosis -1.2" in warned[0]


@pytest.mark.parametrize("seed", range(5))
def test_gaussian_x_of_the_same_size_raises_no_alarm(seed):
    x, y, _ = planted_data(200_000, 5, 2, seed=seed)
    warned, result = _normality_warnings(x, y)
    assert not warned, warned
    assert result.diagnostics["data"]["normality"]["max_z"] < 6


# ---------------------------------------------------------------- check and model files


def test_check_lists_every_problem_without_fitting(tmp_path, capsys):
    store = _nan_store(tmp_path)
    assert main(["check", store, "--scheduler", "synchronous", "-q"]) == EXIT_CODES[DataError]
    out = capsys.readouterr().out
    assert "ERROR: 3 rows hold NaN or infinity" in out and "40000 rows x 4 features in 4 chunks" in out
    assert main(["check", store, "--scheduler", "synchronous", "--nonfinite", "skip", "-q", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["stats"]["nonfinite_rows"] == 3 and doc["stats"]["suggested_width"] == 2


def test_check_clean_store(make_store, capsys):
    store, _ = make_store(5, 2, 100_000, 25_000)
    assert main(["check", store, "--scheduler", "synchronous", "-q"]) == 0
    out = capsys.readouterr().out
    assert "no errors" in out and "ERROR" not in out and "Gaussian" not in out


def test_bad_model_file_exit_status(tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"format_version": 7}))
    assert main(["evaluate", str(path), "--truth", str(path)]) == EXIT_CODES[ModelFileError]
    assert "format_version is 7; this stream_relu reads versions 1 and 2" in _err(capsys)


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(StoreNotFoundError):
        main(["fit", str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "m.json"), "--debug", "-q"])
