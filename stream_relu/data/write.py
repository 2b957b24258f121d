"""Writing sample stores and output arrays.

This module owns everything that writes: creating a sample store
(:func:`create_sample_store`), writing rows into one (:func:`write_rows`),
appending rows and committing them (:func:`append_rows`), and the float64
output arrays scores are written to (:class:`OutputSpec`,
:func:`create_output_array`, :func:`open_output_array`).

Every array is created by :func:`._zarr.create_row_array` (zarr format 3,
chunked by rows, zarr's default compressor for the dtype followed by a
crc32c checksum, ``write_empty_chunks=True``) and every row written goes
through :func:`._zarr.coerce_rows`.

It imports numpy, the package's errors, :mod:`._zarr` and :mod:`.read` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stream_relu.errors import InputError

from ._zarr import (
    COMMITTED_ROWS_ATTR,
    NATIVE_FLOATS,
    WRITE_CONFIG,
    RowLayout,
    as_int,
    coerce_rows,
    create_row_array,
    open_group,
    storage_errors,
)
from .read import SampleStore, StoreSpec

__all__ = [
    "create_sample_store",
    "write_rows",
    "append_rows",
    "OutputSpec",
    "create_output_array",
    "open_output_array",
]


def _create_mode(overwrite):
    """zarr's mode for creating a group: replace what is there, or fail when something is."""
    return "w" if overwrite else "w-"


