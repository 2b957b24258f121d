"""Low-level zarr helpers shared by the reading and the writing half of :mod:`stream_relu.data`.

This module owns the few things both halves must do the same way:

* :func:`open_group`: the one place a zarr group is opened or created, with
  zarr's and the filesystem's failures mapped onto the package's errors;
* :func:`create_row_array`: the one place an array is created, so every
  array the package writes (sample stores and output arrays alike) is
  chunked by rows, encoded with zarr's default compressor for its dtype
  followed by a crc32c checksum, and written with ``write_empty_chunks=True``;
* :func:`coerce_rows`: the one conversion of rows to write into the stored
  dtype and shape of a store's ``x`` and ``y``;
* :func:`storage_errors`: the one mapping of a remote filesystem's
  failures (refused credentials, an endpoint that cannot be reached) onto
  :class:`~stream_relu.errors.StorageAccessError` and
  :class:`~stream_relu.errors.StorageUnreachableError`, used around every
  read and write (and by the ``--state`` folder);
* the constants and the small argument checks and message helpers both
  halves use.

It imports numpy, zarr and the package's errors only (fsspec, which zarr
uses for URLs, lazily, for URLs only).
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import socket
from dataclasses import dataclass

import numpy as np
import zarr
import zarr.errors
from zarr.codecs import Crc32cCodec
from zarr.storage import MemoryStore

from stream_relu.errors import (
    InputError,
    StorageAccessError,
    StorageUnreachableError,
    StoreFormatError,
    StoreNotFoundError,
    StreamReluError,
)

#: Runtime configuration of every array the package writes to.
WRITE_CONFIG = {"write_empty_chunks": True}

#: group attribute a writer updates after the data of appended rows landed
COMMITTED_ROWS_ATTR = "committed_rows"

#: what a read does with a chunk absent from storage
MISSING_CHUNK_POLICIES = ("error", "fill")

#: dtypes that are returned as stored.
NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

#: numpy dtype kinds converted to float64 on read: bool, signed, unsigned, float.
REAL_KINDS = "biuf"

#: modes a sample store is opened in (it must exist in both)
OPEN_MODES = ("r", "r+")

#: modes that create a group: replace what is there, or fail when something is
_CREATE_MODES = ("w", "w-")

#: files that mark the root of a zarr store (format 3, format 2 group, format 2 array)
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")

#: Exceptions zarr raises when no group (or nothing at all) is at a location.
_NOT_FOUND_ERRORS = (FileNotFoundError,) + tuple(
    getattr(zarr.errors, name)
    for name in ("NodeNotFoundError", "GroupNotFoundError")
    if hasattr(zarr.errors, name)
)

#: Exceptions zarr raises when creating a group where something already is.
_EXISTS_ERRORS = (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError)


# ---------------------------------------------------------------------------
# argument checks and message helpers
# ---------------------------------------------------------------------------


def as_int(value, what):
    """Return ``value`` as a Python int, refusing bools, floats and strings."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be an integer, got a bool ({value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise InputError(
            f"{what} must be an integer, got {type(value).__name__} ({value!r})"
        ) from None


def positive_int(value, what):
    """Return ``value`` as an int ``>= 1`` or raise :class:`InputError`."""
    out = as_int(value, what)
    if out < 1:
        raise InputError(f"{what} must be at least 1, got {out}")
    return out


@dataclass(frozen=True)
class RowLayout:
    """Checked sizes of an array (or a pair of arrays) about to be created.

    ``chunk_rows`` is already clipped to ``n_samples``; ``n_features`` is
    None for a one-dimensional array.
    """

    n_samples: int
    chunk_rows: int
    n_features: int | None = None

    @classmethod
    def checked(cls, n_samples, chunk_rows, n_features=None):
        """Check the sizes (in the order ``n_samples``, ``n_features``, ``chunk_rows``)."""
        n_samples = positive_int(n_samples, "n_samples")
        if n_features is not None:
            n_features = positive_int(n_features, "n_features")
        chunk_rows = min(positive_int(chunk_rows, "chunk_rows"), n_samples)
        return cls(n_samples, chunk_rows, n_features)


def local_path(url):
    """Filesystem path of ``url`` when it names a local file, else None."""
    if "://" not in url:
        return url
    if url.startswith("file://"):
        return url[len("file://"):]
    return None


def is_remote(url):
    """Whether ``url`` names a remote filesystem (not a local path, ``file://`` or ``memory://``)."""
    return local_path(url) is None and not url.startswith("memory://")


