"""The zarr sample store: where the samples ``(x, y)`` live and how they are read.

A sample store is a zarr group (format 3; format 2 is read too) holding two
arrays: ``x`` of shape ``(n_samples, n_features)`` and ``y`` of shape
``(n_samples,)`` (other array names can be chosen).  Any store written by
plain zarr is accepted; no attributes are required.

The unit of work is one *row chunk* of ``x``: its shard rows when ``x`` is
sharded, else its chunk rows.  A store also chunked by columns is still read
by whole rows, and ``y`` may be chunked differently from ``x`` since every
read goes by row range.

Values come back as float32 when both arrays are stored as float32, else as
float64.  Other real numeric dtypes (integers, float16, bool) are converted to
float64 when read, and :attr:`SampleStore.notes` says so in a human line.

Task graphs carry a :class:`StoreSpec` (small, picklable) rather than data;
each task opens the store itself with :meth:`StoreSpec.open`.

Stores made by :func:`create_sample_store` are zarr format 3, chunked by rows,
encoded with zarr's default compressor for the dtype followed by a crc32c
checksum, and written with ``write_empty_chunks=True`` so that a chunk of
zeros is stored as an object and a chunk that was never written can be told
from one that holds zeros.

This module imports numpy, zarr and the package's errors only.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import zarr
import zarr.errors
from zarr.codecs import Crc32cCodec
from zarr.core.sync import sync as zarr_sync
from zarr.storage import MemoryStore

from stream_relu.errors import (
    DataError,
    InputError,
    StoreFormatError,
    StoreNotFoundError,
)

__all__ = [
    "StoreSpec",
    "SampleStore",
    "open_store",
    "create_sample_store",
    "write_rows",
]

#: Runtime configuration of every array this module writes to.
_WRITE_CONFIG = {"write_empty_chunks": True}

#: group attribute a writer updates after the data of appended rows landed
COMMITTED_ROWS_ATTR = "committed_rows"

#: what a read does with a chunk absent from storage
MISSING_CHUNK_POLICIES = ("error", "fill")

#: dtypes that are returned as stored.
_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

#: numpy dtype kinds converted to float64 on read: bool, signed, unsigned, float.
_REAL_KINDS = "biuf"

#: Exceptions zarr raises when no group (or nothing at all) is at a location.
_NOT_FOUND_ERRORS = (FileNotFoundError,) + tuple(
    getattr(zarr.errors, name)
    for name in ("NodeNotFoundError", "GroupNotFoundError")
    if hasattr(zarr.errors, name)
)

_OPEN_MODES = ("r", "r+")


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def _as_int(value, what):
    """Return ``value`` as a Python int, refusing bools, floats and strings."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be an integer, got a bool ({value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise InputError(
            f"{what} must be an integer, got {type(value).__name__} ({value!r})"
        ) from None


def _positive_int(value, what):
    """Return ``value`` as an int ``>= 1`` or raise :class:`InputError`."""
    out = _as_int(value, what)
    if out < 1:
        raise InputError(f"{what} must be at least 1, got {out}")
    return out


def _local_path(url):
    """Filesystem path of ``url`` when it names a local file, else None."""
    if "://" not in url:
        return url
    if url.startswith("file://"):
        return url[len("file://"):]
    return None


def _zarr_store_kwargs(spec):
    """Keyword arguments that pass the spec's storage options on to zarr."""
    if not spec.storage_options:
        return {}
    if "://" not in spec.url:
        raise InputError(
            f"storage_options were given for store '{spec.url}', a local path; "
            "they only apply to URLs such as s3://... or file://..."
        )
    return {"storage_options": spec.options}


def _shape_str(shape):
    """``(10, 2)`` style text for a shape (always a tuple, even of length 1)."""
    return str(tuple(int(s) for s in shape))


def _dims(shape):
    """``1 dimension`` / ``3 dimensions``: the number of dimensions of a shape, in words."""
    return "1 dimension" if len(shape) == 1 else f"{len(shape)} dimensions"


