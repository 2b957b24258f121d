"""Tests of the zarr sample store layer, :mod:`stream_relu.data`."""

from __future__ import annotations

import functools
import json
import os
import pickle
import uuid

import numpy as np
import pytest
import zarr

from stream_relu.data import (
    SampleStore,
    StoreSpec,
    create_sample_store,
    open_store,
    write_rows,
)
from stream_relu.errors import (
    DataError,
    InputError,
    StoreFormatError,
    StoreNotFoundError,
)


def _samples(n, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    return x, y


def _plain_store(path, x, y, *, zarr_format=3, x_chunks=None, y_chunks=None, x_name="x", y_name="y"):
    """A store written by plain zarr calls, no attributes."""
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    if x is not None:
        arr = group.create_array(
            x_name, shape=x.shape, dtype=x.dtype, chunks=x_chunks or x.shape
        )
        arr[...] = x
    if y is not None:
        arr = group.create_array(
            y_name, shape=y.shape, dtype=y.dtype, chunks=y_chunks or y.shape
        )
        arr[...] = y
    return str(path)


# ---------------------------------------------------------------------------
# creation, writing and reading
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_create_write_read_round_trip(tmp_path, dtype):
    n, d, rows = 23, 4, 5  # last chunk has 3 rows
    x, y = _samples(n, d, dtype, seed=1)
    url = str(tmp_path / "s.zarr")
    store = create_sample_store(
        url, n_samples=n, n_features=d, chunk_rows=rows, dtype=dtype, attributes={"seed": 1}
    )
    assert (store.n_samples, store.n_features, store.chunk_rows, store.n_chunks) == (n, d, rows, 5)
    assert store.dtype == np.dtype(dtype)
    for i in range(store.n_chunks):
        start, stop = store.chunk_bounds(i)
        write_rows(store.spec, start, x[start:stop], y[start:stop])

    reopened = open_store(url)
    assert reopened.attrs == {"seed": 1}
    assert reopened.notes == []
    assert reopened.zarr_format == 3
    covered = np.zeros(n, dtype=int)
    xs, ys = [], []
    for i in range(reopened.n_chunks):
        start, stop = reopened.chunk_bounds(i)
        covered[start:stop] += 1
        cx, cy = reopened.read_chunk(i)
        assert cx.shape == (stop - start, d) and cy.shape == (stop - start,)
        assert cx.dtype == np.dtype(dtype) and cy.dtype == np.dtype(dtype)
        assert cx.flags["C_CONTIGUOUS"]
        xs.append(cx)
        ys.append(cy)
    assert (covered == 1).all()
    assert reopened.chunk_bounds(reopened.n_chunks - 1) == (20, 23)
    np.testing.assert_array_equal(np.concatenate(xs), x)
    np.testing.assert_array_equal(np.concatenate(ys), y)
    rx, ry = reopened.read_rows(3, 11)
    np.testing.assert_array_equal(rx, x[3:11])
    np.testing.assert_array_equal(ry, y[3:11])
    ex, ey = reopened.read_rows(7, 7)
    assert ex.shape == (0, d) and ey.shape == (0,)


def test_write_rows_through_open_store_and_readonly_store(tmp_path):
    x, y = _samples(8, 2, "float64", seed=2)
    url = str(tmp_path / "s.zarr")
    created = create_sample_store(url, n_samples=8, n_features=2, chunk_rows=4, dtype="float64")
    write_rows(created, 0, x[:4], y[:4].reshape(4, 1))  # (rows, 1) y accepted
    write_rows(open_store(url), 4, x[4:], y[4:])  # read-only store is reopened for writing
    rx, ry = open_store(url).read_rows(0, 8)
    np.testing.assert_array_equal(rx, x)
    np.testing.assert_array_equal(ry, y)


def test_chunk_rows_clipped_and_identity(tmp_path):
    url = str(tmp_path / "s.zarr")
    store = create_sample_store(url, n_samples=6, n_features=3, chunk_rows=100)
    assert store.chunk_rows == 6 and store.n_chunks == 1
    ident = store.identity()
    assert json.loads(json.dumps(ident)) == ident
    assert ident == {
        "url": os.path.abspath(url),
        "x": "x",
        "y": "y",
        "zarr_format": 3,
        "x_shape": [6, 3],
        "y_shape": [6],
        "x_chunks": [6, 3],
        "x_shards": None,
        "x_dtype": "float32",
        "y_dtype": "float32",
        "dtype": "float32",
        "chunk_rows": 6,
    }
    assert open_store(url).identity() == ident


def test_checksum_codec_and_empty_chunks_are_written(tmp_path):
    url = tmp_path / "s.zarr"
    store = create_sample_store(str(url), n_samples=9, n_features=2, chunk_rows=3)
    for name in ("x", "y"):
        meta = json.loads((url / name / "zarr.json").read_text())
        codec_names = [c["name"] for c in meta["codecs"]]
        assert codec_names[-1] == "crc32c"
        assert codec_names[0] == "bytes" and len(codec_names) >= 3  # a compressor in between
    # only chunk 1 is written, with zeros: it must exist as objects, chunks 0 and 2 must not
    write_rows(store, 3, np.zeros((3, 2), np.float32), np.zeros(3, np.float32))
    assert sorted(os.listdir(url / "x" / "c")) == ["1"]
    assert sorted(os.listdir(url / "x" / "c" / "1")) == ["0"]
    assert sorted(os.listdir(url / "y" / "c")) == ["1"]


def test_corrupted_chunk_raises_data_error(tmp_path):
    url = tmp_path / "s.zarr"
    x, y = _samples(4, 2, "float32", seed=3)
    store = create_sample_store(str(url), n_samples=4, n_features=2, chunk_rows=2)
    write_rows(store, 0, x, y)
    chunk = url / "x" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    reopened = open_store(str(url))
    reopened.read_chunk(0)
    with pytest.raises(DataError, match="array 'x'"):
        reopened.read_chunk(1)


def test_pickle_spec_and_store(tmp_path):
    url = str(tmp_path / "s.zarr")
    create_sample_store(url, n_samples=4, n_features=2, chunk_rows=2)
    spec = StoreSpec.make(url, storage_options=None)
    assert pickle.loads(pickle.dumps(spec)) == spec
    store = spec.open()
    copy = pickle.loads(pickle.dumps(store))
    assert isinstance(copy, SampleStore)
    assert copy.identity() == store.identity()


def test_store_spec_make_sorts_options():
    spec = StoreSpec.make("s3://bucket/s.zarr", x="a", y="b", storage_options={"z": 1, "anon": True})
    assert spec.storage_options == (("anon", True), ("z", 1))
    assert spec.options == {"anon": True, "z": 1}
    assert hash(spec) == hash(StoreSpec("s3://bucket/s.zarr", "a", "b", (("z", 1), ("anon", True))))
    with pytest.raises(InputError):
        StoreSpec("s.zarr", x="v", y="v")


def test_store_spec_with_nested_options_is_hashable_and_picklable():
    nested = {"client_kwargs": {"endpoint_url": "http://localhost:9000"}, "anon": False}
    spec = StoreSpec("s3://bucket/x.zarr", storage_options=nested)
    same = StoreSpec.make(
        "s3://bucket/x.zarr",
        storage_options={"anon": False, "client_kwargs": {"endpoint_url": "http://localhost:9000"}},
    )
    other = StoreSpec("s3://bucket/x.zarr", storage_options={"client_kwargs": {"endpoint_url": "http://other:9000"}})
    assert isinstance(hash(spec), int)
    assert spec == same and hash(spec) == hash(same)
    assert spec != other
    assert spec.options == nested
    # the spec keeps its own copy: changing the caller's dict, or the returned one, changes nothing
    nested["client_kwargs"]["endpoint_url"] = "http://changed:1"
    spec.options["client_kwargs"]["endpoint_url"] = "http://changed:2"
    assert spec == same and spec.options["client_kwargs"] == {"endpoint_url": "http://localhost:9000"}

    calls = []

    @functools.lru_cache(maxsize=4)
    def cached(key, n_samples):
        calls.append(key)
        return len(calls)

    assert cached(spec, 10) == cached(same, 10) == 1
    assert cached(other, 10) == 2 and len(calls) == 2

    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec and hash(copy) == hash(spec)
    assert copy.options == spec.options and copy.storage_options == spec.storage_options


def test_local_store_opened_through_spec_with_nested_options(tmp_path):
    pytest.importorskip("fsspec", reason="file:// stores need fsspec")
    path = str(tmp_path / "s.zarr")
    x, y = _samples(6, 2, "float32", seed=11)
    write_rows(create_sample_store(path, n_samples=6, n_features=2, chunk_rows=3), 0, x, y)
    spec = StoreSpec.make(
        "file://" + path, storage_options={"auto_mkdir": False, "extra": {"nested": {"a": [1, 2]}}}
    )
    rx, ry = spec.open().read_rows(0, 6)
    np.testing.assert_array_equal(rx, x)
    np.testing.assert_array_equal(ry, y)
    # what the engine does: one opening per (spec, n_samples), the spec as an lru_cache key
    opened = functools.lru_cache(maxsize=2)(lambda s, n: s.open())
    assert opened(spec, 6) is opened(pickle.loads(pickle.dumps(spec)), 6)


# ---------------------------------------------------------------------------
# stores written by plain zarr
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_store_opens(tmp_path, zarr_format):
    x, y = _samples(10, 3, "float64", seed=4)
    url = _plain_store(
        tmp_path / "p.zarr", x, y, zarr_format=zarr_format, x_chunks=(4, 3), y_chunks=(3,)
    )
    store = open_store(url)
    assert store.zarr_format == zarr_format
    assert store.attrs == {}
    # y chunked differently from x: accepted, read by x's row chunks, and said so
    assert store.notes == [
        "array 'y' is chunked by 3 rows and array 'x' by 4: each unit of work reads whole rows "
        "of both, following 'x' (y chunks may be read twice)"
    ]
    assert (store.chunk_rows, store.n_chunks, store.dtype) == (4, 3, np.dtype("float64"))
    got = [store.read_chunk(i) for i in range(store.n_chunks)]
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), x)
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), y)


