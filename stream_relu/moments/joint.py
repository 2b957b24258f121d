"""The joint pass: both passes' sums of a chunk in one read, under a :class:`SubspacePlan`.

The first pass is shifted by the plan's centre and ``T0``
(:attr:`SubspacePlan.gauss_plan`); the plan usually comes from a pilot
sample of chunks.  This module imports numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._blocks import _row_scratch, _shifted_blocks, _with_float64_fallback
from .gauss import _gauss_acc, _gauss_block, _gauss_state
from .state import ChunkKernel, MomentState
from .subspace import _subspace_acc, _subspace_block, _subspace_ops, _subspace_state, _subspace_width

__all__ = ["JOINT", "JointMoments", "joint_chunk", "split_joint"]


def _joint_sums(x, y, plan, dt):
    n, d = x.shape
    ops = _subspace_ops(plan, dt)
    acc = _subspace_acc(d, plan.n_hidden)
    gauss_plan = plan.gauss_plan
    gacc = _gauss_acc(d, gauss_plan.groups)
    Yx = None
    for _, Fb in _shifted_blocks(x, y, plan.mean, plan.T0, dt, _subspace_width(d, plan.n_hidden) + d):
        _subspace_block(Fb, ops, acc)
        Yx = _row_scratch(Yx, Fb.shape[0], d, dt)
        _gauss_block(Fb, Yx, None, gacc, False)
    sub = _subspace_state(acc, n, plan.key)
    gauss = _gauss_state(gacc, n, d, dt, gauss_plan.key)
    sums = {f"g/{k}": v for k, v in gauss.sums.items()}
    sums.update({f"s/{k}": v for k, v in sub.sums.items()})
    return MomentState("joint", plan.key, n, sums)


def joint_chunk(x, y, plan):
    """Both passes' sums of one chunk in one read: the first pass shifted by the plan's centre.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_features)
    y : ndarray of shape (n_rows,)
    plan : SubspacePlan
        Usually planned from a pilot sample of chunks.

    Returns
    -------
    MomentState
        Kind ``"joint"``: the sums of :func:`~stream_relu.moments.gauss_chunk`
        under ``plan.gauss_plan`` prefixed ``g/`` and those of
        :func:`~stream_relu.moments.subspace_chunk` prefixed ``s/``;
        :func:`split_joint` parts them.  The normality sums are left empty
        (``norm_rows`` 0): a joint pass leaves that check to its pilot.
    """
    x = np.asarray(x)
    return _with_float64_fallback(_joint_sums, x, y, plan)


JOINT = ChunkKernel("joint", joint_chunk)


@dataclass(frozen=True)
class JointMoments:
    """The two states inside a ``joint`` state; unpacks as ``gauss, subspace = split_joint(...)``.

    Attributes
    ----------
    gauss : MomentState
        Kind ``"gauss"``, keyed by the plan's :attr:`~SubspacePlan.gauss_plan`.
    subspace : MomentState
        Kind ``"subspace"``, keyed by the plan.
    """

    gauss: MomentState
    subspace: MomentState

    def __iter__(self):
        yield self.gauss
        yield self.subspace

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return (self.gauss, self.subspace)[index]


def split_joint(state, plan):
    """The ``gauss`` and ``subspace`` states inside a merged ``joint`` state.

    Parameters
    ----------
    state : MomentState
        A ``joint`` state of :func:`joint_chunk` sums under ``plan``.
    plan : SubspacePlan

    Returns
    -------
    JointMoments
        Also unpacks as the 2-tuple ``(gauss, subspace)``.
    """
    if state.kind != "joint" or state.key != plan.key:
        raise ValueError(f"state {state.kind!r} {state.key!r} is not a joint state of plan {plan.key!r}")
    g = {k[2:]: v for k, v in state.sums.items() if k.startswith("g/")}
    s = {k[2:]: v for k, v in state.sums.items() if k.startswith("s/")}
    return JointMoments(
        gauss=MomentState("gauss", plan.gauss_plan.key, state.count, g),
        subspace=MomentState("subspace", plan.key, state.count, s),
    )
