"""The ``stream-relu`` command line: each command calls one public function.

Logs and progress go to stderr; only requested output (tables, ``--json``)
goes to stdout.  Errors of the package print one line on stderr and exit
with the status listed in :data:`stream_relu.errors.EXIT_CODES` (no
traceback unless ``--debug``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from . import __version__, to_jsonable
from .errors import EXIT_CODES, DataError, InputError, StoreNotFoundError, StreamReluError

log = logging.getLogger("stream_relu")

EXAMPLES = {
    "simulate": "example: stream-relu simulate data.zarr --features 20 --hidden 6 --samples 1000000 --seed 0",
    "fit": "example: stream-relu fit data.zarr --out model.json --hidden 6",
    "evaluate": "example: stream-relu evaluate model.json --truth data.zarr",
    "check": "example: stream-relu check data.zarr --hidden 6",
    "append": "example: stream-relu append data.zarr --from new-rows.zarr",
    "predict": "example: stream-relu predict model.json data.zarr --out pred.zarr",
    "report": "example: stream-relu report model.json --truth data.zarr --out report.png",
    "demo": "example: stream-relu demo --samples 1000000",
}


def _storage_options(text):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--storage-options must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise InputError("--storage-options must be a JSON object")
    return value


def _positive_int(text, least=1, what="a positive integer"):
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _nonnegative_int(text):
    return _positive_int(text, 0, "an integer >= 0")


def _table(rows):
    width = max(len(k) for k, _ in rows)
    lines = []
    for key, value in rows:
        if isinstance(value, float):
            value = f"{value:.3e}"
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)


def cmd_simulate(args):
    from . import simulate_store

    truth = None
    if args.truth:
        from . import load_truth

        truth = load_truth(args.truth)
    elif args.features is None or args.hidden is None:
        raise InputError("simulate needs --features and --hidden (or --truth TRUTH.json)")
    if truth is None and args.hidden > args.features:
        log.warning("--hidden %d > --features %d: fit supports m <= d only", args.hidden, args.features)
    truth = simulate_store(
        args.out,
        n_features=args.features,
        n_hidden=args.hidden,
        n_samples=args.samples,
        noise=args.noise,
        seed=args.seed,
        chunk_rows=args.chunk_rows,
        truth=truth,
        dtype=args.dtype,
        overwrite=args.overwrite,
        storage_options=_storage_options(args.storage_options),
    )
    log.info("wrote %d rows x %d features to %s", args.samples, truth.n_features, args.out)
    return 0


def _cluster(args):
    """The local cluster's size from the sizing flags (dask config ``stream-relu.local-cluster.*`` otherwise)."""
    from . import LocalClusterSettings

    return LocalClusterSettings.from_config(
        n_workers=args.n_workers, threads_per_worker=args.threads_per_worker, memory_limit=args.memory_limit
    )


def _reading(args):
    """The options ``fit`` and ``check`` share: array names, where to run, bad rows, progress."""
    return {
        "x_name": args.x,
        "y_name": args.y,
        "scheduler": args.scheduler,
        "storage_options": _storage_options(args.storage_options),
        "nonfinite": args.nonfinite,
        "missing_chunks": args.missing_chunks,
        "progress": not args.quiet,
        "local_cluster": _cluster(args),
    }


def _refuse_existing(path, overwrite):
    """The overwrite rule of every command that writes: an existing output needs ``--overwrite``."""
    if not overwrite and Path(path).exists():
        raise InputError(f"{path} already exists; pass --overwrite to replace it")


