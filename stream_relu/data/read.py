"""Reading sample stores: where a store lives (:class:`StoreSpec`) and the opened, checked store (:class:`SampleStore`).

This module owns everything that inspects, opens or reads a store: the
spec tasks carry, the checks of the arrays' shapes, dtypes, sizes and
committed rows made on opening, the row and chunk reads (with the
missing-chunk policy), and :func:`open_store`.

It imports numpy, zarr, the package's errors and :mod:`._zarr` only.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import zarr
from zarr.core.sync import sync as zarr_sync

from stream_relu.errors import DataError, InputError, StoreFormatError, StoreNotFoundError

from ._zarr import (
    COMMITTED_ROWS_ATTR,
    MISSING_CHUNK_POLICIES,
    NATIVE_FLOATS,
    OPEN_MODES,
    REAL_KINDS,
    WRITE_CONFIG,
    as_int,
    dims,
    local_path,
    open_group,
    outer_rows,
    shape_str,
    storage_errors,
    stored_dtype,
)

__all__ = ["StoreSpec", "SampleStore", "open_store"]


# ---------------------------------------------------------------------------
# StoreSpec
# ---------------------------------------------------------------------------


def _plain_copy(value):
    """A copy of ``value`` in which dicts, lists and tuples are new (other objects are shared)."""
    if isinstance(value, Mapping):
        return {key: _plain_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_copy(item) for item in value)
    return value


def _json_fallback(value):
    """JSON stand-in of a value json cannot encode: its type and repr."""
    return {"__repr__": f"{type(value).__module__}.{type(value).__qualname__}:{value!r}"}


def _options_key(pairs):
    """Canonical JSON text of sorted ``(key, value)`` storage-option pairs.

    Nested dicts are written with sorted keys and tuples as lists, so equal
    options give equal text whatever their order; a value json cannot encode
    is written as its type and repr, and options json cannot encode at all
    (e.g. nested keys of mixed types) fall back to the repr of the pairs.
    """
    try:
        return json.dumps(dict(pairs), sort_keys=True, separators=(",", ":"), default=_json_fallback)
    except (TypeError, ValueError):
        return repr(pairs)


def _normalized_url(given):
    """The url as a non-empty string (a path-like is accepted)."""
    url = os.fspath(given) if isinstance(given, os.PathLike) else given
    if not isinstance(url, str) or not url:
        raise InputError(f"store url must be a non-empty string or path, got {given!r}")
    return url


def _check_array_names(x, y):
    """Refuse empty or equal array names."""
    for which, name in (("x", x), ("y", y)):
        if not isinstance(name, str) or not name.strip("/"):
            raise InputError(f"array name {which} must be a non-empty string, got {name!r}")
    if x == y:
        raise InputError(f"arrays x and y must have different names, both are '{x}'")


def _normalized_options(given):
    """Storage options as ``(key, value)`` pairs sorted by key (values copied, see :func:`_plain_copy`)."""
    options = given
    if options is None:
        options = ()
    elif isinstance(options, Mapping):
        options = tuple(options.items())
    try:
        pairs = [(key, value) for key, value in options]
    except (TypeError, ValueError):
        raise InputError(
            f"storage_options must be a dict or a tuple of (key, value) pairs, got {given!r}"
        ) from None
    keys = [key for key, _ in pairs]
    for key in keys:
        if not isinstance(key, str):
            raise InputError(f"storage_options keys must be strings, got {key!r}")
    if len(set(keys)) != len(keys):
        raise InputError(f"storage_options has a repeated key: {sorted(keys)}")
    return tuple((key, _plain_copy(value)) for key, value in sorted(pairs, key=lambda kv: kv[0]))


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
    :meth:`open`.  Specs are hashable and compare by content even when
    option values are nested (dicts, lists): equality and the hash use
    :attr:`options_key`, a canonical JSON text of the options, rather than
    the pairs themselves.  Nested dicts and lists are copied on
    construction, so changing the caller's dict later does not change the
    spec.
    """

    url: str
    x: str = "x"
    y: str = "y"
    storage_options: tuple = field(default=(), compare=False)
    missing_chunks: str = "error"
    #: canonical JSON text of the storage options: what equality and the hash use
    options_key: str = field(default="", init=False, repr=False)

    def __post_init__(self):
        if self.missing_chunks not in MISSING_CHUNK_POLICIES:
            raise InputError(
                f"missing_chunks must be one of {MISSING_CHUNK_POLICIES}, got {self.missing_chunks!r}"
            )
        object.__setattr__(self, "url", _normalized_url(self.url))
        _check_array_names(self.x, self.y)
        pairs = _normalized_options(self.storage_options)
        object.__setattr__(self, "storage_options", pairs)
        object.__setattr__(self, "options_key", _options_key(pairs))

    def __reduce__(self):
        # rebuilt through the constructor: the options key is recomputed on load
        return (type(self), (self.url, self.x, self.y, self.storage_options, self.missing_chunks))

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
        """The storage options as a fresh dict (nested dicts and lists copied too).

        Returns
        -------
        dict
        """
        return {key: _plain_copy(value) for key, value in self.storage_options}

    def open(self, mode="r"):
        """Open the store and check its arrays.

        Parameters
        ----------
        mode : {"r", "r+"}, default "r"
            Read only, or read and write (the store must already exist).

        Returns
        -------
        SampleStore
            Opening raises what :class:`SampleStore` lists: a missing store
            or array, wrong shapes or dtypes, storage that refuses access or
            cannot be reached.
        """
        return SampleStore(self, mode=mode)


