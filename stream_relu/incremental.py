"""Learning from batches: a moment accumulator that :meth:`update` merges into and :meth:`estimate` reads.

A :class:`MomentAccumulator` is a value (each call returns a new one) that
keeps two merged moment states:

* the pass-1 (``gauss``) sums over every batch seen;
* the pass-2 (``subspace``) sums under a :class:`~stream_relu.moments.SubspacePlan`,
  over the batches since the plan was made.

A plan needs pass-1 moments: on the first update, and whenever the rows
seen have at least doubled since the current plan was made, the plan is
rebuilt from the merged pass-1 moments (with the checks and width choice
of :func:`stream_relu.fit`) and the pass-2 state restarts from the current
batch.  So the plan always rests on more than half of the rows seen; with
equal batches, plans are made at calls 1, 2, 4, 8, ...

:meth:`MomentAccumulator.estimate` recovers the network with the stages
:func:`stream_relu.fit` uses (:func:`~stream_relu.stages.recover_stage`
with ``T_0``, ``T_1`` re-estimated from every row in the plan's
whitening, then :func:`~stream_relu.stages.refinement_stage` on the latest
batch).

Width.  Without ``n_hidden`` the width is measured by the spectrum rule of
:func:`stream_relu.width.measured_width` on every row seen (pass 1 sums
row groups); the accumulator keeps no rows beyond the latest batch, so
the residual look of :func:`stream_relu.fit` runs on that batch alone,
with a held-out eighth of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_limits

from .api import open_input
from .diagnostics import FitDiagnostics, envelope_warnings, width_warnings
from .engine import ChunkOptions, ChunkReport, open_runner, reduce_chunks
from .errors import DataError, RecoveryError
from .moments import GAUSS, SUBSPACE, GaussPlan, SubspacePlan, affine_least_squares, finalize_subspace, refreshed_affine_moments
from .network import ReluNetwork
from .passes import checked_width, validate_first
from .recovery import subspace_basis
from .settings import DataPolicy, RefineSettings, check_n_hidden
from .stages import recover_stage, refinement_stage
from .width import GROUPS

__all__ = ["MomentAccumulator", "Estimate"]


@dataclass(frozen=True)
class Estimate:
    """A network recovered from an accumulator, with the diagnostics schema of :func:`stream_relu.fit`.

    Parameters
    ----------
    model : ReluNetwork
        The network in ``x`` coordinates.
    diagnostics : dict
        As :attr:`stream_relu.FitResult.diagnostics`.
    """

    model: ReluNetwork
    diagnostics: dict


def _gauss_plan(n_features, n_hidden):
    """Unshifted pass-1 sums; with ``GROUPS`` row groups when the width is measured (``n_hidden`` None)."""
    return GaussPlan.zero(n_features, 0 if n_hidden is not None else GROUPS)


@dataclass(frozen=True)
class MomentAccumulator:
    """Merged moment states of the batches seen so far (see the module docstring).

    Start from ``MomentAccumulator()``; the fields are what updates build.

    Parameters
    ----------
    gauss : MomentState or 0
        Pass-1 sums over every batch.
    plan : SubspacePlan or None
        The current pass-2 plan (None while the data support no recovery).
    plan_gauss : GaussMoments or None
        The pass-1 moments the plan was built from.
    sub : MomentState or 0
        Pass-2 sums under ``plan`` since the plan was made.
    width : WidthChoice or None
        The width chosen with the plan.
    why : StreamReluError or None
        Why there is no plan (what :func:`stream_relu.fit` would raise).
    n_calls : int
        Updates so far.
    plan_calls : tuple of int
        The updates (counted from 1) that made a new plan.
    replanned : bool
        Whether the last update made a new plan.
    nonfinite_rows : int
        Rows dropped for NaN or infinity (``nonfinite="skip"``).
    """

    gauss: object = 0
    plan: object = None
    plan_gauss: object = None
    sub: object = 0
    width: object = None
    why: object = None
    n_calls: int = 0
    plan_calls: tuple = ()
    replanned: bool = False
    nonfinite_rows: int = 0

    def update(self, x, y, *, n_hidden=None, policy=DataPolicy(), client=None, scheduler=None):
        """The accumulator with one more batch merged in.

        Parameters
        ----------
        x : ndarray or dask.array.Array of shape (n_samples, n_features)
            Inputs of the batch.
        y : ndarray or dask.array.Array of shape (n_samples,)
            Labels of the batch.
        n_hidden : int, optional
            The width asked for (None: estimated when a plan is made).
        policy : DataPolicy
            Non-finite rows and chunking.
        client : dask.distributed.Client, optional
            Cluster to run on.
        scheduler : str, optional
            As for :func:`stream_relu.fit`.

        Returns
        -------
        MomentAccumulator

        Raises
        ------
        DataError
            No usable row in any batch so far, or NaN with ``policy.nonfinite == "error"``.
        """
        source = open_input(x, y, policy).source
        n_hidden = check_n_hidden(n_hidden, source.n_features)
        with open_runner(source, client, scheduler) as runner, threadpool_limits(limits=1, user_api="blas"):
            plan = _gauss_plan(source.n_features, n_hidden)
            batch = reduce_chunks(source, GAUSS, plan, runner, options=ChunkOptions(nonfinite=policy.nonfinite))
            merged = self.gauss + batch.state
            if merged == 0 or merged.count == 0:
                raise DataError("no usable rows (every row holds NaN or infinity)")
            acc = replace(
                self,
                gauss=merged,
                n_calls=self.n_calls + 1,
                replanned=False,
                nonfinite_rows=self.nonfinite_rows + batch.report.nonfinite_rows,
            )
            if self.plan is None or merged.count >= 2 * self.plan_gauss.n_samples:
                acc = acc._replan(n_hidden)
            if acc.plan is not None:
                red = reduce_chunks(source, SUBSPACE, acc.plan, runner, options=ChunkOptions(nonfinite="skip"))
                acc = replace(acc, sub=acc.sub + red.state)
        return acc

    def _replan(self, n_hidden):
        """A new plan from the merged pass-1 sums, or no plan and the reason."""
        first = validate_first(self.gauss, _gauss_plan(self.gauss.sums["x"].shape[0], n_hidden), ChunkReport(), [], "skip")
        try:
            if first.errors:
                raise DataError(first.errors[0])
            width = checked_width(first.gauss, n_hidden)
            if width.n_hidden == 0:
                raise RecoveryError(
                    f"no eigenvalue of T_2 stands above its measured noise (threshold {width.threshold:.3g}): "
                    "the data seen so far look affine"
                )
        except (DataError, RecoveryError) as exc:
            return replace(self, plan=None, plan_gauss=None, sub=0, width=None, why=exc)
        plan = SubspacePlan.build(first.gauss, subspace_basis(first.gauss.T2, width.n_hidden))
        return replace(
            self, plan=plan, plan_gauss=first.gauss, sub=0, width=width, why=None,
            plan_calls=self.plan_calls + (self.n_calls,), replanned=True,
        )

    def info(self):
        """What ``diagnostics["partial_fit"]`` reports: calls, rows, plans.

        Returns
        -------
        dict
            ``n_calls``, ``rows_seen``, ``n_plans``, ``plan_calls``,
            ``replanned``, ``plan_rows``, ``pass2_rows``, ``plan_key``.
        """
        planned = self.plan is not None
        return {
            "n_calls": self.n_calls,
            "rows_seen": 0 if self.gauss == 0 else self.gauss.count,
            "n_plans": len(self.plan_calls),
            "plan_calls": list(self.plan_calls),
            "replanned": self.replanned,
            "plan_rows": self.plan_gauss.n_samples if planned else None,
            "pass2_rows": self.sub.count if planned and self.sub != 0 else 0,
            "plan_key": self.plan.key if planned else None,
        }

    def affine(self):
        """Least squares of ``y`` on ``[x, 1]`` from the merged pass-1 sums.

        Returns
        -------
        AffineFit
            ``coef``, ``intercept`` and ``n_rows``.
        """
        return affine_least_squares(self.gauss)

    def estimate(self, x, y, *, random_state=0, refine=RefineSettings(), policy=DataPolicy(), client=None, scheduler=None):
        """Recover the network from the merged states; refine on the batch ``x``, ``y``.

        Parameters
        ----------
        x : ndarray or dask.array.Array of shape (n_samples, n_features)
            The latest batch's inputs (the refinement rows).
        y : ndarray or dask.array.Array of shape (n_samples,)
            Its labels.
        random_state : int
            Seeds the decomposition's random slices.
        refine : RefineSettings
            The refinement.
        policy, client, scheduler
            As for :meth:`update`.

        Returns
        -------
        Estimate

        Raises
        ------
        DataError, RecoveryError
            The data seen support no recovery (``why``), or the order-2
            moment in the subspace is singular.
        """
        if self.plan is None:
            raise self.why
        gauss = refreshed_affine_moments(self.plan_gauss, self.gauss)
        sub = finalize_subspace(self.sub, self.plan, self.plan_gauss)
        source = open_input(x, y, policy).source
        with open_runner(source, client, scheduler) as runner, threadpool_limits(limits=1, user_api="blas"):
            moment = recover_stage(gauss, sub, np.random.default_rng(random_state))
            refinement = refinement_stage(source, runner, gauss, moment.params, refine, search=not self.width.requested)
        moment_model = ReluNetwork.from_params(moment.params, gauss)
        width = self.width
        if not width.requested:
            width = replace(width, n_hidden=refinement.params.n_hidden, residual=refinement.looks)
        diagnostics = FitDiagnostics(
            warnings=width_warnings(width, refinement.params.n_hidden)
            + envelope_warnings(gauss, width, moment.estimate, moment_model),
            n_samples=self.gauss.count + self.nonfinite_rows,
            gauss=gauss,
            nonfinite_rows=self.nonfinite_rows,
            duplicate_chunks=[],
            width=width,
            moments={"data_passes": 1, "pilot_chunks": 0},
            recovery=moment.estimate.diagnostics,
            refinement=refinement,
            moment_model=moment_model,
            n_units=int(refinement.params.a.shape[0]),
        ).to_dict()
        # the refinement sets the estimate on the latest batch: its standard errors are that batch's
        model = ReluNetwork.from_params(refinement.params, gauss, diagnostics=diagnostics, stderr=refinement.stderr)
        return Estimate(model, diagnostics)
