"""A fit's settings, parsed once into frozen values, and the constants both front ends share.

:func:`stream_relu.fit`, the CLI and the scikit-learn estimator read their
options into :class:`DataPolicy` and :class:`RefineSettings`; the
pipeline's stages take these values, and the model's provenance is written
from them.  Nothing here touches data.

Imports only the standard library and :mod:`stream_relu.errors`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from .errors import InputError

__all__ = [
    "NONFINITE_POLICIES",
    "DataPolicy",
    "RefineSettings",
    "FitSettings",
    "LocalClusterSettings",
    "check_n_hidden",
]

NONFINITE_POLICIES = ("error", "skip")
DEFAULT_CHUNK_ROWS = 65536
DEFAULT_REFINE_ROWS = 250_000
DEFAULT_REFINE_ROWS_MAX = 1_000_000
DEFAULT_REFINE_PASSES = 3  # Newton steps over every row, at most (noisy labels, stores larger than the in-memory rows)
DEFAULT_REFINE_MAXITER = 3000
REFINE_MEMORY_BYTES = 1 << 30  # float64 inputs of the largest in-memory refinement
# Noiseless float32 data refine to a relative MSE of about 1e-15; a residual
# above this says the labels are noisy and more rows will help.
NOISY_REL_MSE = 1e-10
CONSTANT_Y_RTOL = 1e-14  # Var(y) below this times T_0^2: y is constant
NORMALITY_Z = 8.0  # |z| of skewness or excess kurtosis above which x is called non-Gaussian
ROWS_PER_PARAMETER_PAIR = 2000  # the envelope's n >= 1e6 at d m = 500
PILOT_MIN_ROWS = 1 << 22  # a pilot holds the first chunks of at least this many rows (about 4.2 million)
PILOT_MAX_SIN = 0.25  # largest sine of the angles between the pilot's span and the full T_2's top span


def _positive_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DataPolicy:
    """How the rows are read and what happens to bad ones.

    Parameters
    ----------
    x_name, y_name : str
        Array names inside a store.
    chunk_rows : int
        Rows per chunk for in-memory input.
    storage_options : dict, optional
        fsspec options for store URLs (and a remote state folder).
    nonfinite : {"error", "skip"}
        Rows holding NaN or infinity: fail naming the chunks, or drop them.
    missing_chunks : {"error", "fill"}
        A chunk absent from storage: fail naming it, or read the fill value.
    """

    x_name: str = "x"
    y_name: str = "y"
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    storage_options: dict = field(default=None, hash=False, compare=False)
    nonfinite: str = "error"
    missing_chunks: str = "error"

    def __post_init__(self):
        if self.nonfinite not in NONFINITE_POLICIES:
            raise InputError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {self.nonfinite!r}")
        _positive_int("chunk_rows", self.chunk_rows)


@dataclass(frozen=True)
class RefineSettings:
    """The local refinement of the moment estimate (see :func:`stream_relu.fit` for each option).

    Parameters
    ----------
    enabled : bool
        ``refine_model``: polish the moment estimate at all.
    rows : int
        ``refine_rows``: rows of the first in-memory refinement.
    rows_max : int
        ``refine_rows_max``: rows of the second one, when the first shows label noise.
    passes : int
        ``refine_passes``: at most this many Newton steps over every row
        after the in-memory runs, when the labels are noisy and the store
        holds more rows than they read (0: none).
    maxiter : int
        ``refine_maxiter``: iteration cap.
    target : float, optional
        ``refine_target``: stop at this relative training MSE.
    """

    enabled: bool = True
    rows: int = DEFAULT_REFINE_ROWS
    rows_max: int = DEFAULT_REFINE_ROWS_MAX
    passes: int = DEFAULT_REFINE_PASSES
    maxiter: int = DEFAULT_REFINE_MAXITER
    target: float | None = None

    def __post_init__(self):
        for name in ("rows", "rows_max", "maxiter"):
            _positive_int(f"refine_{name}", getattr(self, name))
        if isinstance(self.passes, bool) or not isinstance(self.passes, numbers.Integral) or self.passes < 0:
            raise InputError(f"refine_passes must be an integer >= 0, got {self.passes!r}")

    def provenance(self):
        """The settings as the model file's provenance records them.

        Returns
        -------
        dict
            ``refine``, ``refine_rows``, ``refine_rows_max``, ``refine_passes``,
            ``refine_maxiter``, ``refine_target``.
        """
        return {
            "refine": bool(self.enabled),
            "refine_rows": int(self.rows),
            "refine_rows_max": int(self.rows_max),
            "refine_passes": int(self.passes),
            "refine_maxiter": int(self.maxiter),
            "refine_target": None if self.target is None else float(self.target),
        }


def check_n_hidden(n_hidden, n_features):
    """``n_hidden`` as an int (or None: estimate it), refused when not in ``1 .. n_features``.

    Parameters
    ----------
    n_hidden : int or None
        The width asked for.
    n_features : int
        Columns of ``x``.

    Returns
    -------
    int or None

    Raises
    ------
    InputError
        ``n_hidden`` below 1 or above ``n_features``.
    """
    if n_hidden is None:
        return None
    n_hidden = int(n_hidden)
    if n_hidden < 1:
        raise InputError(f"n_hidden (--hidden) must be a positive integer, got {n_hidden}")
    if n_hidden > n_features:
        raise InputError(
            f"--hidden {n_hidden} is larger than n_features = {n_features}: stream_relu 0.1 recovers at most "
            "as many units as there are features (m <= d; n_hidden in the Python API)"
        )
    return n_hidden


@dataclass(frozen=True)
class FitSettings:
    """All of a fit's settings; the model's provenance is written from them.

    Parameters
    ----------
    n_hidden : int, optional
        The width asked for (None: estimated).
    data : DataPolicy
        How rows are read.
    refine : RefineSettings
        The refinement.
    two_pass : bool
        Never plan one pass after a pilot.
    random_state : int
        Seeds the decomposition's random slices.
    """

    n_hidden: int | None = None
    data: DataPolicy = field(default_factory=DataPolicy)
    refine: RefineSettings = field(default_factory=RefineSettings)
    two_pass: bool = False
    random_state: object = 0

    def provenance(self):
        """``settings`` and ``seeds`` of the model file's provenance.

        Returns
        -------
        dict
            ``{"settings": {...}, "seeds": {"random_state": ...}}``.
        """
        seed = self.random_state
        return {
            "settings": {
                "n_hidden": self.n_hidden,
                **self.refine.provenance(),
                "two_pass": bool(self.two_pass),
                "x": self.data.x_name,
                "y": self.data.y_name,
            },
            "seeds": {"random_state": seed if isinstance(seed, numbers.Integral) else repr(seed)},
        }


@dataclass(frozen=True)
class LocalClusterSettings:
    """Size of the local cluster a fit starts when no scheduler is given.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: one per core).
    threads_per_worker : int
        Threads per worker (default 1: BLAS is pinned to one thread per
        kernel call anyway, so processes use the cores best).
    memory_limit : str or int
        Per worker: ``"auto"`` (the machine's memory shared out), bytes, or a
        string such as ``"4GiB"``; ``0`` or None for no limit.
    """

    n_workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: object = "auto"

    @classmethod
    def from_config(cls, **overrides):
        """Defaults from dask's config (``stream-relu.local-cluster.*``), then ``overrides`` that are not None.

        Parameters
        ----------
        **overrides
            ``n_workers``, ``threads_per_worker``, ``memory_limit``.

        Returns
        -------
        LocalClusterSettings
        """
        import dask.config

        found = {
            "n_workers": dask.config.get("stream-relu.local-cluster.n-workers", None),
            "threads_per_worker": dask.config.get("stream-relu.local-cluster.threads-per-worker", 1),
            "memory_limit": dask.config.get("stream-relu.local-cluster.memory-limit", "auto"),
        }
        found.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**found)
