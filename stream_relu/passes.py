"""The moment passes of a fit: pass 1 with every check its sums allow, then the subspace pass.

A :class:`PassContext` carries what every pass needs (source, runner,
state folder, progress switch, non-finite policy); :func:`moment_passes`
returns :class:`MomentPasses`.  Two plans exist:

two passes
    pass 1 (``gauss`` sums) over every row, then the subspace pass planned
    from its ``T_2``.
one pass after a pilot
    pass 1 over a pilot of leading chunks plans the subspace; one ``joint``
    pass over every chunk sums both passes' moments; a subspace pass
    planned from the full rows follows only when the full ``T_2`` disagrees
    with the pilot (another width, or a span more than ``PILOT_MAX_SIN``
    away), so the result never rests on a poor pilot.

Imports the engine, the moments, the recovery's width choice and the measured width (:mod:`stream_relu.width`).
"""

from __future__ import annotations

import re

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import settings
from .engine import ChunkOptions, DaskArraySource, Progress, SubsetSource, reduce_chunks
from .errors import DataError, InputError, RecoveryError
from .moments import GAUSS, JOINT, SUBSPACE, GaussPlan, SubspacePlan, finalize_gauss, finalize_subspace, split_joint
from .recovery import choose_width, subspace_basis
from .width import GROUPS, measured_width

__all__ = ["PassContext", "FirstPass", "MomentPasses", "first_pass", "first_plan", "validate_first", "width_of", "checked_width", "moment_passes"]

log = logging.getLogger("stream_relu")

MOMENT_KINDS = ("gauss", "subspace", "joint")  # pass folders of the moment passes (pruned here)


@dataclass(frozen=True)
class PassContext:
    """What every pass of one fit needs.

    Attributes
    ----------
    source : chunk source (see :mod:`stream_relu.engine.sources`)
    runner : runner (see :mod:`stream_relu.engine.runners`)
    folder : StateFolder, optional
        Where the passes' progress persists (``fit(state=...)``).
    progress : bool
        Report progress on stderr.
    nonfinite : {"error", "skip"}
    """

    source: object
    runner: object
    folder: object = None
    progress: bool = True
    nonfinite: str = "error"

    def checkpoint(self, kind, key):
        """The pass's checkpoint in the state folder (None without one)."""
        return None if self.folder is None else self.folder.pass_checkpoint(kind, key)

    def reduce(self, kernel, plan, label, options, checkpoint=None):
        """``reduce_chunks`` over the context's source with a progress line named ``label``."""
        prog = Progress(label, self.source.n_chunks, self.source.n_samples, enabled=self.progress)
        return reduce_chunks(self.source, kernel, plan, self.runner, progress=prog, options=options, checkpoint=checkpoint)

    def on(self, source):
        """The same context over another source (a pilot subset), without the state folder."""
        return replace(self, source=source, folder=None)


@dataclass
class FirstPass:
    """Pass 1 finalized, with what was found on the way (errors stop a fit; ``check`` lists them)."""

    gauss: object
    report: object
    errors: list
    warnings: list


@dataclass(frozen=True)
class MomentPasses:
    """What the passes of a fit return.

    Attributes
    ----------
    first : FirstPass
    width : WidthChoice
    sub : SubspaceMoments
    run : dict
        How the run went: ``n_chunks``, ``data_passes``, ``pilot_chunks``,
        chunks reused from the state folder per pass, ``pilot_span_sine``.
    timings : dict
        Wall seconds of ``pilot_s``, ``pass1_s``, ``pass2_s`` (those run).
    """

    first: FirstPass
    width: object
    sub: object
    run: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def state_folder(url, store, policy):
    """The state folder of a fit, bound to the store's identity (all but its row count) and settings."""
    from .checkpoint import StateFolder

    if store is None:
        raise InputError("state= (--state) needs a zarr store as input, not arrays")
    identity = {k: v for k, v in store.identity().items() if k not in ("x_shape", "y_shape")}
    identity["n_features"] = store.n_features
    identity["settings"] = {"nonfinite": policy.nonfinite, "missing_chunks": policy.missing_chunks}
    # a local state folder needs no options; a remote one shares the store's credentials
    options = policy.storage_options if "://" in str(url) and not str(url).startswith("file://") else None
    return StateFolder(url, identity, storage_options=options)


