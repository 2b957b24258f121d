"""Property-based tests of the two readers of outside input: the zarr store reader
(:func:`stream_relu.data.open_store` and :class:`~stream_relu.data.SampleStore`)
and the model-file loader (:func:`stream_relu.network.load_model`).

The property for both: any input either loads to exactly what plain zarr / plain
``json`` read, or raises one of the package's own errors (a
:class:`~stream_relu.errors.StreamReluError`).  Any other exception escaping
the package (a bare ``ValueError``, ``KeyError``, ``OverflowError`` ... from
zarr, numpy, json or jsonschema) fails the test.

Hypothesis profiles: CI (the ``CI`` environment variable is set) uses the
derandomized "ci" profile, so every CI run draws the same examples and a
failure there reproduces locally with ``CI=true pytest tests/test_properties.py``.
The "dev" profile is derandomized as well, with fewer examples.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import warnings
from importlib import resources

import numpy as np
import zarr
from zarr.storage import MemoryStore
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stream_relu.data import StoreSpec
from stream_relu.errors import DataError, StreamReluError
from stream_relu.network import load_model

# CI runs the derandomized "ci" profile: a fixed, reproducible set of examples.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# ---------------------------------------------------------------------------
# store reader
# ---------------------------------------------------------------------------

#: dtypes the reader accepts (integers, float16 and bool are converted to
#: float64; big-endian floats are returned in native order).
_REAL_DTYPES = ["float32", "float64", "float16", "int8", "int32", "uint16", "bool", ">f4", ">f8"]
#: dtypes the reader must refuse with StoreFormatError.
_OTHER_DTYPES = ["complex64", "<U3", "<M8[s]", "<m8[s]", "str"]


def _zarr_supports(dtype, zarr_format):
    """Whether this zarr writes and reads back an array of ``dtype`` in ``zarr_format``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = zarr.create_array(
                MemoryStore(), shape=(2,), chunks=(1,), dtype=dtype, zarr_format=zarr_format
            )
            arr[...] = _fill_values(dtype, (2,))
            arr[...]
    except Exception:
        return False
    return True


def _fill_values(dtype, shape):
    """Plain values of ``dtype`` (used only to probe zarr's support)."""
    if dtype == "str":
        return np.full(shape, "ab", dtype=np.dtypes.StringDType())
    return np.zeros(shape, dtype=np.dtype(dtype))


_DTYPES_BY_FORMAT = {
    fmt: [dt for dt in _REAL_DTYPES + _OTHER_DTYPES if _zarr_supports(dt, fmt)] for fmt in (2, 3)
}


def _is_real(dtype):
    return dtype in _REAL_DTYPES


def _values(dtype, shape):
    """Strategy for an array of ``dtype``: full range, NaN and infinities included for floats."""
    if dtype == "str":
        return st.lists(
            st.text(max_size=4), min_size=math.prod(shape), max_size=math.prod(shape)
        ).map(lambda items: np.array(items, dtype=np.dtypes.StringDType()).reshape(shape))
    dt = np.dtype(dtype)
    if dt.kind == "f":
        # finite values over the dtype's whole range, plus the special ones
        big = float(np.finfo(dt).max)
        elements = st.floats(min_value=-big, max_value=big, width=8 * dt.itemsize) | st.sampled_from(
            [math.nan, -math.nan, math.inf, -math.inf, -0.0]
        )
        return hnp.arrays(dt, shape, elements=elements)
    return hnp.arrays(dt, shape)


#: y layouts relative to n rows: valid ones first (hypothesis shrinks towards them).
_Y_LAYOUTS = {
    "vector": lambda n: (n,),
    "column": lambda n: (n, 1),
    "two_columns": lambda n: (n, 2),
    "one_row_too_many": lambda n: (n + 1,),
    "column_too_long": lambda n: (n + 1, 1),
    "matrix": lambda n: (n, 3),
    "scalar": lambda n: (),
    "three_dims": lambda n: (n, 1, 1),
    # no array named y: nothing at all, or a group of that name
    "absent": lambda n: (n,),
    "group": lambda n: (n,),
}
#: x layouts relative to (n, d).
_X_LAYOUTS = {
    "matrix": lambda n, d: (n, d),
    "vector": lambda n, d: (n,),
    "three_dims": lambda n, d: (n, d, 1),
}


