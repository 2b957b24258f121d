"""Messages of the store checks that say how to fix a common layout mistake."""

import numpy as np
import pytest
import zarr

import stream_relu as sr
from stream_relu.errors import StoreFormatError


def _store(path, x_shape, y_shape, attrs=None):
    group = zarr.open_group(str(path), mode="w", attributes=attrs or {})
    group.create_array("x", shape=x_shape, dtype="f8")[...] = np.ones(x_shape)
    group.create_array("y", shape=y_shape, dtype="f8")[...] = np.ones(y_shape)
    return str(path)


def test_a_transposed_x_is_named_with_the_fix(tmp_path):
    path = _store(tmp_path / "t.zarr", (5, 400), (400,))  # x written as (n_features, n_samples)
    with pytest.raises(StoreFormatError) as info:
        sr.open_store(path)
    text = str(info.value)
    assert "array 'y'" in text and "has 400 rows" in text and "expected 5" in text
    assert "Array 'x' looks transposed" in text and "(n_samples, n_features)" in text and "x.T" in text
    assert "\n" not in text


def test_a_transposed_x_with_committed_rows_is_named_too(tmp_path):
    path = _store(tmp_path / "t.zarr", (5, 400), (400,), attrs={"committed_rows": 400})
    with pytest.raises(StoreFormatError, match="looks transposed"):
        sr.open_store(path)


def test_other_row_mismatches_get_no_transpose_hint(tmp_path):
    path = _store(tmp_path / "m.zarr", (300, 5), (400,))
    with pytest.raises(StoreFormatError) as info:
        sr.open_store(path)
    assert "has 400 rows" in str(info.value) and "transposed" not in str(info.value)


def test_a_square_x_gets_no_transpose_hint(tmp_path):
    path = _store(tmp_path / "s.zarr", (6, 6), (7,))
    with pytest.raises(StoreFormatError) as info:
        sr.open_store(path)
    assert "transposed" not in str(info.value)


def test_a_row_vector_y_is_named_with_the_fix(tmp_path):
    path = _store(tmp_path / "r.zarr", (400, 5), (1, 400))
    with pytest.raises(StoreFormatError, match=r"row vector: store it as \(400,\), e\.g\. write y\.reshape\(-1\)"):
        sr.open_store(path)
