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

The package is split by what a module owns: :mod:`.read` inspects, opens
and reads stores (:class:`StoreSpec`, :class:`SampleStore`,
:func:`open_store`); :mod:`.write` creates and writes them (and the output
arrays scores go to); :mod:`._zarr` holds the low-level helpers both share
(the one way to open or create a group, to create an array, to coerce
rows to write, and to report a remote storage that refuses the credentials
or cannot be reached: :func:`storage_errors`, which the ``--state`` folder
uses too).  This module only re-exports their public names.

The package imports numpy, zarr and the package's errors only (and fsspec,
which zarr opens URLs with, lazily for URLs).
"""

from __future__ import annotations

# Every name the single module this package replaced offered is importable
# from here; the names outside ``__all__`` were outside it before too.
from ._zarr import COMMITTED_ROWS_ATTR, MISSING_CHUNK_POLICIES, missing_bucket, storage_errors  # noqa: F401
from .read import SampleStore, StoreSpec, open_store
from .write import (  # noqa: F401
    OutputSpec,
    append_rows,
    create_output_array,
    create_sample_store,
    open_output_array,
    write_rows,
)

__all__ = [
    "StoreSpec",
    "SampleStore",
    "open_store",
    "create_sample_store",
    "write_rows",
]