def _chunk_shape(shape, row_chunk, col_chunk):
    """A zarr chunk shape for ``shape``: ``row_chunk`` rows, ``col_chunk`` (or all) columns."""
    if len(shape) == 0:
        return ()
    out = [row_chunk]
    for size in shape[1:2]:
        out.append(col_chunk if col_chunk is not None else max(size, 1))
    out.extend(max(s, 1) for s in shape[2:])
    return tuple(out)


@st.composite
def store_cases(draw):
    """A sample store layout and its contents, as plain-zarr writing instructions."""
    zarr_format = draw(st.sampled_from([3, 2]))
    dtypes = _DTYPES_BY_FORMAT[zarr_format]
    real = [dt for dt in dtypes if _is_real(dt)]
    # "complete": a well-formed store with every row written and every chunk stored;
    # "partial": well-formed, but rows may be left unwritten and empty chunks unstored;
    # "free": every knob drawn freely, wrong shapes and dtypes included
    kind = draw(st.sampled_from(["complete", "partial", "free"]))
    if kind != "free":
        dtype_strategy = st.sampled_from(real)
        n = draw(st.integers(1, 40))
        d = draw(st.integers(1, 5))
        x_layout = "matrix"
        y_layout = draw(st.sampled_from(["vector", "column"]))
    else:
        dtype_strategy = st.sampled_from(dtypes)
        n = draw(st.integers(0, 40))
        d = draw(st.integers(0, 5))
        x_layout = draw(st.sampled_from(["matrix"] * 4 + ["vector", "three_dims"]))
        y_layout = draw(st.sampled_from(list(_Y_LAYOUTS)))
    x_shape = _X_LAYOUTS[x_layout](n, d)
    y_shape = _Y_LAYOUTS[y_layout](n)
    x_dtype = draw(dtype_strategy)
    y_dtype = draw(dtype_strategy)

    x_chunks = _chunk_shape(x_shape, draw(st.integers(1, 16)), draw(st.none() | st.integers(1, 5)))
    y_chunks = _chunk_shape(y_shape, draw(st.integers(1, 16)), draw(st.none() | st.integers(1, 2)))
    # format 3 only: sometimes shard x or y (shards are whole multiples of chunks)
    x_shards = y_shards = None
    if zarr_format == 3 and x_layout == "matrix" and draw(st.integers(0, 3)) == 0:
        x_shards = tuple(c * draw(st.integers(1, 3)) for c in x_chunks)
    if zarr_format == 3 and y_layout in ("vector", "column") and draw(st.integers(0, 3)) == 0:
        y_shards = tuple(c * draw(st.integers(1, 3)) for c in y_chunks)

    x = draw(_values(x_dtype, x_shape))
    y = draw(_values(y_dtype, y_shape))
    if kind == "complete":
        # every row written and every chunk stored: must read under either policy
        x_written, y_written = n, n
        write_empty_chunks = True
    else:
        # rows actually written (the rest are left to the fill value), and whether
        # chunks equal to the fill value are stored at all
        x_written = draw(st.integers(0, n))
        y_written = draw(st.integers(0, n))
        write_empty_chunks = draw(st.booleans())
    fill_value = None
    if draw(st.booleans()) and _is_real(x_dtype) and _is_real(y_dtype):
        fill_value = draw(st.sampled_from([0, 1, math.nan]))
        if fill_value != fill_value and not (
            np.dtype(x_dtype).kind == "f" and np.dtype(y_dtype).kind == "f"
        ):
            fill_value = 1
    return {
        "zarr_format": zarr_format,
        "n": n,
        "d": d,
        "x_layout": x_layout,
        "y_layout": y_layout,
        "x": x,
        "y": y,
        "x_dtype": x_dtype,
        "y_dtype": y_dtype,
        "x_chunks": x_chunks,
        "y_chunks": y_chunks,
        "x_shards": x_shards,
        "y_shards": y_shards,
        # storage layout details the reader must not depend on
        "separator": draw(st.sampled_from(["/", "."])),
        "compressed": draw(st.booleans()),
        "x_written": x_written,
        "y_written": y_written,
        "fill_value": fill_value,
        # write_empty_chunks=True stores chunks equal to the fill value as objects
        "write_empty_chunks": write_empty_chunks,
        "missing_chunks": draw(st.sampled_from(["error", "fill"])),
        "kind": kind,
    }


