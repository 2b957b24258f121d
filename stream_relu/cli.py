"""The ``stream-relu`` command line: each command calls one public function.

Logs and progress go to stderr; only requested output (tables, ``--json``)
goes to stdout.  Errors of the package print one line on stderr and exit
with the status listed in :data:`stream_relu.errors.EXIT_CODES` (no
traceback unless ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from . import __version__, to_jsonable
from .errors import EXIT_CODES, DataError, InputError, StreamReluError

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


def _positive_int(text):
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
    }


def _fit(args, store):
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
        state=args.state,
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
        print(
            f"{stats['n_samples']} rows x {stats['n_features']} features in {stats['n_chunks']} chunks; "
            + (f"suggested width {stats['suggested_width']}; " if "suggested_width" in stats else "")
            + ("no errors" if report.ok else f"{len(report.errors)} error(s)")
        )
    return 0 if report.ok else EXIT_CODES[DataError]


def cmd_fit(args):
    result = _fit(args, args.store)
    result.model.save(args.out)
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
    from . import evaluate, load_model, load_truth, ReluNetwork

    model = load_model(args.model)
    if args.stage == "moment":
        est = model.diagnostics.get("moment_estimate")
        if not est:
            raise InputError(f"{args.model} has no moment_estimate in its diagnostics")
        model = ReluNetwork(**{k: est[k] for k in ("a", "W", "b", "u", "c")})
    metrics = evaluate(model, load_truth(args.truth), n_test=args.test_samples)
    if args.json:
        print(json.dumps(metrics, allow_nan=False))
    else:
        print(_table(_eval_rows(metrics)))
    return 0


def cmd_append(args):
    from . import append_rows, open_store

    src = open_store(args.source, x=args.x, y=args.y)
    total = 0
    for i in range(src.n_chunks):  # chunk by chunk: bounded memory
        x, y = src.read_chunk(i)
        total = append_rows(args.store, x, y, x=args.x, y=args.y, storage_options=_storage_options(args.storage_options))
    log.info("appended %d rows from %s; %s now has %d committed rows", src.n_samples, args.source, args.store, total)
    return 0


def cmd_report(args):
    from . import load_model, load_truth, render_report

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
    )
    log.info("wrote predictions to %s (array 'y_pred')", args.out)
    return 0


def cmd_demo(args):
    from . import evaluate, fit, simulate_store

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="stream-relu-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = str(workdir / "demo.zarr")
    log.info("simulating %d samples (d=%d, m=%d) into %s", args.samples, args.features, args.hidden, store)
    truth = simulate_store(
        store,
        n_features=args.features,
        n_hidden=args.hidden,
        n_samples=args.samples,
        seed=args.seed,
        overwrite=True,
    )
    log.info("fitting on a local cluster")
    result = fit(store, n_hidden=args.hidden, progress=not args.quiet)
    model_path = workdir / "model.json"
    result.model.save(model_path)
    moment = evaluate(result.moment_model, truth)
    final = evaluate(result.model, truth)
    width = max(len(k) for k in final)
    print(f"stream_relu demo: d={args.features}, m={args.hidden}, n={args.samples}, store {store}")
    print(f"{'metric':<{width}}  {'moment stage':>14}  {'refined':>14}")
    for key in final:
        fmt = (lambda v: f"{v:>14.3e}") if isinstance(final[key], float) else (lambda v: f"{v:>14}")
        print(f"{key:<{width}}  {fmt(moment[key])}  {fmt(final[key])}")
    print(f"fit time {result.timings['total_s']:.1f} s; model written to {model_path}")
    return 0


def _add_store_options(p):
    p.add_argument("--x", default="x", help="name of the inputs array (default x)")
    p.add_argument("--y", default="y", help="name of the labels array (default y)")
    p.add_argument("--storage-options", help="fsspec options as a JSON object")
    p.add_argument(
        "--nonfinite",
        choices=("error", "skip"),
        default="error",
        help="rows with NaN or infinity: fail naming the chunks (default) or drop them",
    )
    p.add_argument(
        "--missing-chunks",
        choices=("error", "fill"),
        default="error",
        help="a chunk absent from storage: fail naming it (default) or read the fill value",
    )


def build_parser():
    parser = argparse.ArgumentParser(
        prog="stream-relu",
        description="Learn depth-2 ReLU networks with biases from zarr sample stores by the method of moments.",
    )
    parser.add_argument("--version", action="version", version=f"stream_relu {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, help_text):
        return sub.add_parser(
            name, parents=[common], help=help_text, description=help_text, epilog=EXAMPLES[name]
        )

    p = add("simulate", "write a simulated sample store from a drawn or planted network")
    p.add_argument("out", help="path or URL of the new zarr store")
    p.add_argument("--features", type=_positive_int, help="n_features d")
    p.add_argument("--hidden", type=_positive_int, help="n_hidden m")
    p.add_argument("--samples", type=_positive_int, required=True, help="n_samples (1e6 notation accepted)")
    p.add_argument("--noise", type=float, default=0.0, help="label noise std as a fraction of std(f(x))")
    p.add_argument("--seed", type=int, default=0, help="seed of the network and the samples")
    p.add_argument("--chunk-rows", type=_positive_int, default=65536, help="rows per chunk (default 65536)")
    p.add_argument("--truth", help="plant the network of this truth JSON file instead of drawing one")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--storage-options", help="fsspec options as a JSON object")
    p.set_defaults(func=cmd_simulate)

    p = add("fit", "fit a network to a store and write the model file")
    p.add_argument("store", help="path or URL of the zarr store")
    p.add_argument("--out", required=True, help="model file to write (JSON)")
    p.add_argument("--hidden", type=_positive_int, help="number of units (estimated when omitted)")
    p.add_argument("--scheduler", help="dask scheduler address, 'local' (default) or 'synchronous'")
    p.add_argument("--no-refine", action="store_true", help="return the pure moment estimate")
    p.add_argument("--refine-rows", type=_positive_int, default=250_000, help="refinement subsample rows")
    p.add_argument(
        "--refine-rows-max",
        type=_positive_int,
        default=1_000_000,
        help="rows of the second refinement, run when the labels look noisy",
    )
    p.add_argument("--refine-passes", action="store_true", help="refine over whole streamed passes")
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
        help="folder (path or URL) where progress persists: a rerun resumes, and picks up appended rows",
    )
    _add_store_options(p)
    p.set_defaults(func=cmd_fit)

    p = add("check", "run every validation of fit over a store, without fitting")
    p.add_argument("store", help="path or URL of the zarr store")
    p.add_argument("--hidden", type=_positive_int, help="the width you intend to fit")
    p.add_argument("--scheduler", help="dask scheduler address, 'local' (default) or 'synchronous'")
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
    p.add_argument("--x", default="x", help="name of the inputs array (default x)")
    p.add_argument("--y", default="y", help="name of the labels array (default y)")
    p.add_argument("--storage-options", help="fsspec options of STORE as a JSON object")
    p.set_defaults(func=cmd_append)

    p = add("report", "draw the fit's evidence: T_2 spectrum, per-unit order strengths, refinement, truth")
    p.add_argument("model", help="model file")
    p.add_argument("--truth", help="store written by simulate, or a truth JSON file (adds recovered-vs-true panels)")
    p.add_argument("--out", required=True, help="image to write (.png, .svg or .pdf)")
    p.set_defaults(func=cmd_report)

    p = add("predict", "score a store out of core")
    p.add_argument("model", help="model file")
    p.add_argument("store", help="path or URL of the zarr store holding x")
    p.add_argument("--out", required=True, help="zarr store to write (array y_pred)")
    p.add_argument("--x", default="x", help="name of the inputs array (default x)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--storage-options", help="fsspec options as a JSON object")
    p.set_defaults(func=cmd_predict)

    p = add("demo", "simulate a store, fit it on a local cluster, evaluate, print the table")
    p.add_argument("--features", type=_positive_int, default=20)
    p.add_argument("--hidden", type=_positive_int, default=6)
    p.add_argument("--samples", type=_positive_int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="folder for the store and the model (a temporary one by default)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    """Entry point of ``stream-relu``; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    import distributed  # noqa: F401  (it configures its loggers on import; quiet them after)

    for noisy in ("distributed", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    try:
        return args.func(args)
    except StreamReluError as exc:
        if args.debug:
            raise
        print(f"stream-relu {args.command}: error: {exc}", file=sys.stderr)
        return next(code for cls, code in EXIT_CODES.items() if isinstance(exc, cls))


if __name__ == "__main__":
    sys.exit(main())
