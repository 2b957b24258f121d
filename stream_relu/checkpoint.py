"""Persisted progress of the passes (``fit --state PATH``): resume after a crash, pick up appended rows.

Layout under the state folder (a local path or any fsspec URL)::

    manifest.json                      store identity and settings the states depend on
    <kind>-<key>/prefix.npz, .json     the fold of chunks [0, k) (full chunks only) and,
                                       per chunk, its row count, non-finite rows, fingerprint
    <kind>-<key>/chunk-<i>.npz, .json  a completed chunk not yet folded into the prefix

Every ``.npz`` holds plain float64/int64 arrays (never pickles) and is
written to a temporary name, then renamed; its sidecar ``.json`` (written
the same way, after it) records the sha256 of the ``.npz`` bytes, so a torn
or corrupted file is detected and recomputed, never used.

Why it is bitwise exact.  The fold is left to right over chunk indices, so
``prefix(k) + chunk k + chunk k+1 + ...`` is the same sequence of additions
an uninterrupted run performs.  Only full chunks enter the persisted prefix:
a trailing partial chunk stays a chunk record with its row count, and is
recomputed when the store has grown since (appended rows).

Size: one prefix and at most the in-flight window of chunk records per pass,
each the size of one state: ``O(d^2)`` for pass 1, ``O(m^4)`` for pass 2;
plus per-chunk bookkeeping of about 60 bytes (JSON) per chunk.  It does not
grow with the rows, only (slowly) with the number of chunks.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .data import missing_bucket, storage_errors
from .errors import InputError, StoreNotFoundError
from .moments import MomentState

__all__ = ["StateFolder", "PassCheckpoint", "CheckpointMismatchError", "ChunkRecord", "Resume"]

log = logging.getLogger("stream_relu")
FORMAT = 1


class CheckpointMismatchError(InputError):
    """The state folder was written for another store, other settings, or a store that changed since."""


@dataclass(frozen=True)
class ChunkRecord:
    """Bookkeeping of one chunk: its row count, non-finite rows dropped, and state fingerprint."""

    index: int
    rows: int
    nonfinite: int = 0
    fingerprint: str | None = None

    def to_json(self):
        return asdict(self)

    @classmethod
    def from_json(cls, obj):
        return cls(int(obj["index"]), int(obj["rows"]), int(obj["nonfinite"]), obj.get("fingerprint"))


@dataclass
class Resume:
    """Reusable progress of a pass for the current chunk layout.

    Attributes
    ----------
    prefix : MomentState or 0
        The fold of chunks ``[0, k)``.
    k : int
    records : list of ChunkRecord
        Bookkeeping of chunks ``[0, k)``.
    done : dict of int to (MomentState, ChunkRecord)
        Reusable chunk records beyond ``k``.
    """

    prefix: object = 0
    k: int = 0
    records: list = field(default_factory=list)
    done: dict = field(default_factory=dict)


def _fs(url, storage_options=None):
    import fsspec

    try:
        return fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    except ImportError as exc:
        raise InputError(f"cannot use state folder '{url}': {exc}") from exc


def _storage_calls(method):
    """Run a method of the state folder (or of a pass in it) with storage failures mapped.

    A refused access or an unreachable endpoint becomes
    :class:`~stream_relu.errors.StorageAccessError` or
    :class:`~stream_relu.errors.StorageUnreachableError` naming the folder.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with storage_errors(getattr(self, "folder", self).url):
            return method(self, *args, **kwargs)

    return wrapper