def _float_dtype(dtype):
    """``dtype`` as float32 or float64 in native byte order, or InputError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in NATIVE_FLOATS:
        raise InputError(f"dtype must be float32 or float64, got {dt}")
    return dt.newbyteorder("=")


def _checked_attributes(attributes):
    """Group attributes as a dict (empty when None), or InputError."""
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping):
        raise InputError(f"attributes must be a mapping, got {type(attributes).__name__}")
    return dict(attributes)


def create_sample_store(
    url,
    *,
    n_samples,
    n_features,
    chunk_rows,
    dtype="float32",
    x="x",
    y="y",
    attributes=None,
    overwrite=False,
    storage_options=None,
):
    """Create an empty sample store (zarr format 3) ready for :func:`write_rows`.

    Parameters
    ----------
    url : str or os.PathLike
        Local path or URL of the new zarr group.
    n_samples, n_features : int
        Shape of ``x``; ``y`` has ``n_samples`` rows.
    chunk_rows : int
        Rows per chunk (clipped to ``n_samples``).  Both arrays are chunked
        by rows only: ``(chunk_rows, n_features)`` and ``(chunk_rows,)``.
    dtype : {"float32", "float64"}, default "float32"
        dtype of both arrays.
    x, y : str
        Array names.
    attributes : mapping, optional
        JSON-able group attributes.
    overwrite : bool, default False
        Replace whatever store is at ``url``.  A local directory that holds
        files but no zarr store is never replaced.
    storage_options : dict, optional
        Options for fsspec.

    Returns
    -------
    SampleStore
        The new store, opened in mode ``"r+"``.

    Raises
    ------
    InputError
        A size or dtype is invalid, or a store exists and ``overwrite`` is
        False.

    Notes
    -----
    Both arrays are encoded with zarr's default compressor for the dtype
    followed by a crc32c checksum, and written with
    ``write_empty_chunks=True``: a chunk of zeros is stored as an object, so
    a chunk that was never written (absent from storage) can be told from
    one that holds zeros.
    """
    spec = StoreSpec.make(url, x=x, y=y, storage_options=storage_options)
    layout = RowLayout.checked(n_samples, chunk_rows, n_features)
    dt = _float_dtype(dtype)
    group = open_group(
        spec.url,
        spec.options,
        _create_mode(overwrite),
        holds=f"arrays '{spec.x}' and '{spec.y}'",
        attributes=_checked_attributes(attributes),
    )
    with storage_errors(spec.url):
        create_row_array(group, spec.x, layout, dt, by_feature=True)
        create_row_array(group, spec.y, layout, dt, by_feature=False)
    return SampleStore(spec, mode="r+")


def _writable(store):
    """``store`` opened in mode ``"r+"`` (a spec or a read-only store is (re)opened)."""
    if isinstance(store, StoreSpec):
        return store.open("r+")
    if isinstance(store, SampleStore):
        return store if store.mode == "r+" else store.spec.open("r+")
    raise InputError(f"store must be a SampleStore or a StoreSpec, got {type(store).__name__}")


def write_rows(store, start, x_rows, y_rows):
    """Write rows ``[start, start + len(x_rows))`` of ``x`` and ``y``.

    Parameters
    ----------
    store : SampleStore or StoreSpec
        The store; a spec, or a store opened read-only, is (re)opened in
        mode ``"r+"``.
    start : int
        First row written.
    x_rows : array_like
        Shape ``(rows, n_features)``.
    y_rows : array_like
        Shape ``(rows,)`` (``(rows, 1)`` is accepted too).

    Raises
    ------
    InputError
        The shapes do not match the store, the rows fall outside it, or the
        values cannot be stored in its dtype.

    Notes
    -----
    The arrays are written with ``write_empty_chunks=True``, so rows of
    zeros are stored.  Tasks writing in parallel must each write whole
    chunks (rows aligned on :attr:`SampleStore.chunk_rows`, for ``x`` and
    ``y`` alike): two tasks writing parts of one chunk would race.  ``x`` is
    written first and ``y`` second; a chunk is complete only once both are.
    """
    store = _writable(store)
    start = as_int(start, "start row")
    x, y = coerce_rows(store, x_rows, y_rows)
    n = x.shape[0]
    if start < 0 or start + n > store.n_samples:
        raise InputError(
            f"rows [{start}, {start + n}) are not inside [0, {store.n_samples}) "
            f"of store '{store.spec.url}'"
        )
    if n == 0:
        return
    with storage_errors(store.spec.url):
        store.x_array[start:start + n] = x
        store.y_array[start:start + n] = y


def append_rows(url, x_rows, y_rows, *, x="x", y="y", storage_options=None):
    """Append rows to a sample store, committing them only once their data landed.

    The arrays are resized, the rows written, and only then the group
    attribute ``committed_rows`` is raised to the new row count.  Readers
    read ``committed_rows`` rows, so a crash in the middle never exposes
    half-written rows; the next append overwrites them.  A store without
    the attribute gets it (set to its current rows) on its first append.

    Parameters
    ----------
    url : str
        Path or URL of the store.
    x_rows : ndarray of shape (k, n_features)
        Inputs to append.
    y_rows : ndarray of shape (k,)
        Labels to append (``(k, 1)`` is accepted too).
    x, y : str
        Array names.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    int
        The committed row count after the append.
    """
    spec = StoreSpec.make(url, x=x, y=y, storage_options=storage_options)
    store = SampleStore(spec, mode="r+")
    x_new, y_new = coerce_rows(store, x_rows, y_rows)
    start = store.n_samples
    stop = start + x_new.shape[0]
    with storage_errors(spec.url):
        if COMMITTED_ROWS_ATTR not in store.attrs:
            store.group.attrs[COMMITTED_ROWS_ATTR] = int(start)
        store.x_array.resize((stop, store.n_features))
        store.y_array.resize((stop,) + tuple(store.y_array.shape[1:]))
        store.x_array[start:stop] = x_new
        store.y_array[start:stop] = y_new
        store.group.attrs[COMMITTED_ROWS_ATTR] = int(stop)
    return int(stop)


# ---------------------------------------------------------------------------
# output arrays
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputSpec:
    """Where one output array lives (picklable; tasks open it themselves)."""

    url: str
    name: str
    storage_options: tuple = ()


def create_output_array(url, name, *, n_samples, chunk_rows, overwrite=False, storage_options=None):
    """Create a group at ``url`` holding a float64 array ``name`` of ``n_samples`` rows.

    The array is chunked by ``chunk_rows``, encoded with zarr's default
    compressor plus a crc32c checksum, and written with
    ``write_empty_chunks=True``, like the sample stores.  As for those, a
    local non-empty directory that holds no zarr store is never replaced.

    Returns
    -------
    OutputSpec
    """
    spec = StoreSpec.make(url, storage_options=storage_options)
    layout = RowLayout.checked(n_samples, chunk_rows)
    group = open_group(spec.url, spec.options, _create_mode(overwrite), holds=f"array '{name}'")
    with storage_errors(spec.url):
        create_row_array(group, name, layout, "float64", by_feature=False)
    return OutputSpec(spec.url, name, spec.storage_options)


def open_output_array(out):
    """Open the array of an :class:`OutputSpec` for writing."""
    group = open_group(out.url, dict(out.storage_options), "r+", holds=f"array '{out.name}'")
    with storage_errors(out.url):
        return group[out.name].with_config(WRITE_CONFIG)