@contextlib.contextmanager
def _output_lock(out):
    """Refuse a second fit writing the same model file (and its default state folder) at the same time."""
    lock = Path(f"{out}.lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid = int(lock.read_text().strip() or 0) if lock.exists() else 0
            if pid and _alive(pid):
                raise InputError(
                    f"another stream-relu fit (pid {pid}) is writing {out}; wait for it to finish, "
                    f"or remove {lock} if no such process runs"
                ) from None
            lock.unlink(missing_ok=True)  # left by a fit that died
    else:
        raise InputError(f"cannot take the lock {lock}")
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True


def _state_for(args):
    """The state folder of a fit: ``--state``, none with ``--no-state``, else ``OUT.state`` (removed after success)."""
    if args.no_state:
        return None
    return args.state or f"{args.out}.state"


def _fit(args, store, state):
    from . import fit

    return fit(
        store,
        n_hidden=args.hidden,
        refine_model=not args.no_refine,
        refine_rows=args.refine_rows,
        refine_rows_max=args.refine_rows_max,
        refine_passes=args.refine_passes,
        refine_target=args.refine_target,
        two_pass=args.two_pass,
        random_state=args.seed,
        state=state,
        **_reading(args),
    )


def _fit_summary(result):
    diag = result.diagnostics
    stages = diag["stages"]
    rows = [
        ("units", diag["n_units_returned"]),
        ("width chosen", f"{diag['width']['chosen']} ({'requested' if diag['width']['requested'] else 'estimated'})"),
        ("moment-stage rel MSE (train)", stages["moment"]["rel_mse_train"]),
    ]
    for stage in stages["refined"]:
        rows.append((f"refined rel MSE (train, {stage['rows']} rows)", stage["rel_mse_end"]))
    full = stages.get("full_data")
    if full:
        rows.append((f"full-data rel MSE (all {full['rows']} rows, {full['passes']} passes)", full["rel_mse"][-1]))
        rows.append(("final gradient norm (per row)", full["grad_norm"]))
    rows.append(("time (s)", f"{result.timings['total_s']:.1f}"))
    return rows


def cmd_check(args):
    from . import check

    report = check(args.store, n_hidden=args.hidden, **_reading(args))
    if args.json:
        print(json.dumps({"ok": report.ok, "errors": report.errors, "warnings": report.warnings,
                          "notes": report.notes, "stats": report.stats}, allow_nan=False))
    else:
        for kind, items in (("ERROR", report.errors), ("WARNING", report.warnings), ("NOTE", report.notes)):
            for text in items:
                print(f"{kind}: {text}")
        stats = report.stats
        for k, c in enumerate(stats.get("width_candidates", []), 1):
            z = ", ".join(f"order {o}: {v:.3g}" for o, v in c["z"].items())
            print(
                f"width candidate {k}: T_2 eigenvalue {c['value']:.3g} ({z} standard errors), threshold "
                f"{c['threshold']:.3g}, noise 99th percentile {c['noise_99']:.3g}: "
                f"{'taken' if c['taken'] else 'left out'} ({c['reason']})"
            )
        print(
            f"{stats['n_samples']} rows x {stats['n_features']} features in {stats['n_chunks']} chunks; "
            + (f"suggested width {stats['suggested_width']}"
               + (" (pass 1's evidence; fit's residual search may add units)" if "width_rule" in stats else "")
               + "; " if "suggested_width" in stats else "")
            + ("no errors" if report.ok else f"{len(report.errors)} error(s)")
        )
    return 0 if report.ok else EXIT_CODES[DataError]


def cmd_fit(args):
    _refuse_existing(args.out, args.overwrite)
    state = _state_for(args)
    with _output_lock(args.out):
        args.state_in_use = state
        result = _fit(args, args.store, state)
        result.model.save(args.out)
        if state is not None and args.state is None:
            shutil.rmtree(state, ignore_errors=True)  # the default state folder has served
    if args.json:
        diag = result.diagnostics
        summary = {
            "model": args.out,
            "n_units": diag["n_units_returned"],
            "width": {k: diag["width"][k] for k in ("chosen", "requested", "n_above_threshold", "threshold")},
            "stages": diag["stages"],
            "warnings": diag["warnings"],
            "timings_s": result.timings,
            "run": result.run,
        }
        print(json.dumps(to_jsonable(summary), allow_nan=False))
    elif not args.quiet:
        print(_table(_fit_summary(result) + [("model", args.out)]), file=sys.stderr)
    return 0


def _eval_rows(metrics):
    return [(k, v) for k, v in metrics.items()]


def cmd_evaluate(args):
    from . import evaluate, load_model, load_truth, stderr_z, ReluNetwork

    model = load_model(args.model)
    if args.stage == "moment":
        est = model.diagnostics.get("moment_estimate")
        if not est:
            raise InputError(f"{args.model} has no moment_estimate in its diagnostics")
        model = ReluNetwork(**{k: est[k] for k in ("a", "W", "b", "u", "c")})
    truth = load_truth(args.truth)
    metrics = evaluate(model, truth, n_test=args.test_samples)
    z = stderr_z(model, truth.network)
    if args.json:
        print(json.dumps(to_jsonable({**metrics, **({"stderr_z": z} if z else {})}), allow_nan=False))
    else:
        print(_table(_eval_rows(metrics)))
        if z is not None:
            print(_z_lines(model, z))
        elif args.stage == "final":
            print(f"no standard errors in {args.model}: {(model.stderr or {}).get('reason', 'a version 1 model file')}")
    return 0


def _z_lines(model, z):
    """Per unit: estimate, standard error and z-score of a and b, the largest |z| of w; then u and c."""
    import numpy as np

    se = model.stderr
    lines = ["standard errors (model's unit order and orientation; z = (estimate - truth) / se):"]
    for k, j in enumerate(z["cols"]):
        lines.append(
            f"  unit {j}: a {model.a[j]:.6g} +- {se['a'][j]:.2g} (z {z['a'][k]:+.2f}), "
            f"b {model.b[j]:.6g} +- {se['b'][j]:.2g} (z {z['b'][k]:+.2f}), w: max |z| {np.max(np.abs(z['W'][:, k])):.2f}"
        )
    if "u" in z:
        lines.append(f"  u: max |z| {np.max(np.abs(z['u'])):.2f}; c {model.c:.6g} +- {se['c']:.2g} (z {z['c'][0]:+.2f})")
    else:
        lines.append("  u, c: not compared (not every unit is matched)")
    return "\n".join(lines)


def cmd_append(args):
    from . import append_rows, open_store

    options = _storage_options(args.storage_options)
    remote = "://" in str(args.source)  # a local source takes no storage options
    src = open_store(args.source, x=args.x, y=args.y, storage_options=options if remote else None)
    total = 0
    for i in range(src.n_chunks):  # chunk by chunk: bounded memory
        x, y = src.read_chunk(i)
        total = append_rows(args.store, x, y, x=args.x, y=args.y, storage_options=options)
    log.info("appended %d rows from %s; %s now has %d committed rows", src.n_samples, args.source, args.store, total)
    return 0


def cmd_report(args):
    from . import load_model, load_truth, render_report

    _refuse_existing(args.out, args.overwrite)
    truth = load_truth(args.truth) if args.truth else None
    render_report(load_model(args.model), args.out, truth=truth)
    log.info("wrote %s", args.out)
    return 0


def cmd_predict(args):
    from . import load_model, predict_store

    predict_store(
        load_model(args.model),
        args.store,
        args.out,
        x_name=args.x,
        overwrite=args.overwrite,
        storage_options=_storage_options(args.storage_options),
        scheduler=args.scheduler,
        local_cluster=_cluster(args),
    )
    log.info("wrote predictions to %s (array 'y_pred')", args.out)
    return 0


def cmd_demo(args):
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        return _demo(args, Path(args.workdir))
    with tempfile.TemporaryDirectory(prefix="stream-relu-demo-") as tmp:  # removed afterwards
        return _demo(args, Path(tmp))


def _demo(args, workdir):
    from . import evaluate, fit, simulate_store

    store = str(workdir / "demo.zarr")
    log.info("simulating %d samples (d=%d, m=%d) into %s", args.samples, args.features, args.hidden, store)
    truth = simulate_store(
        store, n_features=args.features, n_hidden=args.hidden, n_samples=args.samples, seed=args.seed, overwrite=True
    )
    log.info("fitting on a local cluster")
    result = fit(store, n_hidden=args.hidden, progress=not args.quiet, local_cluster=_cluster(args))
    moment = evaluate(result.moment_model, truth)
    final = evaluate(result.model, truth)
    width = max(len(k) for k in moment)
    print(f"stream_relu demo: d={args.features}, m={args.hidden}, n={args.samples}")
    print(f"{'metric':<{width}}  {'moment stage':>14}  {'refined':>14}")
    for key in moment:  # the rows both stages have (the refined model's z-scores: `stream-relu evaluate`)
        fmt = (lambda v: f"{v:>14.3e}") if isinstance(final[key], float) else (lambda v: f"{v:>14}")
        print(f"{key:<{width}}  {fmt(moment[key])}  {fmt(final[key])}")
    where = f"; model written to {workdir / 'model.json'}" if args.workdir else ""
    if args.workdir:
        result.model.save(workdir / "model.json")
    print(f"fit time {result.timings['total_s']:.1f} s{where}")
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with every flag's default (when it has one worth saying)."""

    def _get_help_string(self, action):
        text = action.help or ""
        unsaid = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not unsaid and "%(default)" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _add_cluster_options(p):
    p.add_argument(
        "--scheduler",
        help="where chunks are processed: a dask scheduler address (tcp://host:8786), 'local' (a local cluster) "
        "or 'synchronous' (this process); default: a local cluster",
    )
    p.add_argument("--n-workers", type=_positive_int, help="local cluster: worker processes (default: one per core)")
    p.add_argument("--threads-per-worker", type=_positive_int, help="local cluster: threads per worker (default 1)")
    p.add_argument("--memory-limit", help="local cluster: memory per worker, e.g. 4GiB, or 'auto' (default) or 0 (none)")


def _add_store_options(p):
    p.add_argument("--x", default="x", help="name of the inputs array")
    p.add_argument("--y", default="y", help="name of the labels array")
    p.add_argument("--storage-options", help="fsspec options as a JSON object, e.g. credentials or an S3 endpoint")
    p.add_argument(
        "--nonfinite",
        choices=("error", "skip"),
        default="error",
        help="rows with NaN or infinity: fail naming the chunks, or drop them",
    )
    p.add_argument(
        "--missing-chunks",
        choices=("error", "fill"),
        default="error",
        help="a chunk absent from storage: fail naming it, or read the fill value",
    )


def build_parser():
    parser = argparse.ArgumentParser(
        prog="stream-relu",
        description="Learn depth-2 ReLU networks with biases from zarr sample stores by the method of moments.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stream_relu {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q", "--quiet", action="store_true", help="no progress or information: only warnings about the result and errors"
    )
    common.add_argument("-v", "--verbose", action="store_true", help="stream_relu's own detail (debug level) on stderr")
    common.add_argument(
        "--debug", action="store_true", help="tracebacks on errors, and the debug logs of dask and other libraries"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, help_text):
        return sub.add_parser(
            name, parents=[common], help=help_text, description=help_text, epilog=EXAMPLES[name],
            formatter_class=_HelpFormatter,
        )

    p = add("simulate", "write a simulated sample store from a drawn or planted network")
    p.add_argument("out", help="path or URL of the new zarr store")
    p.add_argument("--features", type=_positive_int, help="n_features d")
    p.add_argument("--hidden", type=_positive_int, help="n_hidden m")
    p.add_argument("--samples", type=_positive_int, required=True, help="n_samples (1e6 notation accepted)")
    p.add_argument("--noise", type=float, default=0.0, help="label noise std as a fraction of std(f(x))")
    p.add_argument("--seed", type=int, default=0, help="seed of the network and the samples")
    p.add_argument("--chunk-rows", type=_positive_int, default=65536, help="rows per chunk")
    p.add_argument("--truth", help="plant the network of this truth JSON file instead of drawing one")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="dtype of x and y in the store")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--storage-options", help="fsspec options as a JSON object")
    p.set_defaults(func=cmd_simulate)

    p = add("fit", "fit a network to a store and write the model file")
    p.add_argument("store", help="path or URL of the zarr store")
    p.add_argument("--out", required=True, help="model file to write (JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.add_argument("--hidden", type=_positive_int, help="number of units (estimated when omitted)")
    _add_cluster_options(p)
    p.add_argument("--no-refine", action="store_true", help="return the pure moment estimate")
    p.add_argument("--refine-rows", type=_positive_int, default=250_000, help="refinement subsample rows")
    p.add_argument(
        "--refine-rows-max",
        type=_positive_int,
        default=1_000_000,
        help="rows of the second refinement, run when the labels look noisy",
    )
    p.add_argument(
        "--refine-passes",
        type=_nonnegative_int,
        default=3,
        metavar="N",
        help="at most N passes of Newton steps over every row after the in-memory refinement, when the labels are "
        "noisy and the store holds more rows (0: none)",
    )
    p.add_argument(
        "--refine-target",
        type=float,
        default=None,
        metavar="REL_MSE",
        help="stop refining once the relative training MSE is at most this (default: to convergence)",
    )
    p.add_argument(
        "--two-pass",
        action="store_true",
        help="read every row twice (pass 1, then the subspace pass) instead of a pilot and one pass "
        "(the default for stores of at least 2^23 rows)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the decomposition's random slices")
    p.add_argument("--json", action="store_true", help="print a JSON summary of the fit on stdout")
    p.add_argument(
        "--state",
        help="folder (path or URL) where progress persists and is kept: a rerun resumes, and picks up appended "
        "rows; default: OUT.state next to the model file, removed after success (only the driver writes it)",
    )
    p.add_argument("--no-state", action="store_true", help="keep no progress: an interrupted fit starts over")
    _add_store_options(p)
    p.set_defaults(func=cmd_fit)

    p = add("check", "run every validation of fit over a store, without fitting")
    p.add_argument("store", help="path or URL of the zarr store")
    p.add_argument("--hidden", type=_positive_int, help="the width you intend to fit")
    _add_cluster_options(p)
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    _add_store_options(p)
    p.set_defaults(func=cmd_check)

    p = add("evaluate", "compare a model with the truth of a simulated store or a truth file")
    p.add_argument("model", help="model file")
    p.add_argument("--truth", required=True, help="store written by simulate, or a truth JSON file")
    p.add_argument("--stage", choices=("final", "moment"), default="final", help="which estimate to evaluate")
    p.add_argument("--test-samples", type=_positive_int, default=200_000, help="fresh test draws")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = add("append", "append the rows of another store, committing them only once written")
    p.add_argument("store", help="store to append to")
    p.add_argument("--from", dest="source", required=True, help="store whose rows are appended")
    p.add_argument("--x", default="x", help="name of the inputs array")
    p.add_argument("--y", default="y", help="name of the labels array")
    p.add_argument("--storage-options", help="fsspec options of both stores as a JSON object")
    p.set_defaults(func=cmd_append)

    p = add("report", "draw the fit's evidence: T_2 spectrum, per-unit order strengths, refinement, truth")
    p.add_argument("model", help="model file")
    p.add_argument("--truth", help="store written by simulate, or a truth JSON file (adds recovered-vs-true panels)")
    p.add_argument("--out", required=True, help="image to write (.png, .svg or .pdf)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing image")
    p.set_defaults(func=cmd_report)

    p = add("predict", "score a store out of core")
    p.add_argument("model", help="model file")
    p.add_argument("store", help="path or URL of the zarr store holding x")
    p.add_argument("--out", required=True, help="zarr store to write (array y_pred)")
    p.add_argument("--x", default="x", help="name of the inputs array")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output store")
    p.add_argument("--storage-options", help="fsspec options as a JSON object (for both stores)")
    _add_cluster_options(p)
    p.set_defaults(func=cmd_predict)

    p = add("demo", "simulate a store, fit it on a local cluster, evaluate, print the table")
    p.add_argument("--features", type=_positive_int, default=20, help="n_features d of the simulated network")
    p.add_argument("--hidden", type=_positive_int, default=6, help="n_hidden m of the simulated network")
    p.add_argument("--samples", type=_positive_int, default=1_000_000, help="rows to simulate (1e6 notation accepted)")
    p.add_argument("--seed", type=int, default=0, help="seed of the network and the samples")
    p.add_argument(
        "--workdir", help="keep the store and the model in this folder (default: a temporary folder, removed after)"
    )
    p.add_argument("--n-workers", type=_positive_int, help="local cluster: worker processes (default: one per core)")
    p.add_argument("--threads-per-worker", type=_positive_int, help="local cluster: threads per worker (default 1)")
    p.add_argument("--memory-limit", help="local cluster: memory per worker, e.g. 4GiB, or 'auto' (default) or 0")
    p.set_defaults(func=cmd_demo)
    return parser


_QUIET_LIBRARIES = ("distributed", "tornado", "asyncio", "bokeh", "fsspec", "s3fs", "aiobotocore", "botocore", "urllib3")
# API keywords named in error messages, and the flag a CLI user types instead
_CLI_WORDING = {"pass overwrite=True": "pass --overwrite"}


def _configure_logging(args):
    """stream_relu's own logs at the level of -q / -v; other libraries at WARNING unless --debug."""
    level = logging.WARNING if args.quiet else logging.DEBUG if (args.verbose or args.debug) else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    logging.getLogger("stream_relu").setLevel(level)
    import distributed  # noqa: F401  (it configures its loggers on import; set them after)

    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if args.debug else logging.WARNING)
    if not args.debug:
        warnings.filterwarnings("ignore", message="Port .* is already in use")