def _write_plain(path, case):
    """Write the case's group with plain zarr calls (no package code)."""
    group = zarr.open_group(path, mode="w", zarr_format=case["zarr_format"])
    for name in ("x", "y"):
        data = case[name]
        if name == "y" and case["y_layout"] == "absent":
            continue
        if name == "y" and case["y_layout"] == "group":
            group.create_group(name)
            continue
        kwargs = {
            "chunk_key_encoding": {
                "name": "v2" if case["zarr_format"] == 2 else "default",
                "separator": case["separator"],
            }
        }
        if case[f"{name}_shards"] is not None:
            kwargs["shards"] = case[f"{name}_shards"]
        if case["fill_value"] is not None:
            kwargs["fill_value"] = case["fill_value"]
        if not case["compressed"]:
            kwargs["compressors"] = None
        arr = group.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=case[f"{name}_chunks"],
            config={"write_empty_chunks": case["write_empty_chunks"]},
            **kwargs,
        )
        if data.ndim == 0:
            arr[...] = data
        else:
            rows = min(case[f"{name}_written"], data.shape[0])
            if rows:
                arr[:rows] = data[:rows]


def _all_chunks_stored(path, name):
    """Whether every chunk (or shard) object of array ``name`` exists on disk."""
    meta = zarr.open_array(os.path.join(path, name), mode="r")
    outer = getattr(meta, "shards", None) or meta.chunks
    expected = math.prod(math.ceil(s / c) for s, c in zip(meta.shape, outer))
    found = 0
    for _, _, files in os.walk(os.path.join(path, name)):
        found += sum(f not in ("zarr.json", ".zarray", ".zattrs", ".zgroup") for f in files)
    return found == expected