def shape_str(shape):
    """``(10, 2)`` style text for a shape (always a tuple, even of length 1)."""
    return str(tuple(int(s) for s in shape))


def dims(shape):
    """``1 dimension`` / ``3 dimensions``: the number of dimensions of a shape, in words."""
    return "1 dimension" if len(shape) == 1 else f"{len(shape)} dimensions"


def stored_dtype(array):
    """The numpy dtype of a zarr array, or None when it has no numpy form."""
    try:
        return np.dtype(array.dtype)
    except TypeError:
        return None


def outer_rows(array):
    """Rows of one storage object of ``array``: its shard rows when sharded, else its chunk rows."""
    shards = getattr(array, "shards", None)
    return int(shards[0] if shards is not None else array.chunks[0])


# ---------------------------------------------------------------------------
# failures of remote storage
# ---------------------------------------------------------------------------

#: Exception classes (by module and name, anywhere in an exception's MRO) that
#: mean the storage refused the credentials; the libraries are never imported here.
_ACCESS_CLASSES = {
    ("botocore.exceptions", "NoCredentialsError"),
    ("botocore.exceptions", "PartialCredentialsError"),
    ("botocore.exceptions", "CredentialRetrievalError"),
}

#: ... and those that mean the endpoint could not be reached (botocore's
#: EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
#: ConnectionClosedError, ProxyConnectionError, SSLError; aiohttp's
#: connection errors).
_UNREACHABLE_CLASSES = {
    ("botocore.exceptions", "ConnectionError"),
    ("botocore.exceptions", "HTTPClientError"),
    ("aiohttp.client_exceptions", "ClientConnectionError"),
}

#: protocols whose first path component is a bucket (or container)
_BUCKET_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


def _status_code(exc):
    """The HTTP status of a botocore ``ClientError`` (its ``response``), else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _storage_kind(exc):
    """``"access"``, ``"unreachable"`` or None: what a storage library's exception means."""
    names = {(cls.__module__, cls.__name__) for cls in type(exc).__mro__}
    if names & _ACCESS_CLASSES or isinstance(exc, PermissionError) or _status_code(exc) in (401, 403):
        return "access"
    if names & _UNREACHABLE_CLASSES or isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return "unreachable"
    return None


def _one_line(exc):
    """An exception's text on one line, shortened, or its class name when it has none."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def storage_error(exc, url):
    """The package's error for a storage library's exception ``exc`` met at ``url``, or None.

    Parameters
    ----------
    exc : BaseException
        What fsspec, s3fs, botocore, aiohttp or the OS raised.
    url : str
        The store or folder being used, for the message.

    Returns
    -------
    StorageAccessError or StorageUnreachableError or None
        None when ``exc`` is neither a refused access nor an unreachable
        endpoint.
    """
    kind = _storage_kind(exc)
    if kind == "access":
        return StorageAccessError(
            f"access to '{url}' was refused ({_one_line(exc)}); check the credentials ('key' and "
            "'secret' in the storage options, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) "
            "and what they are allowed to do there"
        )
    if kind == "unreachable":
        return StorageUnreachableError(
            f"cannot reach the storage of '{url}' ({_one_line(exc)}); check the endpoint "
            "('endpoint_url' in 'client_kwargs' of the storage options), the network, and that the server is up"
        )
    return None


@contextlib.contextmanager
def storage_errors(url):
    """Turn refused credentials and unreachable endpoints met inside the block into the package's errors.

    Parameters
    ----------
    url : str
        The store or folder the block uses, for messages.

    Yields
    ------
    None

    Raises
    ------
    StorageAccessError
        The storage refused the credentials (HTTP 401/403, missing
        credentials, ``PermissionError``).
    StorageUnreachableError
        The endpoint could not be reached (connection refused, DNS, timeouts).

    Notes
    -----
    The package's own errors and every other exception pass unchanged.
    """
    try:
        yield
    except StreamReluError:
        raise
    except Exception as exc:
        mapped = storage_error(exc, url)
        if mapped is None:
            raise
        raise mapped from exc


def _remote_fs(url, options):
    """``(filesystem, path)`` of a remote URL, with a missing library or bad options as InputError."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise InputError(f"cannot open '{url}': {_one_line(exc)}") from exc
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot open '{url}' with the storage options given: {_one_line(exc)}") from exc


