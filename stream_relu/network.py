"""The fitted model: a depth-2 ReLU network plus an affine term, and its file format.

``f(x) = sum_i a_i relu(<W[:, i], x> + b_i) + <u, x> + c``

Model files are strict JSON (no NaN or infinity), validated on load against
the JSON Schema shipped in ``stream_relu/schemas/model-v2.json`` (version 2,
written; it adds the standard errors) or ``model-v1.json`` (version 1, still
read) and checked for consistent shapes.  Imports numpy and jsonschema (dask only lazily, for
dask input to :meth:`ReluNetwork.predict`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .errors import ModelFileError

__all__ = ["ReluNetwork", "FORMAT_VERSION", "model_schema", "load_model", "to_jsonable"]

FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)


def model_schema(version=FORMAT_VERSION):
    """The JSON Schema (draft 2020-12) of model files of ``version`` (1 or 2), as a dict."""
    text = resources.files("stream_relu").joinpath(f"schemas/model-v{int(version)}.json").read_text()
    return json.loads(text)


def to_jsonable(obj):
    """Convert numpy values and containers to JSON types; non-finite floats become None.

    Parameters
    ----------
    obj : object
        Dicts, lists, tuples, numpy arrays and scalars, nested.

    Returns
    -------
    object
        The same structure of dicts, lists, str, int, float, bool and None.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


@dataclass(frozen=True)
class ReluNetwork:
    """A depth-2 ReLU network with biases and an affine term.

    Parameters
    ----------
    a : ndarray of shape (n_hidden,)
        Output weights.
    W : ndarray of shape (n_features, n_hidden)
        Column ``i`` is the unit vector ``w_i``.
    b : ndarray of shape (n_hidden,)
        Biases.
    u : ndarray of shape (n_features,)
        Linear part of the affine term.
    c : float
        Constant of the affine term.
    provenance : dict
        Where the model came from (package version, store, settings, seeds).
    diagnostics : dict
        The fit's diagnostics.
    stderr : dict, optional
        Standard errors: ``available``, then ``a``, ``W``, ``b``, ``u``,
        ``c`` (arrays shaped as the parameters, in the same unit order and
        orientation), ``rows``, ``curvature_rows``, ``method``; or
        ``reason`` (see :func:`stream_relu.stages.model_stderr`).  None for
        networks that were not fitted (and version 1 files).
    """

    a: np.ndarray
    W: np.ndarray
    b: np.ndarray
    u: np.ndarray
    c: float
    provenance: dict = field(default_factory=dict, compare=False)
    diagnostics: dict = field(default_factory=dict, compare=False)
    stderr: dict = field(default=None, compare=False)

    def __post_init__(self):
        a = np.asarray(self.a, dtype=np.float64).reshape(-1)
        W = np.asarray(self.W, dtype=np.float64)
        if W.ndim != 2 or W.shape[1] != a.shape[0]:
            raise ModelFileError(f"W has shape {W.shape}; expected (n_features, {a.shape[0]})")
        b = np.asarray(self.b, dtype=np.float64).reshape(-1)
        u = np.asarray(self.u, dtype=np.float64).reshape(-1)
        if b.shape != a.shape:
            raise ModelFileError(f"b has {b.shape[0]} entries; expected {a.shape[0]} (one per unit)")
        if u.shape[0] != W.shape[0]:
            raise ModelFileError(f"u has {u.shape[0]} entries; expected {W.shape[0]} (n_features)")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "W", W)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "u", u)
        object.__setattr__(self, "c", float(self.c))
        if self.stderr is not None:
            object.__setattr__(self, "stderr", _checked_stderr(self.stderr, W.shape))

    @property
    def n_features(self):
        return self.W.shape[0]

    @property
    def n_hidden(self):
        return self.a.shape[0]

    @classmethod
    def from_params(cls, params, frame, **kwargs):
        """:meth:`from_whitened` of parameters with ``a, W, b, u, c`` in the frame ``frame.mean``, ``frame.whitener``.

        Parameters
        ----------
        params : Params
            Parameters in whitened coordinates.
        frame : GaussMoments
            Anything with the ``mean`` and ``whitener`` of the coordinates.
        **kwargs
            Passed on to :meth:`from_whitened` (``provenance``, ``diagnostics``).

        Returns
        -------
        ReluNetwork
        """
        return cls.from_whitened(params.a, params.W, params.b, params.u, params.c, frame.mean, frame.whitener, **kwargs)

    @classmethod
    def from_whitened(cls, a, W, b, u, c, mean, whitener, **kwargs):
        """Map a network in ``z = A (x - mean)`` coordinates to x coordinates.

        Parameters
        ----------
        a, b : ndarray of shape (m,)
            Output weights and biases in whitened coordinates.
        W : ndarray of shape (d, m)
            Unit directions in whitened coordinates.
        u : ndarray of shape (d,)
            Linear part of the affine term in whitened coordinates.
        c : float
            Constant of the affine term.
        mean : ndarray of shape (d,)
            Input mean.
        whitener : ndarray of shape (d, d)
            Symmetric ``A = cov^{-1/2}``.
        **kwargs
            ``provenance`` and ``diagnostics`` of the new network.

        Returns
        -------
        ReluNetwork
            The same function in x coordinates, with unit ``w``.

        Notes
        -----
        ``<w, z> + b = <A w, x> + b - <A w, mean>`` (``A`` symmetric), then
        each unit is rescaled to unit ``w`` (``a <- a s``, ``b <- b / s``,
        ``s = ||A w||``); ``u_x = A u`` and ``c_x = c - <A u, mean>``.
        """
        Wx = whitener @ W
        bx = b - mean @ Wx
        s = np.linalg.norm(Wx, axis=0)
        s = np.where(s > 0, s, 1.0)
        ux = whitener @ u
        return cls(a=a * s, W=Wx / s, b=bx / s, u=ux, c=c - float(mean @ ux), **kwargs)

    def predict(self, x):
        """Evaluate the network.

        Parameters
        ----------
        x : ndarray or dask.array.Array of shape (n_samples, n_features)
            Inputs in the original coordinates.

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,), float64
        """
        if type(x).__module__.startswith("dask"):
            x = x.rechunk({1: -1}) if x.ndim == 2 else x
            return x.map_blocks(self._predict_block, drop_axis=1, dtype=np.float64)
        return self._predict_block(x)

    def _predict_block(self, x):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x has shape {x.shape}; expected (n_samples, {self.n_features})")
        return np.maximum(x @ self.W + self.b, 0.0) @ self.a + x @ self.u + self.c

    def to_dict(self):
        """JSON-ready dict in the model-file format.

        Returns
        -------
        dict
            Plain JSON types; non-finite diagnostics become None.
        """
        return to_jsonable(
            {
                "format_version": FORMAT_VERSION,
                "n_features": self.n_features,
                "n_hidden": self.n_hidden,
                "a": self.a,
                "W": self.W,
                "b": self.b,
                "u": self.u,
                "c": self.c,
                **({} if self.stderr is None else {"stderr": self.stderr}),
                "provenance": self.provenance,
                "diagnostics": self.diagnostics,
            }
        )

    def save(self, path):
        """Write the model file (strict JSON).

        Parameters
        ----------
        path : str or path-like
            File to write.
        """
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")

    @classmethod
    def from_dict(cls, doc, *, source="model"):
        """Validate a parsed model document and build the network.

        Parameters
        ----------
        doc : dict
            The parsed JSON document.
        source : str
            Where it came from, for error messages.

        Returns
        -------
        ReluNetwork

        Raises
        ------
        ModelFileError
            Naming the field that is missing, malformed or inconsistent.
        """
        import jsonschema

        if not isinstance(doc, dict):
            raise ModelFileError(f"{source}: expected a JSON object, found {type(doc).__name__}")
        version = doc.get("format_version")
        if version not in READ_VERSIONS or isinstance(version, bool):
            raise ModelFileError(
                f"{source}: format_version is {version!r}; this stream_relu reads versions "
                + " and ".join(str(v) for v in READ_VERSIONS)
            )
        validator = jsonschema.Draft202012Validator(model_schema(version))
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            err = errors[0]
            where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
            raise ModelFileError(f"{source}: field {where}: {err.message}")
        m = len(doc["a"])
        d = len(doc["u"])
        checks = [
            ("b", len(doc["b"]), m, "one per unit (len(a))"),
            ("W", len(doc["W"]), d, "n_features rows (len(u))"),
        ]
        checks += [(f"W/{r}", len(row), m, "n_hidden numbers (len(a))") for r, row in enumerate(doc["W"])]
        for key, expect, what in (("n_features", d, "len(u)"), ("n_hidden", m, "len(a)")):
            if key in doc:
                checks.append((key, doc[key], expect, what))
        for name, found, expected, what in checks:
            if found != expected:
                raise ModelFileError(f"{source}: field {name} has {found}; expected {expected}, {what}")
        arrays = {}
        for key in ("a", "W", "b", "u", "c"):
            try:
                value = np.array(doc[key], dtype=np.float64)
            except OverflowError:
                raise ModelFileError(f"{source}: field {key} holds a number too large for a float") from None
            if not np.all(np.isfinite(value)):
                raise ModelFileError(f"{source}: field {key} holds a non-finite number (strict JSON)")
            arrays[key] = value
        return cls(
            a=arrays["a"],
            W=arrays["W"].reshape(d, m),
            b=arrays["b"],
            u=arrays["u"],
            c=float(arrays["c"]),
            provenance=doc.get("provenance", {}),
            diagnostics=doc.get("diagnostics", {}),
            stderr=_stderr_from_doc(doc.get("stderr"), (d, m), source),
        )