def test_v2_big_endian_fortran_order_read_as_native_c(tmp_path):
    x, y = _samples(6, 2, "float64", seed=5)
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="w", zarr_format=2)
    arr = group.create_array("x", shape=x.shape, chunks=(3, 1), dtype=">f8", order="F")
    arr[...] = x
    group.create_array("y", shape=y.shape, chunks=(3,), dtype="<f8")[...] = y
    store = open_store(str(tmp_path / "p.zarr"))
    cx, _ = store.read_chunk(1)
    assert cx.flags["C_CONTIGUOUS"] and cx.dtype == np.dtype("float64")
    assert cx.dtype.isnative
    np.testing.assert_array_equal(cx, x[3:])


def test_int16_x_converted_with_note(tmp_path):
    x = np.arange(12, dtype=np.int16).reshape(6, 2)
    y = np.ones(6, dtype=np.float64)
    store = open_store(_plain_store(tmp_path / "p.zarr", x, y))
    assert store.dtype == np.dtype("float64")
    assert any("'x'" in note and "int16" in note and "float64" in note for note in store.notes)
    cx, cy = store.read_chunk(0)
    assert cx.dtype == np.float64 and cy.dtype == np.float64
    np.testing.assert_array_equal(cx, x.astype(np.float64))


def test_mixed_float_dtypes_returned_as_float64(tmp_path):
    x = np.ones((4, 2), dtype=np.float32)
    y = np.ones(4, dtype=np.float64)
    store = open_store(_plain_store(tmp_path / "p.zarr", x, y))
    assert store.dtype == np.dtype("float64")
    assert any("'x'" in note and "float32" in note for note in store.notes)