def _stored_dtype(array):
    """The numpy dtype of a zarr array, or None when it has no numpy form."""
    try:
        return np.dtype(array.dtype)
    except TypeError:
        return None


def _read_dtype(array, name, url):
    """Dtype an array is returned in, and a note when values get converted.

    Parameters
    ----------
    array : zarr.Array
        The stored array.
    name : str
        Its name in the group, for messages.
    url : str
        The store, for messages.

    Returns
    -------
    dtype : numpy.dtype
        float32 or float64 (native byte order).
    note : str or None
        A human line when the stored values are converted.

    Raises
    ------
    StoreFormatError
        The dtype is complex or not numeric.
    """
    dt = _stored_dtype(array)
    expected = (
        "expected a real numeric dtype "
        "(float32 or float64; integers, float16 and bool are converted to float64)"
    )
    if dt is None or dt.kind not in _REAL_KINDS:
        found = array.dtype if dt is None else dt
        if dt is not None and dt.kind == "c":
            raise StoreFormatError(
                f"array '{name}' in store '{url}' has complex dtype {found}; {expected}"
            )
        raise StoreFormatError(
            f"array '{name}' in store '{url}' has dtype {found}, which is not numeric; {expected}"
        )
    native = dt.newbyteorder("=")
    if native in _NATIVE_FLOATS:
        return native, None
    return np.dtype(np.float64), (
        f"array '{name}' in store '{url}' has dtype {dt}; its values are converted to float64 when read"
    )


@functools.lru_cache(maxsize=None)
def _default_compressors(dtype_str):
    """zarr's default format-3 compressors for a dtype, as codec objects.

    zarr picks the default when an array is created with
    ``compressors="auto"``; creating a one-element array in a throwaway
    in-memory store is the public way to learn what it picks (including any
    change the user made through ``zarr.config``).
    """
    probe = zarr.create_array(
        MemoryStore(), shape=(1,), dtype=dtype_str, compressors="auto", zarr_format=3
    )
    return tuple(probe.compressors)


def _reopen(spec, mode):
    """Unpickling helper of :class:`SampleStore`: open the store again."""
    return SampleStore(spec, mode=mode)