def _assert_same(got, expected):
    """Exact equality: same shape and dtype, NaN where NaN, same sign of zeros."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


@given(case=store_cases())
def test_store_reader_reads_what_zarr_reads_or_raises_own_error(case):
    """Any plain-zarr store either reads to exactly what zarr reads, or raises a StreamReluError."""
    note({k: v for k, v in case.items() if k not in ("x", "y")})
    event(f"case kind: {case['kind']}")
    note(f"x = {case['x']!r}\ny = {case['y']!r}")
    n = case["n"]
    x_dtype, y_dtype = case["x"].dtype, case["y"].dtype
    layout_ok = (
        case["x_layout"] == "matrix"
        and case["y_layout"] in ("vector", "column")
        and n >= 1
        and case["d"] >= 1
        and _is_real(case["x_dtype"])
        and _is_real(case["y_dtype"])
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "store.zarr")
        with warnings.catch_warnings():
            # zarr warns about format-3 dtypes without a finished spec; writing is all we need
            warnings.simplefilter("ignore")
            _write_plain(path, case)
            plain_x = zarr.open_array(os.path.join(path, "x"), mode="r")[...]
            if case["y_layout"] in ("absent", "group"):
                plain_y, chunks_present = None, False
            else:
                plain_y = zarr.open_array(os.path.join(path, "y"), mode="r")[...]
                chunks_present = _all_chunks_stored(path, "x") and _all_chunks_stored(path, "y")

        expect_ok = layout_ok and (case["missing_chunks"] == "fill" or chunks_present)
        try:
            store = StoreSpec.make(path, missing_chunks=case["missing_chunks"]).open()
            x, y = store.read_rows(0, store.n_samples)
            pieces = [store.read_chunk(i) for i in range(store.n_chunks)]
        except StreamReluError as exc:
            note(f"raised {type(exc).__name__}: {exc}")
            event(f"store refused: {type(exc).__name__}")
            # a store that is well formed and whose chunks are all readable must load
            assert not expect_ok, f"valid store refused: {type(exc).__name__}: {exc}"
            if layout_ok:
                # only the missing-chunk policy may refuse a well-formed store
                assert isinstance(exc, DataError), exc
            return

    event(f"store read, returned as {store.dtype}")
    assert layout_ok, "a store of the wrong shape or dtype was accepted"
    if case["missing_chunks"] == "error":
        assert chunks_present, "a store with chunks absent from storage was read under policy 'error'"

    # dtype: float32 only when both arrays are stored as float32
    both_f32 = x_dtype.newbyteorder("=") == np.float32 and y_dtype.newbyteorder("=") == np.float32
    dtype = np.dtype(np.float32 if both_f32 else np.float64)
    assert store.dtype == dtype
    if x_dtype.newbyteorder("=") not in (np.float32, np.float64) or y_dtype.newbyteorder(
        "="
    ) not in (np.float32, np.float64):
        assert store.notes, "a converted dtype was read without a note"

    # sizes and units of work
    d = case["d"]
    assert (store.n_samples, store.n_features) == (n, d)
    outer_rows = (case["x_shards"] or case["x_chunks"])[0]
    assert store.chunk_rows == outer_rows
    assert store.n_chunks == math.ceil(n / outer_rows)

    # values: exactly plain zarr's, cast to the returned dtype
    _assert_same(x, plain_x.astype(dtype))
    _assert_same(y, plain_y.reshape(-1).astype(dtype) if plain_y.ndim == 2 else plain_y.astype(dtype))
    assert x.shape == (n, d) and y.shape == (n,)
    assert x.flags.c_contiguous and y.flags.c_contiguous

    # the units of work tile the rows
    assert all(px.shape[0] == py.shape[0] for px, py in pieces)
    assert all(0 < px.shape[0] <= store.chunk_rows for px, _ in pieces)
    _assert_same(np.concatenate([px for px, _ in pieces]), x)
    _assert_same(np.concatenate([py for _, py in pieces]), y)
    assert all(px.flags.c_contiguous for px, _ in pieces)


# ---------------------------------------------------------------------------
# model-file loader
# ---------------------------------------------------------------------------

_EXAMPLE_TEXT = resources.files("stream_relu").joinpath("examples/model-v1.json").read_text()
_EXAMPLE = json.loads(_EXAMPLE_TEXT)
_EXAMPLE_WEIGHTS = {k: v for k, v in _EXAMPLE.items() if k not in ("provenance", "diagnostics")}

#: placeholders replaced in the serialized text by raw JSON text (see _RAW_TEXTS)
_RAW = "\x00raw{}\x00"
_RAW_TEXTS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e999",
    "1" + "0" * 400,  # an integer too large for a float
    "-" + "9" * 330,
    "1e-400",  # underflows to 0.0
    "-0.0",
    "[" * 5000 + "]" * 5000,  # nesting deeper than the recursion limit
    "{\"k\": " * 40 + "0" + "}" * 40,
    "1.0",
    "true",
    "null",
    "\"1\"",
]

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_numbers = finite_floats | st.integers(-(2**53), 2**53)
json_scalars = st.none() | st.booleans() | json_numbers | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def _paths(value, prefix=()):
    """Every path (tuple of keys / indices) into a JSON value, the root excluded."""
    out = []
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return out
    for key, item in items:
        out.append(prefix + (key,))
        out.extend(_paths(item, prefix + (key,)))
    return out


def _parent(doc, path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    return node


def _pick_path(draw, doc):
    """A path into ``doc``; top-level keys and the weights are drawn more often."""
    top = [(k,) for k in doc] if isinstance(doc, dict) else []
    main = [p for p in _paths(doc) if p[0] in ("format_version", "n_features", "n_hidden", "a", "W", "b", "u", "c")]
    every = _paths(doc)
    pools = [pool for pool in (top, main, every) if pool]
    if not pools:
        return None
    pool = draw(st.sampled_from(pools))
    return draw(st.sampled_from(pool))


def _reshape(doc, d, m, draw):
    """Give the weights ``d`` features and ``m`` units, consistently (the result should load)."""
    floats = st.lists(finite_floats, min_size=m, max_size=m)
    doc["a"] = draw(floats)
    doc["b"] = draw(floats)
    doc["W"] = [draw(floats) for _ in range(d)]
    doc["u"] = draw(st.lists(finite_floats, min_size=d, max_size=d))
    doc["n_features"] = d
    doc["n_hidden"] = m


@st.composite
def mutated_model_files(draw):
    """Bytes of a model file: the example, changed by a few random mutations."""
    # the weights alone (shrinks to short files), or the whole example with its provenance
    # and diagnostics
    doc = copy.deepcopy(draw(st.sampled_from([_EXAMPLE_WEIGHTS, _EXAMPLE])))
    raw = {}
    for _ in range(draw(st.integers(1, 3))):
        # "reshape" keeps the file loadable; listed twice so that many files still load
        op = draw(
            st.sampled_from(
                ["reshape", "reshape", "delete", "replace", "resize_list", "nest", "raw", "version", "wrap_root"]
            )
        )
        if op == "reshape":
            if isinstance(doc, dict):
                _reshape(doc, draw(st.integers(1, 5)), draw(st.integers(0, 4)), draw)
            continue
        if op == "version":
            if isinstance(doc, dict):
                doc["format_version"] = draw(
                    st.sampled_from([1, 0, 2, -1, 1.0, 1.5, "1", True, None, [1], 10**30])
                )
            continue
        if op == "wrap_root":
            doc = draw(st.sampled_from([[doc], {"model": doc}, "model"]))
            continue
        path = _pick_path(draw, doc)
        if path is None:
            continue
        parent = _parent(doc, path)
        key = path[-1]
        if op == "delete":
            del parent[key]
        elif op == "replace":
            old = parent[key]
            parent[key] = draw(json_values.filter(lambda v, old=old: type(v) is not type(old)))
        elif op == "resize_list":
            target = parent[key]
            if isinstance(target, list):
                if target and draw(st.booleans()):
                    target.pop(draw(st.integers(0, len(target) - 1)))
                else:
                    extra = copy.deepcopy(target[0]) if target and draw(st.booleans()) else draw(json_values)
                    target.append(extra)
        elif op == "nest":
            parent[key] = draw(st.sampled_from([[parent[key]], {"v": parent[key]}, [[parent[key]]]]))
        elif op == "raw":
            tag = _RAW.format(len(raw))
            raw[json.dumps(tag)] = draw(st.sampled_from(_RAW_TEXTS))
            parent[key] = tag
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 1])), sort_keys=draw(st.booleans()))
    for tag, replacement in raw.items():
        text = text.replace(tag, replacement)
    data = text.encode("utf-8")
    # byte-level damage: truncation, inserted bytes, or a file of random bytes
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "insert", "random"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "insert":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif damage == "random":
        data = draw(st.binary(max_size=64))
    return data


@st.composite
def valid_model_documents(draw):
    """A model document that must load: random d >= 1, m >= 0, finite numbers."""
    d = draw(st.integers(1, 6))
    m = draw(st.integers(0, 5))
    numbers = json_numbers

    def vec(k):
        return draw(st.lists(numbers, min_size=k, max_size=k))

    doc = {"format_version": 1, "a": vec(m), "W": [vec(m) for _ in range(d)], "b": vec(m), "u": vec(d)}
    doc["c"] = draw(numbers)
    if draw(st.booleans()):
        doc["n_features"] = d
    if draw(st.booleans()):
        doc["n_hidden"] = m
    if draw(st.booleans()):
        doc["provenance"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "package_version": st.text(max_size=6),
                    "store": st.none() | st.dictionaries(st.text(max_size=4), json_values, max_size=2),
                    "settings": st.dictionaries(st.text(max_size=4), json_values, max_size=3),
                },
            )
        )
    if draw(st.booleans()):
        doc["diagnostics"] = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=4))
    if draw(st.booleans()):
        doc["comment"] = draw(json_values)  # extra keys are allowed by the schema
    return doc


def _check_loaded(model, data):
    """The loaded model holds exactly what json reads from the same bytes."""
    doc = json.loads(data.decode("utf-8"))
    assert isinstance(doc, dict)
    assert doc["format_version"] in (1, 2)
    m, d = len(doc["a"]), len(doc["u"])
    assert d >= 1
    assert len(doc["b"]) == m and len(doc["W"]) == d and all(len(row) == m for row in doc["W"])
    if "n_features" in doc:
        assert doc["n_features"] == d
    if "n_hidden" in doc:
        assert doc["n_hidden"] == m
    expected = {
        "a": np.array(doc["a"], dtype=np.float64).reshape(m),
        "W": np.array(doc["W"], dtype=np.float64).reshape(d, m),
        "b": np.array(doc["b"], dtype=np.float64).reshape(m),
        "u": np.array(doc["u"], dtype=np.float64).reshape(d),
    }
    for name, want in expected.items():
        got = getattr(model, name)
        assert got.dtype == np.float64 and got.shape == want.shape, (name, got.shape, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want), err_msg=name)
    assert model.c == float(doc["c"]) and math.copysign(1, model.c) == math.copysign(1, float(doc["c"]))
    assert model.provenance == doc.get("provenance", {})
    assert model.diagnostics == doc.get("diagnostics", {})
    # model files are strict JSON: no weight may be NaN or infinite
    for name in ("a", "W", "b", "u"):
        assert np.isfinite(getattr(model, name)).all(), f"{name} holds a non-finite value"
    assert math.isfinite(model.c), "c is not finite"


def _load_bytes(data):
    """load_model on a temporary file holding ``data``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.json")
        with open(path, "wb") as fh:
            fh.write(data)
        return load_model(path)