def test_y_column_accepted_with_note(tmp_path):
    x, y = _samples(7, 2, "float32", seed=6)
    store = open_store(_plain_store(tmp_path / "p.zarr", x, y.reshape(7, 1)))
    assert any("'y'" in note and "(7, 1)" in note for note in store.notes)
    cx, cy = store.read_rows(0, 7)
    assert cy.shape == (7,)
    np.testing.assert_array_equal(cy, y)


def test_column_chunked_store_read_by_whole_rows(tmp_path):
    x, y = _samples(10, 4, "float32", seed=7)
    store = open_store(_plain_store(tmp_path / "p.zarr", x, y, x_chunks=(3, 2), y_chunks=(5,)))
    assert store.chunk_rows == 3 and store.n_chunks == 4
    cx, cy = store.read_chunk(1)
    assert cx.shape == (3, 4)
    np.testing.assert_array_equal(cx, x[3:6])
    np.testing.assert_array_equal(cy, y[3:6])


def test_sharded_store_uses_shard_rows(tmp_path):
    x, y = _samples(12, 2, "float32", seed=8)
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="w")
    group.create_array("x", shape=x.shape, chunks=(2, 2), shards=(6, 2), dtype=x.dtype)[...] = x
    group.create_array("y", shape=y.shape, chunks=(4,), dtype=y.dtype)[...] = y
    store = open_store(str(tmp_path / "p.zarr"))
    assert store.chunk_rows == 6 and store.n_chunks == 2
    assert store.identity()["x_shards"] == [6, 2]
    np.testing.assert_array_equal(store.read_chunk(1)[0], x[6:])