def _interrupted(args, argv):
    """The one line printed on Ctrl-C: what was kept, and the command that resumes."""
    state = getattr(args, "state_in_use", None)
    if state is None or not Path(state).exists():
        return f"stream-relu {args.command}: interrupted; nothing was kept"
    n_chunks = len(list(Path(state).glob("*/chunk-*.npz"))) + len(list(Path(state).glob("*/prefix.npz")))
    command = shlex.join(["stream-relu", *argv])
    return (
        f"stream-relu {args.command}: interrupted; the work done so far ({n_chunks} saved state file(s)) is kept "
        f"in {state}; resume with: {command}"
    )


def _cli_wording(text):
    for api_words, cli_words in _CLI_WORDING.items():
        text = text.replace(api_words, cli_words)
    return text


def main(argv=None):
    """Entry point of ``stream-relu``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    try:
        return args.func(args)
    except StreamReluError as exc:
        if args.debug:
            raise
        print(f"stream-relu {args.command}: error: {_cli_wording(str(exc))}", file=sys.stderr)
        return next(code for cls, code in EXIT_CODES.items() if isinstance(exc, cls))
    except OSError as exc:  # a missing model or truth file, a folder that cannot be written, ...
        if args.debug:
            raise
        print(f"stream-relu {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_CODES[StoreNotFoundError] if isinstance(exc, FileNotFoundError) else 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(_interrupted(args, argv), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
