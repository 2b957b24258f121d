"""Mergeable moment states: per-chunk kernels and the finalization into Hermite moments.

A :class:`MomentState` is a value: raw float64 sums and an integer count,
merged by ``+`` with ``0`` as the identity.  Division happens once, in the
``finalize`` functions.  Two passes over the data are used:

``gauss`` pass (no inputs), :mod:`.gauss`
    Sums that give the input mean and covariance, ``T_0``, ``T_1`` and the
    full ``d x d`` ``T_2`` in whitened coordinates (the whitening formulas
    are in that module's Notes).
``subspace`` pass (keyed by a :class:`SubspacePlan`), :mod:`.subspace`
    In the ``m``-dimensional span ``U`` found by the first pass: the order-2
    moment with the order-0/1 control variate, and the full symmetric order-3
    and order-4 moments with the order-0/1/2 control variate (the control
    variates are in that module's Notes).

:mod:`.joint` sums both passes in one read under a plan from a pilot
sample; :mod:`.state` holds the state algebra and :mod:`._blocks` the
blocked-kernel machinery the kernels share.  The state size is ``O(d^2)``
for the first pass and ``O(m^4)`` for the second (``(m(m+1)/2)^2``
numbers); no array of ``d^3`` numbers ever exists.

This package imports numpy only.
"""

# The module constants (GAUSS_KEY ... MAX_BLOCK_ROWS) stay importable from here, as from the former single module.
from ._blocks import BLOCK_BYTES, MAX_BLOCK_ROWS, N_PROJECTIONS, projection_directions  # noqa: F401
from .gauss import (  # noqa: F401
    GAUSS,
    GAUSS_KEY,
    NORMALITY_EVERY,
    SINGULAR_RTOL,
    AffineFit,
    GaussMoments,
    GaussPlan,
    Normality,
    affine_least_squares,
    refreshed_affine_moments,
    finalize_gauss,
    gauss_chunk,
    normality_statistics,
)
from .joint import JOINT, JointMoments, joint_chunk, split_joint
from .state import ChunkKernel, MomentState, digest
from .subspace import SUBSPACE, SubspaceMoments, SubspacePlan, finalize_subspace, pair_indices, subspace_chunk

__all__ = [
    "MomentState",
    "ChunkKernel",
    "GAUSS",
    "SUBSPACE",
    "JOINT",
    "SubspacePlan",
    "GaussMoments",
    "SubspaceMoments",
    "GaussPlan",
    "gauss_chunk",
    "subspace_chunk",
    "joint_chunk",
    "split_joint",
    "finalize_gauss",
    "finalize_subspace",
    "pair_indices",
    "digest",
    "normality_statistics",
    "projection_directions",
    # added with the split into a package
    "Normality",
    "JointMoments",
    "AffineFit",
    "affine_least_squares",
    "refreshed_affine_moments",
]