def gauss_plan(source):
    """The first pass's shift: the means of the first readable chunk's first rows (zero if none reads)."""
    for i in range(min(source.n_chunks, 4)):
        try:
            x, y = source.read(i)
        except DataError:
            continue
        return GaussPlan.from_sample(np.asarray(x[:4096]), np.asarray(y[:4096]))
    return GaussPlan.zero(source.n_features)


def pilot_indices(source):
    """The pilot chunks of a one-pass fit, or None when two passes are the better plan.

    The pilot is the leading chunks holding at least ``PILOT_MIN_ROWS``
    rows; a one-pass fit is planned when they are at most half of the
    store.  Leading chunks, not a sample spread over the store: rows
    appended later leave the pilot, hence the plan, unchanged, so a state
    folder is reused after an append and the result stays bitwise that of
    a fresh fit.
    """
    if isinstance(source, DaskArraySource) or source.n_chunks < 2:
        return None
    k = max(1, -(-settings.PILOT_MIN_ROWS // max(source.chunk_len(0), 1)))
    if 2 * k > source.n_chunks:
        return None
    return tuple(range(k))


def _check_leading_pass(folder, kind, key):
    """Refuse a state folder whose leading pass was keyed by other first chunks (a changed store)."""
    from .checkpoint import CheckpointMismatchError

    if folder is None:
        return
    others = [p for p in folder.passes() if p.startswith(f"{kind}-") and p != f"{kind}-{key}"]
    ungrouped = re.sub(r"-g\d+$", "", f"{kind}-{key}")
    if any(re.sub(r"-g\d+$", "", p) == ungrouped for p in others):
        was, now = ("measured the width", "is given --hidden") if f"{kind}-{key}" == ungrouped else ("was given --hidden", "measures the width")
        raise CheckpointMismatchError(
            f"the state in {folder.url} was written by a fit that {was}, and this one {now} (a measured width "
            "also sums pass 1 in row groups); use the same --hidden option as before or a new --state folder"
        )
    if others:
        raise CheckpointMismatchError(
            f"the first chunks of the store changed since the state was written (the {kind} pass in "
            f"{folder.url} was planned from other rows); use a new --state folder for a changed store"
        )


def _reduce_first(ctx, kernel, plan, *, label, collect_errors=False, checkpoint=None):
    """Reduce a pass that holds the first-pass sums; a Reduction and the errors found."""
    options = ChunkOptions(nonfinite=ctx.nonfinite, fingerprint=True, collect_errors=collect_errors)
    errors = []
    try:
        red = ctx.reduce(kernel, plan, label, options, checkpoint)
    except DataError as exc:
        if not collect_errors:
            raise
        errors.append(str(exc))
        options = ChunkOptions(nonfinite="skip", fingerprint=True, collect_errors=True)
        red = reduce_chunks(ctx.source, kernel, plan, ctx.runner, options=options)
    for i, text in sorted(red.report.errors.items()):
        errors.append(f"{ctx.source.describe(i)}: {text}")
    return red, errors


def _report_warnings(report, nonfinite):
    warnings = []
    if report.nonfinite and nonfinite == "skip":
        warnings.append(
            f"dropped {report.nonfinite_rows} rows holding NaN or infinity (in {len(report.nonfinite)} chunks)"
        )
    for group in report.duplicate_groups():
        warnings.append(
            f"chunks {group} have identical content (a duplicated ingest?): their rows count "
            f"{len(group)} times in the moments"
        )
    return warnings


def _gauss_checks(gauss):
    """Errors and warnings that the finalized first pass shows."""
    errors, warnings = [], []
    if gauss.var_y <= settings.CONSTANT_Y_RTOL * max(gauss.T0**2, np.finfo(float).tiny):
        errors.append(f"y is constant (every row is {gauss.T0:.6g}): there is nothing to learn")
    norm = gauss.normality
    if norm["max_z"] > settings.NORMALITY_Z:
        warnings.append(
            f"x does not look Gaussian: {norm['worst']} has skewness {norm['worst_skew']:.3g} and "
            f"excess kurtosis {norm['worst_excess_kurtosis']:.3g} ({norm['max_z']:.1f} standard errors "
            "from 0); the recovery guarantees assume Gaussian inputs"
        )
    return errors, warnings


def validate_first(state, gplan, report, errors, nonfinite, normality=None):
    """Finalize first-pass sums and run every check they allow; returns a :class:`FirstPass`.

    ``normality`` replaces the state's normality statistics (a one-pass fit
    keeps the pilot's: the joint pass does not sum them).
    """
    errors = list(errors)
    warnings = _report_warnings(report, nonfinite)
    gauss = None
    if state == 0 or state.count < 2:
        errors.append(f"fewer than 2 usable rows ({0 if state == 0 else state.count})")
    else:
        try:
            gauss = finalize_gauss(state, gplan)
        except ValueError as exc:
            errors.append(str(exc))
    if gauss is not None:
        if normality is not None:
            gauss = replace(gauss, normality=normality)
        more_errors, more_warnings = _gauss_checks(gauss)
        errors += more_errors
        warnings += more_warnings
    return FirstPass(gauss, report, errors, warnings)


def first_pass(ctx, *, collect_errors=False, checkpoint=None, gplan=None, label=None):
    """Run pass 1 over the context's source and every validation that its sums allow."""
    gplan = gauss_plan(ctx.source) if gplan is None else gplan
    red, errors = _reduce_first(
        ctx, GAUSS, gplan, label=label or "pass 1/2 (moments)", collect_errors=collect_errors, checkpoint=checkpoint
    )
    return validate_first(red.state, gplan, red.report, errors, ctx.nonfinite)


def width_of(gauss, n_hidden):
    """The requested width (:func:`~stream_relu.recovery.choose_width`), else the measured rule
    (:func:`~stream_relu.width.measured_width`) when pass 1 summed row groups, else the formula floor's."""
    if n_hidden is None and gauss.t2_groups is not None and np.count_nonzero(gauss.group_rows) >= 2:
        return measured_width(gauss)
    return choose_width(gauss, n_hidden)


def checked_width(gauss, n_hidden):
    """:func:`width_of` on ``gauss``, logged (a width of 0 is an answer: the data look affine)."""
    width = width_of(gauss, n_hidden)
    log.info(
        "T_2 spectrum: %s; noise floor %.3g; %d units%s",
        np.array2string(np.abs(width.spectrum[: min(gauss.n_features, width.n_hidden + 4)]), precision=3),
        width.noise_floor,
        width.n_hidden,
        " (requested)" if width.requested else " (estimated)",
    )
    return width


def first_plan(source, n_hidden):
    """The first pass's plan: the shift, with ``GROUPS`` row groups when the width is to be measured."""
    plan = gauss_plan(source)
    return plan if n_hidden is not None else plan.with_groups(GROUPS)


def _span_sine(gauss, basis, m):
    """Largest sine of the principal angles between ``span basis`` and the top-``m`` span of ``gauss.T2``."""
    top = subspace_basis(gauss.T2, m)
    return float(np.linalg.norm(top - basis @ (basis.T @ top), 2))


@dataclass(frozen=True)
class _Lead:
    """The leading pass's outcome: pass 1 over every row, and the subspace moments when it has them."""

    first: FirstPass
    width: object
    sub: object = None  # SubspaceMoments from a joint pass whose pilot plan holds
    label: str = "pass 2/2 (subspace moments)"
    keep: frozenset = frozenset()
    run: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def _raise_first(first):
    if first.errors:
        raise DataError(first.errors[0])
    return first


def _two_pass_lead(ctx, gplan, n_hidden):
    t0 = time.perf_counter()
    _check_leading_pass(ctx.folder, "gauss", gplan.key)
    first = _raise_first(first_pass(ctx, gplan=gplan, checkpoint=ctx.checkpoint("gauss", gplan.key)))
    run = {"pass1_reused_chunks": first.report.reused, "data_passes": 2}
    timings = {"pass1_s": time.perf_counter() - t0}
    width = checked_width(first.gauss, n_hidden)
    return _Lead(first, width, keep=frozenset({f"gauss-{gplan.key}"}), run=run, timings=timings)


def _pilot_plan(ctx, pilot, gplan, n_hidden):
    """Pass 1 over the pilot chunks, and the subspace plan it gives."""
    label = f"pilot ({len(pilot)} of {ctx.source.n_chunks} chunks)"
    pilot_ctx = replace(ctx.on(SubsetSource(ctx.source, pilot)), nonfinite="skip")
    pilot_first = _raise_first(first_pass(pilot_ctx, gplan=gplan, label=label))
    pwidth = width_of(pilot_first.gauss, n_hidden)
    # the full rows decide; a width of 1 plans the pass when the pilot sees none
    basis = subspace_basis(pilot_first.gauss.T2, max(pwidth.n_hidden, 1))
    plan = SubspacePlan.build(pilot_first.gauss, basis, gplan.groups)
    return pilot_first, plan


def _one_pass_lead(ctx, pilot, gplan, n_hidden):
    t0 = time.perf_counter()
    pilot_first, plan = _pilot_plan(ctx, pilot, gplan, n_hidden)
    timings = {"pilot_s": time.perf_counter() - t0}
    _check_leading_pass(ctx.folder, "joint", plan.key)
    t0 = time.perf_counter()
    red, errors = _reduce_first(ctx, JOINT, plan, label="moments (one pass)", checkpoint=ctx.checkpoint("joint", plan.key))
    parts = split_joint(red.state, plan) if red.state != 0 else None
    first = validate_first(
        parts.gauss if parts else 0, plan.gauss_plan, red.report, errors, ctx.nonfinite,
        normality=pilot_first.gauss.normality,
    )
    run = {"pass1_reused_chunks": red.report.reused, "data_passes": 1, "pilot_chunks": len(pilot)}
    _raise_first(first)
    timings["pass1_s"] = time.perf_counter() - t0
    width = checked_width(first.gauss, n_hidden)
    sub = finalize_subspace(parts.subspace, plan, first.gauss)
    sine = _span_sine(first.gauss, sub.basis, width.n_hidden) if width.n_hidden == plan.n_hidden else 1.0
    run["pilot_span_sine"] = sine
    holds = width.n_hidden == plan.n_hidden and sine <= settings.PILOT_MAX_SIN
    if not holds and width.n_hidden > 0:
        log.info(
            "the pilot's plan (width %d, span sine %.3g) does not match the full T_2 (width %d): "
            "a second pass in the full rows' subspace follows",
            plan.n_hidden,
            sine,
            width.n_hidden,
        )
    return _Lead(first, width, sub if holds else None, "pass 2 (re-planned)", frozenset({f"joint-{plan.key}"}), run, timings)


def _subspace_pass(ctx, lead):
    """The subspace pass planned from the full rows' ``T_2``: ``lead`` with its moments."""
    gauss = lead.first.gauss
    plan = SubspacePlan.build(gauss, subspace_basis(gauss.T2, lead.width.n_hidden))
    t0 = time.perf_counter()
    red = ctx.reduce(SUBSPACE, plan, lead.label, ChunkOptions(nonfinite="skip"), ctx.checkpoint("subspace", plan.key))
    return replace(
        lead,
        sub=finalize_subspace(red.state, plan, gauss),
        run={**lead.run, "data_passes": 2, "pass2_reused_chunks": red.report.reused},
        timings={**lead.timings, "pass2_s": time.perf_counter() - t0},
        keep=lead.keep | {f"subspace-{plan.key}"},
    )


def moment_passes(ctx, n_hidden, *, two_pass=False):
    """Pass 1 and pass 2, or a pilot and one joint pass (see the module docstring).

    Parameters
    ----------
    ctx : PassContext
    n_hidden : int or None
        The width asked for (None: measured, :func:`width_of`; pass 1 then
        sums ``GROUPS`` row groups, its totals being the groups' sums: the
        same as a requested width's up to rounding).
    two_pass : bool
        Never plan one pass after a pilot.

    Returns
    -------
    MomentPasses
    """
    gplan = first_plan(ctx.source, n_hidden)
    pilot = None if two_pass else pilot_indices(ctx.source)
    lead = _two_pass_lead(ctx, gplan, n_hidden) if pilot is None else _one_pass_lead(ctx, pilot, gplan, n_hidden)
    if lead.sub is None and lead.width.n_hidden > 0:  # two passes, or a pilot the full rows overruled
        lead = _subspace_pass(ctx, lead)
    if ctx.folder is not None:
        ctx.folder.prune(lead.keep, kinds=MOMENT_KINDS)
        log.info(
            "state %s: %s",
            ctx.folder.url,
            ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in lead.run.items() if k.endswith("reused_chunks")),
        )
    run = {"n_chunks": ctx.source.n_chunks, "data_passes": 2, "pilot_chunks": 0, **lead.run}
    if lead.width.n_hidden == 0 and pilot is None:
        run["data_passes"] = 1  # no unit: no subspace pass
    return MomentPasses(lead.first, lead.width, lead.sub, run, lead.timings)
