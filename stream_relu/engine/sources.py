"""Chunk sources: how many chunks there are and how to read chunk ``i``.

A source is small and picklable where it travels in tasks: a store source
carries a :class:`~stream_relu.data.StoreSpec` and the layout, never data;
workers open the store themselves (cached per process).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..data import StoreSpec

__all__ = ["StoreSource", "ArraySource", "DaskArraySource", "SubsetSource", "is_dask_array"]


def is_dask_array(obj):
    """Whether ``obj`` is a dask array (without importing dask)."""
    return type(obj).__module__.startswith("dask.array")


@lru_cache(maxsize=8)
def _open_cached(spec, n_samples):
    # n_samples in the key: a store that grew since is opened afresh.
    return spec.open()


class _FixedRowChunks:
    """Chunks of ``chunk_rows`` rows each, the last one possibly shorter."""

    @property
    def n_chunks(self):
        return -(-self.n_samples // self.chunk_rows)

    def chunk_len(self, index):
        return min(self.chunk_rows, self.n_samples - index * self.chunk_rows)

    def describe(self, index):
        start = index * self.chunk_rows
        return f"chunk {index} (rows {start}-{start + self.chunk_len(index) - 1})"


@dataclass(frozen=True)
class StoreSource(_FixedRowChunks):
    """Chunks of a zarr sample store (the work unit is x's row chunk)."""

    spec: StoreSpec
    n_samples: int
    n_features: int
    chunk_rows: int

    @classmethod
    def from_store(cls, store):
        return cls(store.spec, store.n_samples, store.n_features, store.chunk_rows)

    def read(self, index):
        return _open_cached(self.spec, self.n_samples).read_chunk(index)

    def describe(self, index):
        return f"{super().describe(index)} of {self.spec.url}"


@dataclass(frozen=True)
class ArraySource(_FixedRowChunks):
    """Row blocks of in-memory arrays."""

    x: np.ndarray
    y: np.ndarray
    chunk_rows: int = 65536

    @property
    def n_samples(self):
        return self.x.shape[0]

    @property
    def n_features(self):
        return self.x.shape[1]

    def read(self, index):
        sl = slice(index * self.chunk_rows, (index + 1) * self.chunk_rows)
        return self.x[sl], self.y[sl]


class DaskArraySource:
    """Row blocks of dask arrays (x rechunked to whole rows, y aligned to x)."""

    def __init__(self, x, y):
        x = x.rechunk({1: -1})
        y = y.rechunk((x.chunks[0],))
        self.x, self.y = x, y
        self.bounds = np.concatenate([[0], np.cumsum(x.chunks[0])])

    @property
    def n_samples(self):
        return int(self.x.shape[0])

    @property
    def n_features(self):
        return int(self.x.shape[1])

    @property
    def n_chunks(self):
        return len(self.x.chunks[0])

    def chunk_len(self, index):
        return int(self.bounds[index + 1] - self.bounds[index])

    def read(self, index):
        return np.asarray(self.x.blocks[index, 0].compute()), np.asarray(self.y.blocks[index].compute())

    def delayed_blocks(self):
        return list(zip(self.x.to_delayed()[:, 0], self.y.to_delayed()))

    def describe(self, index):
        return f"block {index} (rows {self.bounds[index]}-{self.bounds[index + 1] - 1})"


@dataclass(frozen=True)
class SubsetSource:
    """Some chunks of another source (a pilot sample), renumbered ``0 .. k-1`` in the given order."""

    base: object
    indices: tuple

    @property
    def n_chunks(self):
        return len(self.indices)

    @property
    def n_features(self):
        return self.base.n_features

    @property
    def n_samples(self):
        return sum(self.base.chunk_len(i) for i in self.indices)

    @property
    def chunk_rows(self):
        return self.base.chunk_rows

    def chunk_len(self, index):
        return self.base.chunk_len(self.indices[index])

    def read(self, index):
        return self.base.read(self.indices[index])

    def describe(self, index):
        return self.base.describe(self.indices[index])