# ---------------------------------------------------------------------------
# StoreSpec
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSpec:
    """Where a sample store lives; small and picklable so task graphs carry it instead of data.

    Parameters
    ----------
    url : str
        A local path, or any URL zarr opens (``file://``, ``memory://``,
        ``s3://`` and the other fsspec protocols).
    x : str, default "x"
        Name of the feature array in the group.
    y : str, default "y"
        Name of the response array in the group.
    storage_options : tuple, default ()
        ``(key, value)`` pairs handed to fsspec, sorted by key.  A dict is
        accepted and turned into that form; :meth:`make` does the same.
    missing_chunks : {"error", "fill"}, default "error"
        What a read does when a chunk it covers is absent from storage
        (zarr would silently return the fill value): raise
        :class:`~stream_relu.errors.DataError`, or read the fill value.

    Notes
    -----
    The spec holds no open handle: every process that needs the data calls
    :meth:`open`.  Nested option values (dicts, lists) are kept as given;
    the spec pickles either way but can only be hashed when they are hashable.
    """

    url: str
    x: str = "x"
    y: str = "y"
    storage_options: tuple = ()
    missing_chunks: str = "error"

    def __post_init__(self):
        if self.missing_chunks not in MISSING_CHUNK_POLICIES:
            raise InputError(
                f"missing_chunks must be one of {MISSING_CHUNK_POLICIES}, got {self.missing_chunks!r}"
            )
        url = self.url
        if isinstance(url, os.PathLike):
            url = os.fspath(url)
        if not isinstance(url, str) or not url:
            raise InputError(f"store url must be a non-empty string or path, got {self.url!r}")
        object.__setattr__(self, "url", url)
        for field in ("x", "y"):
            name = getattr(self, field)
            if not isinstance(name, str) or not name.strip("/"):
                raise InputError(f"array name {field} must be a non-empty string, got {name!r}")
        if self.x == self.y:
            raise InputError(f"arrays x and y must have different names, both are '{self.x}'")
        options = self.storage_options
        if options is None:
            options = ()
        elif isinstance(options, Mapping):
            options = tuple(options.items())
        try:
            pairs = [(key, value) for key, value in options]
        except (TypeError, ValueError):
            raise InputError(
                f"storage_options must be a dict or a tuple of (key, value) pairs, got {self.storage_options!r}"
            ) from None
        for key, _ in pairs:
            if not isinstance(key, str):
                raise InputError(f"storage_options keys must be strings, got {key!r}")
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise InputError(f"storage_options has a repeated key: {sorted(keys)}")
        object.__setattr__(self, "storage_options", tuple(sorted(pairs, key=lambda kv: kv[0])))

    @classmethod
    def make(cls, url, *, x="x", y="y", storage_options=None, missing_chunks="error"):
        """Build a spec from a url and an optional dict of storage options.

        Parameters
        ----------
        url : str or os.PathLike
            Local path or URL of the store.
        x, y : str
            Array names.
        storage_options : dict, optional
            Options for fsspec (credentials, endpoint, ...).
        missing_chunks : {"error", "fill"}
            See the class docstring.

        Returns
        -------
        StoreSpec
        """
        return cls(
            url, x=x, y=y, storage_options=dict(storage_options or {}), missing_chunks=missing_chunks
        )

    @property
    def options(self):
        """The storage options as a fresh dict.

        Returns
        -------
        dict
        """
        return dict(self.storage_options)

    def open(self, mode="r"):
        """Open the store and check its arrays.

        Parameters
        ----------
        mode : {"r", "r+"}, default "r"
            Read only, or read and write (the store must already exist).

        Returns
        -------
        SampleStore

        Raises
        ------
        StoreNotFoundError
            The store or one of its arrays does not exist.
        StoreFormatError
            The arrays have the wrong shape or dtype.
        """
        return SampleStore(self, mode=mode)


# ---------------------------------------------------------------------------
# SampleStore
# ---------------------------------------------------------------------------