def _checked_stderr(stderr, shape):
    """``stderr`` with its arrays as float64 arrays shaped like the parameters (``shape`` is W's)."""
    if not stderr.get("available"):
        return dict(stderr)
    d, m = shape
    want = {"a": (m,), "W": (d, m), "b": (m,), "u": (d,)}
    out = dict(stderr)
    for key, dims in want.items():
        value = np.asarray(stderr[key], dtype=np.float64)
        if value.size != int(np.prod(dims)):
            raise ModelFileError(f"stderr/{key} has {value.size} numbers; expected {int(np.prod(dims))}")
        out[key] = value.reshape(dims)
    out["c"] = float(stderr["c"])
    return out


def _stderr_from_doc(doc, shape, source):
    if doc is None:
        return None
    try:
        return _checked_stderr(doc, shape)
    except ModelFileError as exc:
        raise ModelFileError(f"{source}: field {exc}") from None


def load_model(path):
    """Read and validate a model file.

    Parameters
    ----------
    path : str or path-like
        The model file.

    Returns
    -------
    ReluNetwork
        Checked by :meth:`ReluNetwork.from_dict`.

    Raises
    ------
    ModelFileError
        If the file is not strict JSON or does not match the schema.
    FileNotFoundError
        If there is no such file.
    """

    def _reject(token):
        raise ModelFileError(f"{path}: {token} is not allowed in a model file (strict JSON)")

    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject)
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ModelFileError(f"{path}: JSON nested too deeply to read") from None
    return ReluNetwork.from_dict(doc, source=str(path))