# ---------------------------------------------------------------------------
# checks made on opening
# ---------------------------------------------------------------------------


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
    dt = stored_dtype(array)
    expected = (
        "expected a real numeric dtype "
        "(float32 or float64; integers, float16 and bool are converted to float64)"
    )
    if dt is None or dt.kind not in REAL_KINDS:
        found = array.dtype if dt is None else dt
        if dt is not None and dt.kind == "c":
            raise StoreFormatError(
                f"array '{name}' in store '{url}' has complex dtype {found}; {expected}"
            )
        raise StoreFormatError(
            f"array '{name}' in store '{url}' has dtype {found}, which is not numeric; {expected}"
        )
    native = dt.newbyteorder("=")
    if native in NATIVE_FLOATS:
        return native, None
    return np.dtype(np.float64), (
        f"array '{name}' in store '{url}' has dtype {dt}; its values are converted to float64 when read"
    )


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


def _check_open_args(spec, mode):
    """Refuse a spec that is not a StoreSpec and an unknown mode."""
    if not isinstance(spec, StoreSpec):
        raise InputError(f"spec must be a StoreSpec, got {type(spec).__name__}")
    if mode not in OPEN_MODES:
        raise InputError(f"mode must be one of {OPEN_MODES}, got {mode!r}")


def _reopen(spec, mode):
    """Unpickling helper of :class:`SampleStore`: open the store again."""
    return SampleStore(spec, mode=mode)


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
    y_is_column : bool
        Whether ``y`` is stored with shape ``(n, 1)`` (it is read as a vector;
        rows written to it must be given that shape).
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
    StorageAccessError, StorageUnreachableError
        The storage of a URL refused the credentials or cannot be reached.
    """

    def __init__(self, spec, *, mode="r"):
        _check_open_args(spec, mode)
        self.spec = spec
        self.mode = mode
        self.notes = []
        self.group = open_group(spec.url, spec.options, mode, holds=f"arrays '{spec.x}' and '{spec.y}'")
        self.zarr_format = int(self.group.metadata.zarr_format)
        self.attrs = copy.deepcopy(dict(self.group.attrs))
        with storage_errors(spec.url):
            self._open_arrays()
        self._y_is_column = self._check_dimensions()
        self.dtype = self._choose_dtype()
        self._check_not_empty()
        self.n_samples = self._count_samples()
        self.n_features = int(self.x_array.shape[1])
        self.chunk_rows = outer_rows(self.x_array)
        self.n_chunks = math.ceil(self.n_samples / self.chunk_rows)
        self._note_y_chunking()

    # -- the checks of __init__, in the order they run --
    def _open_arrays(self):
        """Set :attr:`x_array` and :attr:`y_array` (configured for writing in mode ``"r+"``)."""
        spec = self.spec
        x_array = _get_array(self.group, spec.x, spec.url)
        y_array = _get_array(self.group, spec.y, spec.url)
        if self.mode == "r+":
            x_array = x_array.with_config(WRITE_CONFIG)
            y_array = y_array.with_config(WRITE_CONFIG)
        self.x_array = x_array
        self.y_array = y_array

    def _check_dimensions(self):
        """Check that ``x`` is a matrix and ``y`` a vector or column; return whether ``y`` is a column."""
        spec, url = self.spec, self.spec.url
        x_shape, y_shape = tuple(self.x_array.shape), tuple(self.y_array.shape)
        if len(x_shape) != 2:
            raise StoreFormatError(
                f"array '{spec.x}' in store '{url}' has {dims(x_shape)} "
                f"(shape {shape_str(x_shape)}); expected 2 (n_samples, n_features)"
            )
        if len(y_shape) == 2 and y_shape[1] == 1:
            self.notes.append(
                f"array '{spec.y}' in store '{url}' has shape {shape_str(y_shape)}; "
                f"it is read as a vector of shape ({y_shape[0]},)"
            )
        elif len(y_shape) != 1:
            row = len(y_shape) == 2 and y_shape[0] == 1
            hint = f". It looks like a row vector: store it as ({y_shape[1]},), e.g. write y.reshape(-1)" if row else ""
            raise StoreFormatError(
                f"array '{spec.y}' in store '{url}' has {dims(y_shape)} "
                f"(shape {shape_str(y_shape)}); expected 1 (n_samples,) or (n_samples, 1)" + hint
            )
        return len(y_shape) == 2

    def _choose_dtype(self):
        """The dtype reads return (float32 only when both arrays are float32), noting conversions."""
        spec, url = self.spec, self.spec.url
        x_dtype, x_note = _read_dtype(self.x_array, spec.x, url)
        y_dtype, y_note = _read_dtype(self.y_array, spec.y, url)
        self.notes.extend(note for note in (x_note, y_note) if note)
        dtype = np.dtype(np.float32) if x_dtype == y_dtype == np.float32 else np.dtype(np.float64)
        pairs = ((spec.x, x_dtype, spec.y, y_dtype), (spec.y, y_dtype, spec.x, x_dtype))
        for name, read, other, other_read in pairs:
            if read != dtype:
                self.notes.append(
                    f"array '{name}' in store '{url}' is {read} while array '{other}' is read "
                    f"as {other_read}; both are returned as {dtype}"
                )
        return dtype

    def _check_not_empty(self):
        """Refuse an ``x`` without rows or without columns."""
        spec, x_shape = self.spec, tuple(self.x_array.shape)
        for size, what, expected in ((x_shape[0], "rows", "sample"), (x_shape[1], "columns", "feature")):
            if int(size) == 0:
                raise StoreFormatError(
                    f"array '{spec.x}' in store '{spec.url}' has 0 {what} (shape {shape_str(x_shape)}); "
                    f"expected at least 1 {expected}"
                )

    def _count_samples(self):
        """Rows read: those of ``x`` (``y`` must have as many), or the committed rows when recorded."""
        spec, url = self.spec, self.spec.url
        x_shape, y_shape = tuple(self.x_array.shape), tuple(self.y_array.shape)
        n_samples = int(x_shape[0])
        committed = self.attrs.get(COMMITTED_ROWS_ATTR)
        if committed is not None:
            return self._committed_rows(committed, n_samples, int(y_shape[0]))
        if int(y_shape[0]) != n_samples:
            raise StoreFormatError(
                f"array '{spec.y}' in store '{url}' has {int(y_shape[0])} rows "
                f"(shape {shape_str(y_shape)}); expected {n_samples}, the rows of array "
                f"'{spec.x}' (shape {shape_str(x_shape)})" + self._transposed_hint()
            )
        return n_samples

    def _transposed_hint(self):
        """A sentence for row-count errors when ``x`` looks stored as ``(n_features, n_samples)``, else ``""``."""
        spec = self.spec
        x_shape, y_rows = tuple(self.x_array.shape), int(self.y_array.shape[0])
        if int(x_shape[1]) != y_rows or int(x_shape[0]) == y_rows:
            return ""
        return (
            f". Array '{spec.x}' looks transposed: its {int(x_shape[1])} columns match the rows of "
            f"'{spec.y}'. Store it as (n_samples, n_features), e.g. write x.T instead of x"
        )

    def _committed_rows(self, committed, x_rows, y_rows):
        """Check the ``committed_rows`` attribute against the arrays' rows and return it."""
        spec, url = self.spec, self.spec.url
        if not isinstance(committed, int) or isinstance(committed, bool) or not 0 <= committed <= x_rows:
            raise StoreFormatError(
                f"attribute '{COMMITTED_ROWS_ATTR}' of store '{url}' is {committed!r}; expected an integer "
                f"from 0 to the {x_rows} rows of array '{spec.x}'" + self._transposed_hint()
            )
        if y_rows < committed:
            raise StoreFormatError(
                f"array '{spec.y}' in store '{url}' has {y_rows} rows but "
                f"'{COMMITTED_ROWS_ATTR}' says {committed} rows are committed"
            )
        if committed < x_rows or y_rows > committed:
            self.notes.append(
                f"store '{url}' has {committed} committed rows; rows past them (a write in progress or "
                "a crashed append) are not read"
            )
        if committed == 0:
            raise StoreFormatError(f"store '{url}' has 0 committed rows; expected at least 1 sample")
        return committed

    def _note_y_chunking(self):
        """Note when ``y`` is chunked by other rows than ``x`` (units of work follow ``x``)."""
        spec, y_rows = self.spec, outer_rows(self.y_array)
        if y_rows != self.chunk_rows and self.n_samples > min(y_rows, self.chunk_rows):
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

    @property
    def y_is_column(self):
        """Whether ``y`` is stored with shape ``(n, 1)`` rather than ``(n,)``.

        Returns
        -------
        bool
        """
        return self._y_is_column

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
        i = as_int(index, "chunk index")
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
            As for :meth:`chunk_bounds`.

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
        StorageAccessError, StorageUnreachableError
            The storage of a URL refused the credentials or cannot be reached.
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
        StorageAccessError, StorageUnreachableError
            The storage of a URL refused the credentials or cannot be reached.
        """
        start = as_int(start, "start row")
        stop = as_int(stop, "stop row")
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
        """Storage keys of the chunks (or shards) of ``array`` covering rows ``[start, stop)`` that are absent.

        Parameters
        ----------
        array : zarr.Array
            :attr:`x_array` or :attr:`y_array`.
        start, stop : int
            Row range.

        Returns
        -------
        list of str
            Keys relative to the array, in row order.
        """
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
        """Read whole rows of one array, turning decode failures into DataError (and storage failures too)."""
        with storage_errors(self.spec.url):
            return self._read_checked(array, name, start, stop)

    def _read_checked(self, array, name, start, stop):
        """Read whole rows of one array: the missing-chunk policy, then the read."""
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
        local = local_path(self.spec.url)
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
            "x_dtype": str(stored_dtype(self.x_array)),
            "y_dtype": str(stored_dtype(self.y_array)),
            "dtype": str(self.dtype),
            "chunk_rows": self.chunk_rows,
        }


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
        Opened read-only; :meth:`StoreSpec.open` says what it raises (a
        missing store or array, wrong shapes or dtypes).
    """
    return StoreSpec.make(url, x=x, y=y, storage_options=storage_options).open()