def test_other_array_names(tmp_path):
    x, y = _samples(5, 2, "float32", seed=9)
    url = _plain_store(tmp_path / "p.zarr", x, y, x_name="features", y_name="labels")
    store = open_store(url, x="features", y="labels")
    np.testing.assert_array_equal(store.read_chunk(0)[1], y)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_missing_store(tmp_path):
    url = str(tmp_path / "nope.zarr")
    with pytest.raises(StoreNotFoundError, match="nope.zarr"):
        open_store(url)
    assert not os.path.exists(url)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreNotFoundError, match="empty"):
        open_store(str(tmp_path / "empty"))


def test_missing_array_names_what_is_there(tmp_path):
    x, _ = _samples(5, 2, "float32")
    url = _plain_store(tmp_path / "p.zarr", x, None)
    with pytest.raises(StoreNotFoundError) as info:
        open_store(url)
    msg = str(info.value)
    assert "'y'" in msg and "p.zarr" in msg and "'x'" in msg
    assert "\n" not in msg
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize(
    "x_shape, y_shape, x_dtype, y_dtype, array, fragment",
    [
        ((10, 2, 2), (10,), "f4", "f4", "x", "3 dimensions"),
        ((10,), (10,), "f4", "f4", "x", "1 dimension ("),
        ((10, 2), (10, 2), "f4", "f4", "y", "shape (10, 2)"),
        ((10, 2), (9,), "f4", "f4", "y", "9 rows"),
        ((0, 2), (0,), "f4", "f4", "x", "0 rows"),
        ((10, 0), (10,), "f4", "f4", "x", "0 columns"),
        ((10, 2), (10,), "c8", "f4", "x", "complex"),
        ((10, 2), (10,), "f4", "<M8[s]", "y", "not numeric"),
    ],
)
def test_format_errors(tmp_path, x_shape, y_shape, x_dtype, y_dtype, array, fragment):
    url = _plain_store(
        tmp_path / "p.zarr",
        np.zeros(x_shape, dtype=x_dtype),
        np.zeros(y_shape, dtype=y_dtype),
        x_chunks=tuple(max(s, 1) for s in x_shape),
        y_chunks=tuple(max(s, 1) for s in y_shape),
    )
    with pytest.raises(StoreFormatError) as info:
        open_store(url)
    msg = str(info.value)
    assert f"array '{array}'" in msg and fragment in msg and "expected" in msg
    assert "p.zarr" in msg and "\n" not in msg
    assert isinstance(info.value, ValueError)