class SampleStore:
    """An opened, checked sample store.

    Parameters
    ----------
    spec : StoreSpec
        Where the store lives.
    mode : {"r", "r+"}, default "r"
        Read only, or read and write.  The store must exist in both modes.

    Attributes
    ----------
    spec : StoreSpec
        Where the store lives.
    mode : str
        The mode it was opened in.
    group : zarr.Group
        The zarr group.
    x_array, y_array : zarr.Array
        The feature and response arrays (opened with
        ``write_empty_chunks=True`` in mode ``"r+"``).
    zarr_format : int
        2 or 3.
    n_samples, n_features : int
        Rows and columns of ``x``.
    chunk_rows : int
        Rows per unit of work: ``x``'s shard rows if it is sharded, else its
        chunk rows.  It may exceed ``n_samples``.
    n_chunks : int
        Number of units of work, ``ceil(n_samples / chunk_rows)``.
    dtype : numpy.dtype
        The dtype chunks are returned in: float32 when both arrays are stored
        as float32, else float64.
    notes : list of str
        Human lines about conversions applied on read.
    attrs : dict
        A plain-dict copy of the group attributes.

    Raises
    ------
    StoreNotFoundError
        The store or one of its arrays does not exist.
    StoreFormatError
        The arrays have the wrong shape or dtype.
    InputError
        ``mode`` or the spec's storage options are unusable.
    """

    def __init__(self, spec, *, mode="r"):
        if not isinstance(spec, StoreSpec):
            raise InputError(f"spec must be a StoreSpec, got {type(spec).__name__}")
        if mode not in _OPEN_MODES:
            raise InputError(f"mode must be one of {_OPEN_MODES}, got {mode!r}")
        self.spec = spec
        self.mode = mode
        self.notes = []
        url = spec.url

        self.group = _open_group(spec, mode)
        self.zarr_format = int(self.group.metadata.zarr_format)
        self.attrs = copy.deepcopy(dict(self.group.attrs))

        x_array = _get_array(self.group, spec.x, url)
        y_array = _get_array(self.group, spec.y, url)
        if mode == "r+":
            x_array = x_array.with_config(_WRITE_CONFIG)
            y_array = y_array.with_config(_WRITE_CONFIG)
        self.x_array = x_array
        self.y_array = y_array

        # shapes
        x_shape, y_shape = tuple(x_array.shape), tuple(y_array.shape)
        if len(x_shape) != 2:
            raise StoreFormatError(
                f"array '{spec.x}' in store '{url}' has {_dims(x_shape)} "
                f"(shape {_shape_str(x_shape)}); expected 2 (n_samples, n_features)"
            )
        if len(y_shape) == 2 and y_shape[1] == 1:
            self.notes.append(
                f"array '{spec.y}' in store '{url}' has shape {_shape_str(y_shape)}; "
                f"it is read as a vector of shape ({y_shape[0]},)"
            )
        elif len(y_shape) != 1:
            raise StoreFormatError(
                f"array '{spec.y}' in store '{url}' has {_dims(y_shape)} "
                f"(shape {_shape_str(y_shape)}); expected 1 (n_samples,) or (n_samples, 1)"
            )
        self._y_is_column = len(y_shape) == 2

        # dtypes
        x_dtype, x_note = _read_dtype(x_array, spec.x, url)
        y_dtype, y_note = _read_dtype(y_array, spec.y, url)
        self.notes.extend(note for note in (x_note, y_note) if note)
        self.dtype = np.dtype(np.float32) if x_dtype == y_dtype == np.float32 else np.dtype(np.float64)
        pairs = ((spec.x, x_dtype, spec.y, y_dtype), (spec.y, y_dtype, spec.x, x_dtype))
        for name, read, other, other_read in pairs:
            if read != self.dtype:
                self.notes.append(
                    f"array '{name}' in store '{url}' is {read} while array '{other}' is read "
                    f"as {other_read}; both are returned as {self.dtype}"
                )

        # sizes
        n_samples, n_features = int(x_shape[0]), int(x_shape[1])
        if n_samples == 0:
            raise StoreFormatError(
                f"array '{spec.x}' in store '{url}' has 0 rows (shape {_shape_str(x_shape)}); "
                "expected at least 1 sample"
            )
        if n_features == 0:
            raise StoreFormatError(
                f"array '{spec.x}' in store '{url}' has 0 columns (shape {_shape_str(x_shape)}); "
                "expected at least 1 feature"
            )
        committed = self.attrs.get(COMMITTED_ROWS_ATTR)
        if committed is not None:
            if not isinstance(committed, int) or isinstance(committed, bool) or not 0 <= committed <= n_samples:
                raise StoreFormatError(
                    f"attribute '{COMMITTED_ROWS_ATTR}' of store '{url}' is {committed!r}; expected an integer "
                    f"from 0 to the {n_samples} rows of array '{spec.x}'"
                )
            if int(y_shape[0]) < committed:
                raise StoreFormatError(
                    f"array '{spec.y}' in store '{url}' has {int(y_shape[0])} rows but "
                    f"'{COMMITTED_ROWS_ATTR}' says {committed} rows are committed"
                )
            if committed < n_samples or int(y_shape[0]) > committed:
                self.notes.append(
                    f"store '{url}' has {committed} committed rows; rows past them (a write in progress or "
                    "a crashed append) are not read"
                )
            n_samples = committed
            if n_samples == 0:
                raise StoreFormatError(f"store '{url}' has 0 committed rows; expected at least 1 sample")
        elif int(y_shape[0]) != n_samples:
            raise StoreFormatError(
                f"array '{spec.y}' in store '{url}' has {int(y_shape[0])} rows "
                f"(shape {_shape_str(y_shape)}); expected {n_samples}, the rows of array "
                f"'{spec.x}' (shape {_shape_str(x_shape)})"
            )
        self.n_samples = n_samples
        self.n_features = n_features

        # unit of work
        shards = getattr(x_array, "shards", None)
        self.chunk_rows = int(shards[0] if shards is not None else x_array.chunks[0])
        self.n_chunks = math.ceil(n_samples / self.chunk_rows)
        y_shards = getattr(y_array, "shards", None)
        y_rows = int(y_shards[0] if y_shards is not None else y_array.chunks[0])
        if y_rows != self.chunk_rows and n_samples > min(y_rows, self.chunk_rows):
            self.notes.append(
                f"array '{spec.y}' is chunked by {y_rows} rows and array '{spec.x}' by {self.chunk_rows}: "
                f"each unit of work reads whole rows of both, following '{spec.x}' (y chunks may be read twice)"
            )

    # -- pickling: reopen from the spec rather than shipping zarr handles --
    def __reduce__(self):
        return (_reopen, (self.spec, self.mode))

    def __repr__(self):
        return (
            f"SampleStore(url={self.spec.url!r}, x={self.spec.x!r}, y={self.spec.y!r}, "
            f"n_samples={self.n_samples}, n_features={self.n_features}, "
            f"chunk_rows={self.chunk_rows}, n_chunks={self.n_chunks}, dtype={self.dtype}, "
            f"mode={self.mode!r})"
        )

    def chunk_bounds(self, index):
        """Rows ``[start, stop)`` of one unit of work.

        Parameters
        ----------
        index : int
            Chunk index, ``0 <= index < n_chunks``.

        Returns
        -------
        start, stop : int
            The chunks tile ``[0, n_samples)``; only the last may be shorter
            than ``chunk_rows``.

        Raises
        ------
        InputError
            ``index`` is not an integer or is out of range.
        """
        i = _as_int(index, "chunk index")
        if not 0 <= i < self.n_chunks:
            raise InputError(
                f"chunk index {i} is out of range for store '{self.spec.url}', "
                f"which has {self.n_chunks} chunks (valid indices 0..{self.n_chunks - 1})"
            )
        start = i * self.chunk_rows
        return start, min(start + self.chunk_rows, self.n_samples)

    def read_chunk(self, index):
        """Read one unit of work.

        Parameters
        ----------
        index : int
            Chunk index, ``0 <= index < n_chunks``.

        Returns
        -------
        x : numpy.ndarray
            Shape ``(rows, n_features)``, C-contiguous, in :attr:`dtype`.
        y : numpy.ndarray
            Shape ``(rows,)``, in :attr:`dtype`.

        Raises
        ------
        InputError
            ``index`` is out of range.
        DataError
            The stored bytes cannot be decoded (e.g. a checksum mismatch).
        """
        start, stop = self.chunk_bounds(index)
        return self.read_rows(start, stop)

    def read_rows(self, start, stop):
        """Read rows ``[start, stop)`` of ``x`` and ``y``.

        Parameters
        ----------
        start, stop : int
            ``0 <= start <= stop <= n_samples``.

        Returns
        -------
        x : numpy.ndarray
            Shape ``(stop - start, n_features)``, C-contiguous, in :attr:`dtype`.
        y : numpy.ndarray
            Shape ``(stop - start,)``, in :attr:`dtype`.

        Raises
        ------
        InputError
            The range is not inside ``[0, n_samples]``.
        DataError
            The stored bytes cannot be decoded (e.g. a checksum mismatch).
        """
        start = _as_int(start, "start row")
        stop = _as_int(stop, "stop row")
        if not 0 <= start <= stop <= self.n_samples:
            raise InputError(
                f"row range [{start}, {stop}) is not inside [0, {self.n_samples}) "
                f"of store '{self.spec.url}'"
            )
        x = self._read(self.x_array, self.spec.x, start, stop)
        y = self._read(self.y_array, self.spec.y, start, stop)
        if self._y_is_column:
            y = y.reshape(-1)
        return (
            np.ascontiguousarray(x, dtype=self.dtype),
            np.ascontiguousarray(y, dtype=self.dtype),
        )

    def missing_chunk_keys(self, array, start, stop):
        """Storage keys of the chunks (or shards) of ``array`` covering rows ``[start, stop)`` that are absent."""
        if stop <= start:
            return []
        outer = getattr(array, "shards", None) or array.chunks
        rows = range(start // outer[0], (stop - 1) // outer[0] + 1)
        cols = [()] if array.ndim == 1 else [(c,) for c in range(math.ceil(array.shape[1] / outer[1]))]
        store = array.store_path.store
        missing = []
        for r in rows:
            for c in cols:
                key = array.metadata.encode_chunk_key((r,) + c)
                if not zarr_sync(store.exists(f"{array.path}/{key}" if array.path else key)):
                    missing.append(key)
        return missing

    def _read(self, array, name, start, stop):
        """Read whole rows of one array, turning decode failures into DataError."""
        if self.spec.missing_chunks == "error":
            missing = self.missing_chunk_keys(array, start, stop)
            if missing:
                shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                raise DataError(
                    f"rows [{start}, {stop}) of array '{name}' in store '{self.spec.url}': chunk {shown} "
                    f"is missing from storage, and zarr would read it as the fill value "
                    f"{getattr(array.fill_value, 'item', lambda: array.fill_value)()!r}. Plain zarr does not write chunks equal to the fill value "
                    "unless write_empty_chunks=True; if that is why, rerun with --missing-chunks fill"
                )
        try:
            return array[start:stop]
        except ValueError as exc:
            raise DataError(
                f"cannot decode rows [{start}, {stop}) of array '{name}' in store "
                f"'{self.spec.url}': {exc}"
            ) from exc

    def identity(self):
        """What tells whether two openings are of "the same" store.

        Returns
        -------
        dict
            JSON-able: ``url`` (absolute for local paths), ``x`` and ``y``
            (array names), ``zarr_format``, ``x_shape``, ``y_shape``,
            ``x_chunks``, ``x_shards`` (None when not sharded), ``x_dtype``
            and ``y_dtype`` (as stored), ``dtype`` (as returned) and
            ``chunk_rows``.  Storage options are left out: they may hold
            credentials.
        """
        local = _local_path(self.spec.url)
        url = os.path.abspath(local) if local is not None else self.spec.url
        shards = getattr(self.x_array, "shards", None)
        return {
            "url": url,
            "x": self.spec.x,
            "y": self.spec.y,
            "zarr_format": self.zarr_format,
            "x_shape": [int(s) for s in self.x_array.shape],
            "y_shape": [int(s) for s in self.y_array.shape],
            "x_chunks": [int(c) for c in self.x_array.chunks],
            "x_shards": None if shards is None else [int(s) for s in shards],
            "x_dtype": str(_stored_dtype(self.x_array)),
            "y_dtype": str(_stored_dtype(self.y_array)),
            "dtype": str(self.dtype),
            "chunk_rows": self.chunk_rows,
        }


def _open_group(spec, mode):
    """Open the spec's zarr group, mapping zarr's failures onto the package's errors."""
    url = spec.url
    kwargs = _zarr_store_kwargs(spec)
    local = _local_path(url)
    if local is not None and not os.path.exists(local):
        raise StoreNotFoundError(f"store '{url}' does not exist")
    try:
        return zarr.open_group(url, mode=mode, **kwargs)
    except _NOT_FOUND_ERRORS as exc:
        if local is not None:
            raise StoreNotFoundError(
                f"store '{url}' exists but holds no zarr group (no zarr.json or .zgroup at its root)"
            ) from exc
        raise StoreNotFoundError(f"store '{url}' does not exist or holds no zarr group") from exc
    except zarr.errors.ContainsArrayError as exc:
        raise StoreFormatError(
            f"store '{url}' is a single zarr array; expected a zarr group holding arrays "
            f"'{spec.x}' and '{spec.y}'"
        ) from exc


def _get_array(group, name, url):
    """The array ``name`` of ``group``, or StoreNotFoundError listing what is there."""
    node = group.get(name)
    if node is None:
        present = sorted(group.array_keys())
        there = (
            "arrays there: " + ", ".join(f"'{a}'" for a in present)
            if present
            else "the store holds no arrays"
        )
        raise StoreNotFoundError(f"array '{name}' not found in store '{url}' ({there})")
    if not isinstance(node, zarr.Array):
        raise StoreFormatError(
            f"'{name}' in store '{url}' is a group; expected an array"
        )
    return node


# ---------------------------------------------------------------------------
# module-level API
# ---------------------------------------------------------------------------


def open_store(url, *, x="x", y="y", storage_options=None):
    """Open a sample store for reading.

    Parameters
    ----------
    url : str or os.PathLike
        Local path or URL of the zarr group.
    x, y : str
        Array names.
    storage_options : dict, optional
        Options for fsspec.

    Returns
    -------
    SampleStore

    Raises
    ------
    StoreNotFoundError
        The store or one of its arrays does not exist.
    StoreFormatError
        The arrays have the wrong shape or dtype.
    """
    return StoreSpec.make(url, x=x, y=y, storage_options=storage_options).open()


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
    n_samples = _positive_int(n_samples, "n_samples")
    n_features = _positive_int(n_features, "n_features")
    chunk_rows = min(_positive_int(chunk_rows, "chunk_rows"), n_samples)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in _NATIVE_FLOATS:
        raise InputError(f"dtype must be float32 or float64, got {dt}")
    dt = dt.newbyteorder("=")
    if attributes is None:
        attributes = {}
    elif not isinstance(attributes, Mapping):
        raise InputError(f"attributes must be a mapping, got {type(attributes).__name__}")
    kwargs = _zarr_store_kwargs(spec)

    local = _local_path(spec.url)
    if overwrite and local is not None and os.path.isdir(local) and os.listdir(local):
        markers = ("zarr.json", ".zgroup", ".zarray")
        if not any(os.path.exists(os.path.join(local, m)) for m in markers):
            raise InputError(
                f"refusing to overwrite '{spec.url}': it is a non-empty directory "
                "that holds no zarr store"
            )
    try:
        group = zarr.open_group(
            spec.url,
            mode="w" if overwrite else "w-",
            zarr_format=3,
            attributes=dict(attributes),
            **kwargs,
        )
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as exc:
        raise InputError(
            f"store '{spec.url}' already exists; pass overwrite=True to replace it"
        ) from exc

    compressors = _default_compressors(dt.str) + (Crc32cCodec(),)
    group.create_array(
        spec.x,
        shape=(n_samples, n_features),
        chunks=(chunk_rows, n_features),
        dtype=dt,
        compressors=compressors,
        dimension_names=("sample", "feature"),
        config=_WRITE_CONFIG,
    )
    group.create_array(
        spec.y,
        shape=(n_samples,),
        chunks=(chunk_rows,),
        dtype=dt,
        compressors=compressors,
        dimension_names=("sample",),
        config=_WRITE_CONFIG,
    )
    return SampleStore(spec, mode="r+")


def _checked_rows(rows, name, target, url):
    """``rows`` as an array castable to the stored dtype of ``target``."""
    arr = np.asarray(rows)
    stored = _stored_dtype(target)
    if arr.dtype.kind not in _REAL_KINDS:
        raise InputError(f"rows for array '{name}' have dtype {arr.dtype}; expected real numbers")
    if stored is not None and not np.can_cast(arr.dtype, stored, casting="same_kind"):
        raise InputError(
            f"rows for array '{name}' have dtype {arr.dtype}, which cannot be stored in "
            f"array '{name}' of store '{url}' (dtype {stored}) without losing their kind"
        )
    return arr if stored is None else arr.astype(stored, copy=False)


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
    if isinstance(store, StoreSpec):
        store = store.open("r+")
    elif isinstance(store, SampleStore):
        if store.mode != "r+":
            store = store.spec.open("r+")
    else:
        raise InputError(f"store must be a SampleStore or a StoreSpec, got {type(store).__name__}")
    url = store.spec.url
    start = _as_int(start, "start row")
    x = _checked_rows(x_rows, store.spec.x, store.x_array, url)
    y = _checked_rows(y_rows, store.spec.y, store.y_array, url)
    if x.ndim != 2 or x.shape[1] != store.n_features:
        raise InputError(
            f"rows for array '{store.spec.x}' have shape {_shape_str(x.shape)}; "
            f"expected (rows, {store.n_features})"
        )
    n = x.shape[0]
    if y.shape == (n, 1):
        y = y.reshape(n)
    if y.shape != (n,):
        raise InputError(
            f"rows for array '{store.spec.y}' have shape {_shape_str(y.shape)}; "
            f"expected ({n},) to match the {n} rows for array '{store.spec.x}'"
        )
    if start < 0 or start + n > store.n_samples:
        raise InputError(
            f"rows [{start}, {start + n}) are not inside [0, {store.n_samples}) "
            f"of store '{url}'"
        )
    if n == 0:
        return
    if store._y_is_column:
        y = y.reshape(n, 1)
    store.x_array[start:start + n] = x
    store.y_array[start:start + n] = y


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
    ``write_empty_chunks=True``, like the sample stores.

    Returns
    -------
    OutputSpec
    """
    spec = StoreSpec.make(url, storage_options=storage_options)
    n_samples = _positive_int(n_samples, "n_samples")
    chunk_rows = min(_positive_int(chunk_rows, "chunk_rows"), n_samples)
    try:
        group = zarr.open_group(spec.url, mode="w" if overwrite else "w-", zarr_format=3, **_zarr_store_kwargs(spec))
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as exc:
        raise InputError(f"store '{spec.url}' already exists; pass overwrite=True to replace it") from exc
    group.create_array(
        name,
        shape=(n_samples,),
        chunks=(chunk_rows,),
        dtype="float64",
        compressors=_default_compressors(np.dtype("float64").str) + (Crc32cCodec(),),
        dimension_names=("sample",),
        config=_WRITE_CONFIG,
    )
    return OutputSpec(spec.url, name, spec.storage_options)


def open_output_array(out):
    """Open the array of an :class:`OutputSpec` for writing."""
    spec = StoreSpec(out.url, storage_options=out.storage_options)
    group = zarr.open_group(spec.url, mode="r+", **_zarr_store_kwargs(spec))
    return group[out.name].with_config(_WRITE_CONFIG)


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
        Labels to append.
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
    x_rows = np.asarray(x_rows)
    y_rows = np.asarray(y_rows).reshape(-1)
    if x_rows.ndim != 2 or x_rows.shape[1] != store.n_features or y_rows.shape[0] != x_rows.shape[0]:
        raise InputError(
            f"rows to append have shapes {x_rows.shape} and {y_rows.shape}; expected (k, {store.n_features}) and (k,)"
        )
    start = store.n_samples
    stop = start + x_rows.shape[0]
    x_new = _checked_rows(x_rows, spec.x, store.x_array, spec.url)
    y_new = _checked_rows(y_rows, spec.y, store.y_array, spec.url)
    if COMMITTED_ROWS_ATTR not in store.attrs:
        store.group.attrs[COMMITTED_ROWS_ATTR] = int(start)
    store.x_array.resize((stop, store.n_features))
    store.y_array.resize((stop,) + tuple(store.y_array.shape[1:]))
    store.x_array[start:stop] = x_new
    store.y_array[start:stop] = y_new.reshape((-1,) + tuple(store.y_array.shape[1:]))
    store.group.attrs[COMMITTED_ROWS_ATTR] = int(stop)
    return int(stop)
