"""The package's exception hierarchy.

Every error stream_relu raises on purpose derives from :class:`StreamReluError`
and from the builtin a caller would expect (``ValueError`` for bad values,
``FileNotFoundError`` for missing stores, ...), so ``except ValueError`` keeps
working.  The CLI turns these into one line on stderr and the exit status in
:data:`EXIT_CODES`.
"""

from __future__ import annotations

__all__ = [
    "StreamReluError",
    "InputError",
    "StoreNotFoundError",
    "StoreFormatError",
    "DataError",
    "ModelFileError",
    "RecoveryError",
    "ClusterError",
    "StorageAccessError",
    "StorageUnreachableError",
    "EXIT_CODES",
]


class StreamReluError(Exception):
    """Root of every error stream_relu raises on purpose."""


class InputError(StreamReluError, ValueError):
    """A parameter or argument has a value the method cannot use."""


class StoreNotFoundError(StreamReluError, FileNotFoundError):
    """The store, or an array it should hold, does not exist."""


class StoreFormatError(StreamReluError, ValueError):
    """The store exists but its arrays have the wrong shape, dtype or layout."""


class DataError(StreamReluError, ValueError):
    """The values read from a store cannot be used (non-finite, corrupted, ...)."""


class ModelFileError(StreamReluError, ValueError):
    """A model file is malformed, of an unknown version, or inconsistent."""


class RecoveryError(StreamReluError, ArithmeticError):
    """The moments do not support a recovery (too noisy, degenerate)."""


class ClusterError(StreamReluError, ConnectionError):
    """The dask scheduler cannot be reached (address, TLS settings, network)."""


class StorageAccessError(StreamReluError, PermissionError):
    """The storage behind a store or state URL refused access (wrong or missing credentials, no permission)."""


class StorageUnreachableError(StreamReluError, ConnectionError):
    """The storage behind a store or state URL cannot be reached (endpoint, network, server down)."""


# Exit status of the CLI for each error class (most specific first).
EXIT_CODES = {
    StoreNotFoundError: 3,
    StoreFormatError: 4,
    DataError: 5,
    ModelFileError: 6,
    RecoveryError: 7,
    ClusterError: 8,
    StorageAccessError: 9,
    StorageUnreachableError: 10,
    InputError: 2,
    StreamReluError: 1,
}