#: the smallest model file that loads (d = 1, m = 0), with c left open
_SMALLEST = '{"format_version": 1, "a": [], "W": [[]], "b": [], "u": [0.0], "c": %s}'


# inputs that get past the usual checks (text encoding, number range, nesting depth);
# explicit examples, so that every run tries them and not only lucky draws
@example(data=b"\x80")  # not UTF-8
@example(data=json.dumps(_EXAMPLE_WEIGHTS).encode("utf-16"))  # JSON, but UTF-16
@example(data=b"\xef\xbb\xbf" + (_SMALLEST % "0").encode())  # UTF-8 byte-order mark
@example(data=(_SMALLEST % "NaN").encode())
@example(data=(_SMALLEST % "1e400").encode())  # overflows to infinity when parsed
@example(data=(_SMALLEST % ("1" + "0" * 400)).encode())  # integer beyond float range
@example(data=b'{"format_version": 1, "a": [1%s], "W": [[1]], "b": [0], "u": [0], "c": 0}' % (b"0" * 400))
# nesting deeper than the recursion limit, in a field the schema leaves free
@example(data=((_SMALLEST % "0")[:-1] + ', "diagnostics": {"k": %s}}' % ("[" * 5000 + "]" * 5000)).encode())
@given(data=mutated_model_files())
def test_model_loader_reads_what_json_reads_or_raises_own_error(data):
    """Any file either loads to exactly what json reads from it, or raises ModelFileError."""
    note(f"file bytes: {data[:400]!r}{' ...' if len(data) > 400 else ''}")
    try:
        model = _load_bytes(data)
    except StreamReluError as exc:
        note(f"raised {type(exc).__name__}: {exc}")
        event("model file refused")
        return
    event("model file loaded")
    _check_loaded(model, data)


@given(doc=valid_model_documents(), indent=st.sampled_from([None, 0, 2]))
def test_valid_model_documents_always_load_exactly(doc, indent):
    """Well-formed documents of any size (d >= 1, m >= 0) load, and to exactly their numbers."""
    data = json.dumps(doc, indent=indent).encode("utf-8")
    note(f"file: {data!r}")
    model = _load_bytes(data)
    _check_loaded(model, data)
    assert model.n_features == len(doc["u"]) and model.n_hidden == len(doc["a"])


def test_example_file_loads_exactly():
    data = _EXAMPLE_TEXT.encode("utf-8")
    _check_loaded(_load_bytes(data), data)