def _npz_bytes(arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class StateFolder:
    """The state folder of one fit: the manifest and one :class:`PassCheckpoint` per pass.

    Parameters
    ----------
    url : str
        Folder path or fsspec URL.
    identity : dict
        What the states depend on (store identity without its row count,
        array names, settings); a resume against anything else is refused.
    storage_options : dict, optional
        fsspec options (credentials) for the folder's URL.
    """

    def __init__(self, url, identity, storage_options=None):
        self.url = str(url)
        self.fs, self.root = _fs(url, storage_options)
        self.identity = json.loads(json.dumps(identity))
        bucket = missing_bucket(self.url, storage_options or {})
        if bucket is not None:  # refused here: creating folders would create the bucket
            raise StoreNotFoundError(
                f"cannot use state folder '{self.url}': bucket '{bucket}' does not exist; create it or choose "
                "another --state"
            )
        self._open()

    @_storage_calls
    def _open(self):
        """Create the folder, then check its manifest against the identity (or write it)."""
        self.fs.makedirs(self.root, exist_ok=True)
        manifest = self._path("manifest.json")
        if self.fs.exists(manifest):
            found = json.loads(self.fs.cat_file(manifest))
            if found.get("format") != FORMAT:
                raise CheckpointMismatchError(
                    f"state {self.url} has format {found.get('format')!r}; this stream_relu writes format {FORMAT}"
                )
            if found.get("identity") != self.identity:
                diff = sorted(
                    k for k in set(found.get("identity", {})) | set(self.identity)
                    if found.get("identity", {}).get(k) != self.identity.get(k)
                )
                raise CheckpointMismatchError(
                    f"state {self.url} was written for another store or other settings (differs in: "
                    f"{', '.join(diff)}); use a new --state folder or delete this one"
                )
        else:
            self.write_bytes("manifest.json", json.dumps({"format": FORMAT, "identity": self.identity}).encode())

    def _path(self, name):
        return f"{self.root.rstrip('/')}/{name}"

    def write_bytes(self, name, data):
        """Write ``data`` to ``name`` atomically (temporary name, then rename)."""
        final = self._path(name)
        tmp = f"{final}.tmp-{time.monotonic_ns()}"
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, final)

    def read_bytes(self, name):
        path = self._path(name)
        return self.fs.cat_file(path) if self.fs.exists(path) else None

    def remove(self, name):
        path = self._path(name)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    @_storage_calls
    def passes(self):
        """Names of the pass folders present."""
        return sorted(
            p.rstrip("/").rsplit("/", 1)[-1]
            for p in self.fs.ls(self.root, detail=False)
            if self.fs.isdir(p)
        )

    def pass_checkpoint(self, kind, key):
        return PassCheckpoint(self, f"{kind}-{key}", kind, key)

    @_storage_calls
    def prune(self, keep, kinds=None):
        """Delete pass folders whose name is not in ``keep`` (their inputs changed).

        With ``kinds``, only folders of those pass kinds (``"gauss"``,
        ``"refine"``, ...) are considered.
        """
        for name in self.passes():
            if name not in keep and (kinds is None or name.split("-", 1)[0] in kinds):
                self.remove(name)


class PassCheckpoint:
    """Persisted progress of one pass (see the module docstring)."""

    def __init__(self, folder, name, kind, key):
        self.folder = folder
        self.name = name
        self.kind = kind
        self.key = key
        self.last_prefix_write = 0.0

    # -- records: an npz plus a sidecar with its checksum and bookkeeping --
    def _write(self, stem, arrays, meta):
        data = _npz_bytes(arrays)
        meta = dict(meta, sha256=hashlib.sha256(data).hexdigest())
        self.folder.write_bytes(f"{self.name}/{stem}.npz", data)
        self.folder.write_bytes(f"{self.name}/{stem}.json", json.dumps(meta).encode())

    def _read(self, stem):
        raw_meta = self.folder.read_bytes(f"{self.name}/{stem}.json")
        data = self.folder.read_bytes(f"{self.name}/{stem}.npz")
        if raw_meta is None or data is None:
            return None
        try:
            meta = json.loads(raw_meta)
        except ValueError:
            return None
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            log.warning("state record %s/%s failed its checksum; it will be recomputed", self.name, stem)
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return MomentState.from_arrays(self.kind, self.key, arrays), meta

    @_storage_calls
    def save_chunk(self, record, state):
        """Persist one completed chunk's state and its :class:`ChunkRecord`."""
        self._write(f"chunk-{record.index:09d}", state.to_arrays(), record.to_json())

    @_storage_calls
    def save_prefix(self, state, k, records):
        """Persist the fold of chunks ``[0, k)`` and drop their chunk records."""
        self._write("prefix", state.to_arrays(), {"k": k, "chunks": [r.to_json() for r in records[:k]]})
        for name in self.folder.fs.ls(self.folder._path(self.name), detail=False):
            base = name.rsplit("/", 1)[-1]
            if base.startswith("chunk-") and int(base[6:15]) < k:
                self.folder.fs.rm(name)
        self.last_prefix_write = time.monotonic()

    @_storage_calls
    def load(self, chunk_rows_of):
        """Reusable progress for the current chunk layout (a :class:`Resume`).

        ``chunk_rows_of(i)`` is chunk ``i``'s row count now (None past the
        end).  Records whose row count differs (a trailing chunk that grew)
        are not reused.
        """
        resume = Resume()
        rec = self._read("prefix")
        if rec is not None:
            state, meta = rec
            records = [ChunkRecord.from_json(c) for c in meta["chunks"]]
            if all(chunk_rows_of(r.index) == r.rows for r in records):
                resume = Resume(state, int(meta["k"]), records)
        base = self.folder._path(self.name)
        if self.folder.fs.exists(base):
            for name in self.folder.fs.ls(base, detail=False):
                stem = name.rsplit("/", 1)[-1]
                if not (stem.startswith("chunk-") and stem.endswith(".json")) or int(stem[6:15]) < resume.k:
                    continue
                rec = self._read(stem[:-5])
                if rec is not None and chunk_rows_of(int(stem[6:15])) == rec[1]["rows"]:
                    resume.done[int(stem[6:15])] = (rec[0], ChunkRecord.from_json(rec[1]))
        return resume
