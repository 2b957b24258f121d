"""Ground-truth networks and simulated sample stores.

A store written here is a function of ``(truth, n_samples, chunk_rows, seed,
dtype)`` only: chunk ``i`` draws its inputs and its label noise from
``numpy.random.default_rng([seed, 1, i])``, so the bytes do not depend on the
cluster or on the order the chunks are written in.  The truth (model-file
format plus ``mu``, ``cov`` and ``noise``, the absolute standard deviation of
the label noise) goes into the group attribute ``truth``; ``fit`` never reads
it.

Default draw (:func:`draw_network`): ``a_i = s_i U[0.5, 1.5]`` with mixed signs
``s_i`` (at least one of each when ``m >= 2``), ``b_i ~ U[-1.5, 1.5]``,
``w_i`` uniform on the unit sphere, no affine term, ``x ~ N(0, I)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .data import create_sample_store, write_rows
from .errors import InputError, ModelFileError
from .network import ReluNetwork, to_jsonable

__all__ = ["Truth", "draw_network", "simulate_store", "load_truth", "simulate_chunk"]

BIAS_RANGE = 1.5


@dataclass(frozen=True)
class Truth:
    """A planted network and its input distribution.

    Parameters
    ----------
    network : ReluNetwork
        In x coordinates; ``W`` need not have unit columns.
    mean : ndarray of shape (d,)
        Mean of x.
    cov : ndarray of shape (d, d)
        Covariance of x (positive definite).
    noise : float
        Standard deviation of the Gaussian label noise.
    """

    network: ReluNetwork
    mean: np.ndarray
    cov: np.ndarray
    noise: float = 0.0

    @property
    def n_features(self):
        return self.network.n_features

    def sample(self, rng, n_rows, dtype=np.float64):
        """Draw rows ``(x, f(x))``; ``f`` is evaluated on ``x`` as stored in ``dtype``.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of the draws.
        n_rows : int
            Number of rows.
        dtype : numpy dtype
            dtype ``x`` is rounded to before ``f`` is evaluated.

        Returns
        -------
        x : ndarray of shape (n_rows, d)
        f : ndarray of shape (n_rows,)
            Noiseless labels, float64.
        """
        L = np.linalg.cholesky(self.cov)
        x = (self.mean + rng.standard_normal((n_rows, self.n_features)) @ L.T).astype(dtype)
        return x, self.network.predict(x)

    def to_dict(self):
        """The truth-file document: the model format plus ``mu``, ``cov`` and ``noise``.

        Returns
        -------
        dict
        """
        doc = self.network.to_dict()
        doc.update(to_jsonable({"mu": self.mean, "cov": self.cov, "noise": self.noise}))
        return doc

    @classmethod
    def from_dict(cls, doc, *, source="truth"):
        """Build a truth from a parsed truth-file document.

        Parameters
        ----------
        doc : dict
            Model-format keys, and optionally ``mu`` (default 0), ``cov``
            (default identity) and ``noise`` (default 0).
        source : str
            Where it came from, for error messages.

        Returns
        -------
        Truth
        """
        network = ReluNetwork.from_dict(doc, source=source)
        d = network.n_features
        mean = np.asarray(doc.get("mu", np.zeros(d)), dtype=np.float64)
        cov = np.asarray(doc.get("cov", np.eye(d)), dtype=np.float64)
        if mean.shape != (d,):
            raise ModelFileError(f"{source}: field mu has shape {mean.shape}; expected ({d},)")
        if cov.shape != (d, d):
            raise ModelFileError(f"{source}: field cov has shape {cov.shape}; expected ({d}, {d})")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ModelFileError(f"{source}: field cov is not positive definite") from None
        return cls(network=network, mean=mean, cov=cov, noise=float(doc.get("noise", 0.0)))


def draw_network(n_features, n_hidden, rng):
    """Draw a ground-truth network (see the module docstring for the law).

    Parameters
    ----------
    n_features, n_hidden : int
        Sizes ``d`` and ``m``.
    rng : numpy.random.Generator
        Source of the draw.

    Returns
    -------
    ReluNetwork
    """
    d, m = int(n_features), int(n_hidden)
    signs = rng.choice([-1.0, 1.0], size=m)
    if m >= 2 and abs(signs.sum()) == m:
        signs[rng.integers(m)] *= -1.0
    a = signs * rng.uniform(0.5, 1.5, size=m)
    b = rng.uniform(-BIAS_RANGE, BIAS_RANGE, size=m)
    W = rng.standard_normal((d, m))
    W /= np.linalg.norm(W, axis=0)
    return ReluNetwork(a=a, W=W, b=b, u=np.zeros(d), c=0.0)


def _noise_std(truth_network, mean, cov, ratio, seed):
    """``ratio * std(f(x))``, std from 200,000 draws fixed by the seed."""
    if ratio == 0:
        return 0.0
    probe = Truth(truth_network, mean, cov)
    _, f = probe.sample(np.random.default_rng([seed, 2]), 200_000)
    return float(ratio * f.std())


def simulate_chunk(truth, seed, index, n_rows, dtype):
    """Rows of chunk ``index``: ``(x, y)`` in ``dtype``."""
    rng = np.random.default_rng([seed, 1, index])
    x, f = truth.sample(rng, n_rows, dtype)
    if truth.noise > 0:
        f = f + truth.noise * rng.standard_normal(n_rows)
    return x, f.astype(dtype)


def _write_chunk(spec, truth, seed, index, start, n_rows, dtype):
    x, y = simulate_chunk(truth, seed, index, n_rows, dtype)
    write_rows(spec, start, x, y)
    return n_rows


def simulate_store(
    out,
    *,
    n_features=None,
    n_hidden=None,
    n_samples,
    noise=0.0,
    seed=0,
    chunk_rows=65536,
    truth=None,
    dtype="float32",
    overwrite=False,
    client=None,
    storage_options=None,
):
    """Write a simulated sample store.

    Parameters
    ----------
    out : str
        Path or URL of the new zarr group.
    n_features, n_hidden : int, optional
        Size of the network drawn by :func:`draw_network`; ignored when
        ``truth`` is given.
    n_samples : int
        Rows to write.
    noise : float
        Label noise as a fraction of ``std(f(x))``; overrides the truth's
        ``noise`` when nonzero.
    seed : int
        Seeds the network draw (``[seed, 0]``), the chunks (``[seed, 1, i]``)
        and the noise-scale probe (``[seed, 2]``).
    chunk_rows : int
        Rows per chunk.
    truth : Truth, optional
        Planted network and input law; drawn when omitted (x ~ N(0, I)).
    dtype : {"float32", "float64"}
        dtype of the stored arrays.
    overwrite : bool
        Replace an existing store at ``out``.
    client : dask.distributed.Client, optional
        Where to run the writes; the local threaded scheduler when omitted.
    storage_options : dict, optional
        fsspec options for ``out``.

    Returns
    -------
    Truth
        The truth written into the store's attributes.
    """
    import dask

    if n_samples <= 0:
        raise InputError(f"--samples must be positive, got {n_samples}")
    if chunk_rows <= 0:
        raise InputError(f"--chunk-rows must be positive, got {chunk_rows}")
    if noise < 0:
        raise InputError(f"--noise must be >= 0, got {noise}")
    if truth is None:
        if not n_features or not n_hidden or n_features < 1 or n_hidden < 1:
            raise InputError("--features and --hidden must be positive when no --truth is given")
        net = draw_network(n_features, n_hidden, np.random.default_rng([seed, 0]))
        truth = Truth(net, np.zeros(n_features), np.eye(n_features))
    if noise > 0:
        truth = Truth(
            truth.network, truth.mean, truth.cov, _noise_std(truth.network, truth.mean, truth.cov, noise, seed)
        )
    dtype = np.dtype(dtype)
    attrs = {
        "truth": truth.to_dict(),
        "simulation": {"seed": int(seed), "noise_ratio": float(noise), "chunk_rows": int(chunk_rows)},
    }
    store = create_sample_store(
        out,
        n_samples=n_samples,
        n_features=truth.n_features,
        chunk_rows=chunk_rows,
        dtype=dtype.name,
        attributes=json.loads(json.dumps(attrs, allow_nan=False)),
        overwrite=overwrite,
        storage_options=storage_options,
    )
    tasks = [
        dask.delayed(_write_chunk, pure=False)(
            store.spec, truth, seed, i, start, min(chunk_rows, n_samples - start), dtype
        )
        for i, start in enumerate(range(0, n_samples, chunk_rows))
    ]
    if client is not None:
        client.gather(client.compute(tasks))
    else:
        dask.compute(*tasks, scheduler="threads")
    return truth


def load_truth(source, *, storage_options=None):
    """Read a truth from a JSON file or from a store's ``truth`` attribute.

    Parameters
    ----------
    source : str
        A ``.json`` file, or a store path/URL written by :func:`simulate_store`.
    storage_options : dict, optional
        fsspec options for a store URL.

    Returns
    -------
    Truth
    """
    from .data import open_store

    if str(source).endswith(".json"):
        with open(source, encoding="utf-8") as fh:
            try:
                doc = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ModelFileError(f"{source}: not valid JSON ({exc})") from None
        return Truth.from_dict(doc, source=str(source))
    store = open_store(source, storage_options=storage_options)
    doc = store.attrs.get("truth")
    if doc is None:
        raise ModelFileError(f"store {source!r} has no 'truth' attribute (it was not written by simulate)")
    return Truth.from_dict(doc, source=f"{source} (truth attribute)")