def test_exact_dimension_message(tmp_path):
    url = _plain_store(tmp_path / "data.zarr", np.zeros((10, 2, 2), "f4"), np.zeros(10, "f4"))
    with pytest.raises(StoreFormatError) as info:
        open_store(url)
    assert str(info.value) == (
        f"array 'x' in store '{url}' has 3 dimensions (shape (10, 2, 2)); "
        "expected 2 (n_samples, n_features)"
    )


def test_index_and_row_range_errors(tmp_path):
    store = create_sample_store(str(tmp_path / "s.zarr"), n_samples=5, n_features=2, chunk_rows=2)
    for bad in (-1, 3, 1.0, True):
        with pytest.raises(InputError):
            store.chunk_bounds(bad)
    assert store.chunk_bounds(np.int64(2)) == (4, 5)
    for start, stop in ((-1, 2), (3, 2), (0, 6)):
        with pytest.raises(InputError):
            store.read_rows(start, stop)


def test_write_rows_errors(tmp_path):
    store = create_sample_store(str(tmp_path / "s.zarr"), n_samples=5, n_features=2, chunk_rows=2)
    with pytest.raises(InputError, match="'x'"):
        write_rows(store, 0, np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(InputError, match="'y'"):
        write_rows(store, 0, np.zeros((2, 2)), np.zeros(3))
    with pytest.raises(InputError):
        write_rows(store, 4, np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(InputError):
        write_rows(store, 0, np.zeros((2, 2), dtype=complex), np.zeros(2))


def test_create_errors(tmp_path):
    url = str(tmp_path / "s.zarr")
    create_sample_store(url, n_samples=3, n_features=1, chunk_rows=2)
    with pytest.raises(InputError, match="already exists"):
        create_sample_store(url, n_samples=3, n_features=1, chunk_rows=2)
    again = create_sample_store(url, n_samples=4, n_features=2, chunk_rows=2, overwrite=True)
    assert again.n_samples == 4
    for kwargs in (
        {"n_samples": 0, "n_features": 1, "chunk_rows": 1},
        {"n_samples": 3, "n_features": 0, "chunk_rows": 1},
        {"n_samples": 3, "n_features": 1, "chunk_rows": 0},
        {"n_samples": 3, "n_features": 1, "chunk_rows": 1, "dtype": "int32"},
    ):
        with pytest.raises(InputError):
            create_sample_store(str(tmp_path / "t.zarr"), **kwargs)
    other = tmp_path / "not_a_store"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="refusing"):
        create_sample_store(str(other), n_samples=3, n_features=1, chunk_rows=1, overwrite=True)
    assert (other / "keep.txt").exists()


def test_storage_options_on_local_path_rejected(tmp_path):
    url = str(tmp_path / "s.zarr")
    create_sample_store(url, n_samples=3, n_features=1, chunk_rows=2)
    with pytest.raises(InputError, match="storage_options"):
        open_store(url, storage_options={"anon": True})


def test_open_mode_checked(tmp_path):
    url = str(tmp_path / "s.zarr")
    create_sample_store(url, n_samples=3, n_features=1, chunk_rows=2)
    with pytest.raises(InputError):
        StoreSpec.make(url).open(mode="w")


# ---------------------------------------------------------------------------
# fsspec URLs
# ---------------------------------------------------------------------------


def test_memory_url_round_trip():
    pytest.importorskip("fsspec", reason="memory:// stores need fsspec")
    url = f"memory://stream-relu-test-{uuid.uuid4().hex}/s.zarr"
    x, y = _samples(9, 3, "float32", seed=10)
    store = create_sample_store(url, n_samples=9, n_features=3, chunk_rows=4)
    for i in range(store.n_chunks):
        start, stop = store.chunk_bounds(i)
        write_rows(store.spec, start, x[start:stop], y[start:stop])
    reopened = open_store(url)
    assert reopened.identity()["url"] == url
    rx, ry = reopened.read_rows(0, 9)
    np.testing.assert_array_equal(rx, x)
    np.testing.assert_array_equal(ry, y)
    with pytest.raises(StoreNotFoundError, match="memory://"):
        open_store(f"memory://stream-relu-test-{uuid.uuid4().hex}/missing.zarr")
