"""Mergeable moment states and the kernels that produce them.

A :class:`MomentState` is a value: raw float64 sums and an integer count,
merged by ``+`` with ``0`` as the identity.  Division happens once, in the
``finalize`` functions of :mod:`stream_relu.moments.gauss` and
:mod:`stream_relu.moments.subspace`.

This module imports numpy only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["MomentState", "ChunkKernel", "digest"]


def digest(*arrays):
    """Short sha256 digest of float64 arrays (shapes included): the key of a plan."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ChunkKernel:
    """A per-chunk function ``fn(x, y, plan) -> MomentState`` with the name its task keys carry.

    The engine runs kernels as values: it never looks one up by name, so it
    imports no kernel module.
    """

    name: str
    fn: object

    def __call__(self, x, y, plan):
        return self.fn(x, y, plan)


class MomentState:
    """Raw float64 sums of one pass plus the row count; merged by ``+``.

    Parameters
    ----------
    kind : str
        ``"gauss"``, ``"subspace"`` or ``"joint"``.
    key : str
        Identity of the pass's inputs (a hash of the plan); states merge only
        with states of the same kind and key.
    count : int
        Number of rows summed.
    sums : dict of str to ndarray
        float64 arrays; the same names and shapes in every state of a pass.

    Notes
    -----
    ``0 + s`` is ``s`` so Python's ``sum`` works.  IEEE addition is
    commutative but not associative: combine states in a fixed order over
    chunk indices to get bitwise reproducible results.
    """

    __slots__ = ("kind", "key", "count", "sums")

    def __init__(self, kind, key, count, sums):
        self.kind = kind
        self.key = key
        self.count = int(count)
        self.sums = sums

    def __add__(self, other):
        if isinstance(other, int) and other == 0:
            return self
        if not isinstance(other, MomentState):
            return NotImplemented
        if (other.kind, other.key) != (self.kind, self.key):
            raise ValueError(
                f"cannot merge a {other.kind!r} state keyed {other.key!r} into a "
                f"{self.kind!r} state keyed {self.key!r}"
            )
        if other.sums.keys() != self.sums.keys():
            raise ValueError("cannot merge moment states with different sums")
        return MomentState(
            self.kind,
            self.key,
            self.count + other.count,
            {k: self.sums[k] + other.sums[k] for k in self.sums},
        )

    __radd__ = __add__

    def nbytes(self):
        """Size of the sums in bytes."""
        return sum(v.nbytes for v in self.sums.values())

    def to_arrays(self):
        """Flat mapping of plain arrays (for persistence without pickles)."""
        out = {f"sum/{k}": v for k, v in self.sums.items()}
        out["count"] = np.array(self.count, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, kind, key, arrays):
        """Inverse of :meth:`to_arrays`."""
        sums = {k[4:]: np.asarray(v, dtype=np.float64) for k, v in arrays.items() if k.startswith("sum/")}
        return cls(kind, key, int(arrays["count"]), sums)

    def __eq__(self, other):
        if not isinstance(other, MomentState):
            return NotImplemented
        return (
            (self.kind, self.key, self.count) == (other.kind, other.key, other.count)
            and self.sums.keys() == other.sums.keys()
            and all(np.array_equal(self.sums[k], other.sums[k]) for k in self.sums)
        )

    def is_finite(self):
        """Whether every sum is finite (a NaN or infinity in any row reaches them)."""
        return all(np.isfinite(v).all() for v in self.sums.values())

    def fingerprint(self):
        """Digest of the count and sums: equal for states of the same rows (duplicate and changed-chunk checks).

        The sums depend on every value of the chunk, so any change to the
        rows changes them; hashing them costs nothing next to hashing the bytes.
        """
        arrays = [np.array(self.count, dtype=np.float64)] + [self.sums[k] for k in sorted(self.sums)]
        return digest(*arrays)

    def __repr__(self):
        return f"MomentState(kind={self.kind!r}, key={self.key!r}, count={self.count}, sums={sorted(self.sums)})"
