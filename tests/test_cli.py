"""Argument handling of the ``stream-relu`` command line: help, version, usage errors and exit statuses.

Fast: no fit runs; every error is raised before any data is read.  Errors of
the package give one line on stderr and the status of
:data:`stream_relu.errors.EXIT_CODES`; usage errors exit through argparse
with status 2.
"""

import os
import subprocess
import sys

import pytest

import stream_relu as sr
from stream_relu.cli import main
from stream_relu.errors import EXIT_CODES, InputError, StoreNotFoundError

COMMANDS = ["simulate", "fit", "evaluate", "check", "append", "predict", "report", "demo"]
BIN = os.path.dirname(sys.executable)


def _exit_status(argv):
    """``main``'s status whether it returns it or exits through argparse."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _one_line(capsys):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    return lines[0]


def test_version(capsys):
    assert _exit_status(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"stream_relu {sr.__version__}"


def test_top_level_help_lists_every_command(capsys):
    assert _exit_status(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: stream-relu")
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command, capsys):
    assert _exit_status([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: stream-relu {command}")
    assert f"example: stream-relu {command}" in out  # the epilog
    assert "--quiet" in out and "--debug" in out  # the common options


@pytest.mark.parametrize(
    "argv,fragment",
    [
        ([], "the following arguments are required: command"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["fit", "s.zarr", "--out", "m.json", "--bogus"], "unrecognized arguments: --bogus"),
        (["fit", "s.zarr"], "the following arguments are required: --out"),
        (["simulate", "s.zarr", "--features", "3", "--hidden", "1"], "the following arguments are required: --samples"),
        (["evaluate", "m.json", "--stage", "middle", "--truth", "t.json"], "invalid choice: 'middle'"),
        (["fit", "s.zarr", "--out", "m.json", "--nonfinite", "ignore"], "invalid choice: 'ignore'"),
    ],
    ids=["no-command", "unknown-command", "unknown-option", "missing-out", "missing-samples", "bad-stage", "bad-nonfinite"],
)
def test_usage_errors_exit_2(argv, fragment, capsys):
    assert _exit_status(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: stream-relu") and fragment in err, err


@pytest.mark.parametrize("value", ["0", "-3", "two", "1.5"])
def test_hidden_must_be_a_positive_integer(value, tmp_path, capsys):
    code = _exit_status(["fit", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "m.json"), "--hidden", value])
    assert code == EXIT_CODES[InputError]
    assert f"argument --hidden: expected a positive integer, got '{value}'" in capsys.readouterr().err


def test_samples_accept_exponent_notation(tmp_path):
    store = tmp_path / "s.zarr"
    argv = ["simulate", str(store), "--features", "3", "--hidden", "1", "--samples", "1e3", "--chunk-rows", "500", "-q"]
    assert _exit_status(argv) == 0
    assert sr.open_store(str(store)).n_samples == 1000


def test_simulate_without_a_network_is_an_input_error(tmp_path, capsys):
    code = _exit_status(["simulate", str(tmp_path / "s.zarr"), "--samples", "100", "-q"])
    assert code == EXIT_CODES[InputError]
    assert _one_line(capsys) == "stream-relu simulate: error: simulate needs --features and --hidden (or --truth TRUTH.json)"


@pytest.mark.parametrize("options", ["[1, 2]", "{not json"])
def test_storage_options_must_be_a_json_object(options, tmp_path, capsys):
    argv = ["fit", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "m.json"), "--storage-options", options, "-q"]
    assert _exit_status(argv) == EXIT_CODES[InputError]
    line = _one_line(capsys)
    assert line.startswith("stream-relu fit: error: --storage-options must be a JSON object"), line


@pytest.mark.parametrize("command", ["fit", "check"])
def test_missing_store_is_one_line_and_its_exit_status(command, tmp_path, capsys):
    store = str(tmp_path / "nope.zarr")
    argv = [command, store, "-q", "--scheduler", "synchronous"] + (["--out", str(tmp_path / "m.json")] if command == "fit" else [])
    assert _exit_status(argv) == EXIT_CODES[StoreNotFoundError]
    line = _one_line(capsys)
    assert line.startswith(f"stream-relu {command}: error: ") and store in line, line
    assert not (tmp_path / "m.json").exists()


def test_append_from_a_missing_store(tmp_path, capsys):
    source = str(tmp_path / "nope.zarr")
    assert _exit_status(["append", str(tmp_path / "s.zarr"), "--from", source, "-q"]) == EXIT_CODES[StoreNotFoundError]
    line = _one_line(capsys)
    assert line.startswith("stream-relu append: error: ") and source in line, line


def test_entry_point_exit_status(tmp_path):
    # the installed console script: the status reaches the shell, the message is one line on stderr
    store = str(tmp_path / "nope.zarr")
    run = subprocess.run(
        [os.path.join(BIN, "stream-relu"), "check", store, "-q", "--scheduler", "synchronous"],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == EXIT_CODES[StoreNotFoundError], run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stream-relu check: error: ") and store in lines[0], run.stderr
    assert run.stdout == ""