def _probe(url, options):
    """One request for ``url``'s ``zarr.json`` before zarr's own, on a remote filesystem.

    zarr reads a group's metadata files concurrently; when the storage
    refuses the credentials or cannot be reached, each pending read fails
    on its own (and some only when garbage collected, onto stderr).  One
    plain request first turns those failures into a single error of the
    package, needing no other permission than zarr's reads do.  A missing
    file is left to zarr (a new store, or a format-2 group).
    """
    if not is_remote(url):
        return
    fs, path = _remote_fs(url, options)
    with storage_errors(url):
        try:
            fs.info(f"{path.rstrip('/')}/zarr.json")
        except FileNotFoundError:
            pass


def missing_bucket(url, options):
    """The bucket of an object-store ``url`` when that bucket does not exist.

    Parameters
    ----------
    url : str
        A URL such as ``s3://bucket/path`` (``s3``, ``gs``, ``az`` and the
        like; anything else gives None).
    options : dict
        fsspec storage options.

    Returns
    -------
    str or None
        The bucket's name when the storage says it does not exist; None when
        it exists, or when that cannot be told (no permission, no
        connection: the caller's own request will say why).
    """
    if not is_remote(url):
        return None
    try:
        fs, path = _remote_fs(url, options)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        bucket = path.strip("/").split("/", 1)[0]
        if not protocols & _BUCKET_PROTOCOLS or not bucket:
            return None
        fs.info(bucket)
    except FileNotFoundError:
        return bucket
    except Exception:  # noqa: BLE001 -- only a better message was at stake
        return None
    return None


# ---------------------------------------------------------------------------
# opening and creating groups
# ---------------------------------------------------------------------------


def _store_kwargs(url, options):
    """Keyword arguments that pass storage options on to zarr."""
    if not options:
        return {}
    if "://" not in url:
        raise InputError(
            f"storage_options were given for store '{url}', a local path; "
            "they only apply to URLs such as s3://... or file://..."
        )
    return {"storage_options": options}


def _refuse_non_zarr_directory(url):
    """Refuse to replace a local non-empty directory that holds no zarr store."""
    local = local_path(url)
    if local is None or not os.path.isdir(local) or not os.listdir(local):
        return
    if not any(os.path.exists(os.path.join(local, m)) for m in _ZARR_MARKERS):
        raise InputError(
            f"refusing to overwrite '{url}': it is a non-empty directory "
            "that holds no zarr store"
        )


def _create_group(url, mode, kwargs, attributes):
    """Create a format-3 group; InputError when one exists and ``mode`` is ``"w-"``."""
    if mode == "w":
        _refuse_non_zarr_directory(url)
    try:
        return zarr.open_group(url, mode=mode, zarr_format=3, attributes=dict(attributes or {}), **kwargs)
    except _EXISTS_ERRORS as exc:
        raise InputError(f"store '{url}' already exists; pass overwrite=True to replace it") from exc
    except FileNotFoundError as exc:
        bucket = missing_bucket(url, kwargs.get("storage_options") or {})
        where = f"bucket '{bucket}' does not exist" if bucket else _one_line(exc)
        raise StoreNotFoundError(f"cannot create store '{url}': {where}") from exc


def _open_existing_group(url, mode, kwargs, holds):
    """Open a group that must exist; StoreNotFoundError / StoreFormatError otherwise."""
    local = local_path(url)
    if local is not None and not os.path.exists(local):
        raise StoreNotFoundError(f"store '{url}' does not exist")
    try:
        return zarr.open_group(url, mode=mode, **kwargs)
    except _NOT_FOUND_ERRORS as exc:
        if local is not None:
            raise StoreNotFoundError(
                f"store '{url}' exists but holds no zarr group (no zarr.json or .zgroup at its root)"
            ) from exc
        bucket = missing_bucket(url, kwargs.get("storage_options") or {})
        if bucket is not None:
            raise StoreNotFoundError(f"store '{url}' does not exist: bucket '{bucket}' does not exist") from exc
        raise StoreNotFoundError(f"store '{url}' does not exist or holds no zarr group") from exc
    except zarr.errors.ContainsArrayError as exc:
        raise StoreFormatError(
            f"store '{url}' is a single zarr array; expected a zarr group holding {holds}"
        ) from exc


def open_group(url, options, mode, *, holds, attributes=None):
    """Open or create the zarr group at ``url``, with the package's errors.

    Parameters
    ----------
    url : str
        Local path or URL of the group.
    options : dict
        fsspec storage options (empty for none).
    mode : {"r", "r+", "w", "w-"}
        ``"r"`` and ``"r+"`` open an existing group; ``"w"`` creates one
        (replacing what is there, but never a local non-empty directory that
        holds no zarr store) and ``"w-"`` creates one where nothing is.
        Created groups are zarr format 3.
    holds : str
        What the group should hold, for messages (``"arrays 'x' and 'y'"``).
    attributes : mapping, optional
        Group attributes of a created group.

    Returns
    -------
    zarr.Group

    Raises
    ------
    InputError
        Storage options for a local path, or a group to create exists.
    StoreNotFoundError
        A group to open does not exist.
    StoreFormatError
        A single array is where the group should be.
    StorageAccessError, StorageUnreachableError
        The storage of a URL refused the credentials or cannot be reached.
    """
    kwargs = _store_kwargs(url, options)
    _probe(url, options)
    with storage_errors(url):
        if mode in _CREATE_MODES:
            return _create_group(url, mode, kwargs, attributes)
        return _open_existing_group(url, mode, kwargs, holds)


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


def create_row_array(group, name, layout, dtype, *, by_feature):
    """Create array ``name`` in ``group``, chunked by rows, checksummed, writing empty chunks.

    Parameters
    ----------
    group : zarr.Group
        A format-3 group opened for writing.
    name : str
        Array name.
    layout : RowLayout
        Rows and rows per chunk (and the columns when ``by_feature``).
    dtype : numpy.dtype or str
        Stored dtype.
    by_feature : bool
        Two-dimensional ``(n_samples, n_features)`` when true, else
        ``(n_samples,)``.

    Returns
    -------
    zarr.Array
        Encoded with zarr's default compressor for ``dtype`` followed by a
        crc32c checksum; opened with ``write_empty_chunks=True``.
    """
    dt = np.dtype(dtype)
    features = (layout.n_features,) if by_feature else ()
    return group.create_array(
        name,
        shape=(layout.n_samples,) + features,
        chunks=(layout.chunk_rows,) + features,
        dtype=dt,
        compressors=_default_compressors(dt.str) + (Crc32cCodec(),),
        dimension_names=("sample", "feature") if by_feature else ("sample",),
        config=WRITE_CONFIG,
    )


# ---------------------------------------------------------------------------
# rows to write
# ---------------------------------------------------------------------------


def _castable(rows, name, target, url):
    """``rows`` as an array in the stored dtype of ``target``, refusing a change of kind."""
    arr = np.asarray(rows)
    stored = stored_dtype(target)
    if arr.dtype.kind not in REAL_KINDS:
        raise InputError(f"rows for array '{name}' have dtype {arr.dtype}; expected real numbers")
    if stored is not None and not np.can_cast(arr.dtype, stored, casting="same_kind"):
        raise InputError(
            f"rows for array '{name}' have dtype {arr.dtype}, which cannot be stored in "
            f"array '{name}' of store '{url}' (dtype {stored}) without losing their kind"
        )
    return arr if stored is None else arr.astype(stored, copy=False)


def coerce_rows(store, x_rows, y_rows):
    """Rows to write to ``store``, in its stored dtypes and shapes.

    Parameters
    ----------
    store : SampleStore
        The target (its ``spec``, ``x_array``, ``y_array``, ``n_features``
        and ``y_is_column`` are used).
    x_rows : array_like
        Shape ``(rows, n_features)``.
    y_rows : array_like
        Shape ``(rows,)`` or ``(rows, 1)``.

    Returns
    -------
    x : numpy.ndarray
        Shape ``(rows, n_features)``, in ``x``'s stored dtype.
    y : numpy.ndarray
        Shape ``(rows,)``, or ``(rows, 1)`` when ``y`` is stored as a
        column, in ``y``'s stored dtype.

    Raises
    ------
    InputError
        The values are not real numbers, cannot be stored in the arrays'
        dtypes, or the shapes do not match the store.
    """
    spec = store.spec
    x = _castable(x_rows, spec.x, store.x_array, spec.url)
    y = _castable(y_rows, spec.y, store.y_array, spec.url)
    if x.ndim != 2 or x.shape[1] != store.n_features:
        raise InputError(
            f"rows for array '{spec.x}' have shape {shape_str(x.shape)}; "
            f"expected (rows, {store.n_features})"
        )
    n = x.shape[0]
    if y.shape == (n, 1):
        y = y.reshape(n)
    if y.shape != (n,):
        raise InputError(
            f"rows for array '{spec.y}' have shape {shape_str(y.shape)}; "
            f"expected ({n},) to match the {n} rows for array '{spec.x}'"
        )
    return x, (y.reshape(n, 1) if store.y_is_column else y)
