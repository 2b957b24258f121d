"""The first hour of a user, as a subprocess sees it: stderr shape, Ctrl-C, overwrite rule, logging levels, help.

Each case runs the installed ``stream-relu`` command and asserts what lands
on stderr: one line and no traceback for every error of the package, one
line on Ctrl-C with a resume command that really resumes (to a model file
bitwise identical to an uninterrupted fit), progress lines for the
refinement, nothing at all from a clean ``-q`` fit.
"""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import stream_relu as sr
from stream_relu.cli import build_parser
from stream_relu.errors import EXIT_CODES, DataError, InputError

BIN = os.path.dirname(sys.executable)
EXE = os.path.join(BIN, "stream-relu")


def _run(*args, cwd=None, env=None, timeout=300):
    full_env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), **(env or {}))
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


def _one_line_error(run, code):
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr and "Compute Failed" not in run.stderr, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error:" in lines[0], run.stderr
    return lines[0]


@pytest.fixture(scope="module")
def small(make_store):
    """A small read-only store: d = 5, m = 2, 40,000 rows in 4 chunks."""
    return make_store(5, 2, 40_000, 10_000, seed=3)


def test_evaluate_with_other_features_is_one_line(small, tmp_path, make_store):
    path, _ = small
    other, _ = make_store(4, 2, 20_000, 10_000, seed=4)
    assert _run("fit", path, "--out", str(tmp_path / "m.json"), "--hidden", "2", "--scheduler", "synchronous", "-q").returncode == 0
    line = _one_line_error(_run("evaluate", str(tmp_path / "m.json"), "--truth", other), EXIT_CODES[InputError])
    assert "the model has 5 features but the truth has 4" in line


@pytest.mark.slow
def test_corrupted_chunk_on_the_local_cluster_leaves_no_worker_traceback(tmp_path):
    store = str(tmp_path / "s.zarr")
    sr.simulate_store(store, n_features=4, n_hidden=2, n_samples=40_000, chunk_rows=10_000)
    chunk = Path(store, "x", "c", "2", "0")
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    run = _run("fit", store, "--out", str(tmp_path / "m.json"), "--hidden", "2", "--n-workers", "2", "-q")
    line = _one_line_error(run, EXIT_CODES[DataError])
    assert "checksum" in line.lower() and "rows [20000, 30000)" in line


def test_overwrite_rule_and_cli_wording(small, tmp_path):
    path, _ = small
    model = tmp_path / "m.json"
    model.write_text("{}")
    line = _one_line_error(_run("fit", path, "--out", str(model), "--hidden", "2", "-q"), EXIT_CODES[InputError])
    assert "already exists; pass --overwrite" in line
    assert _run("simulate", path, "--features", "3", "--hidden", "1", "--samples", "100", "-q").returncode == 2
    pred = tmp_path / "p.zarr"
    ok = _run("fit", path, "--out", str(model), "--hidden", "2", "--scheduler", "synchronous", "--overwrite", "-q")
    assert ok.returncode == 0 and ok.stderr == ""
    args = ("predict", str(model), path, "--out", str(pred), "--scheduler", "synchronous", "-q")
    assert _run(*args).returncode == 0
    line = _one_line_error(_run(*args), EXIT_CODES[InputError])
    assert "pass --overwrite" in line and "overwrite=True" not in line
    assert _run(*args, "--overwrite").returncode == 0


def test_quiet_fit_prints_nothing_and_keeps_result_warnings(small, tmp_path, make_store):
    path, _ = small
    clean = _run("fit", path, "--out", str(tmp_path / "a.json"), "--hidden", "2", "--scheduler", "synchronous", "-q")
    assert clean.returncode == 0 and clean.stdout == "" and clean.stderr == ""
    few, _ = make_store(5, 2, 8_000, 4_000, seed=3)  # 8,000 rows < 2000 * d * m = 20,000
    warned = _run("fit", few, "--out", str(tmp_path / "b.json"), "--hidden", "2", "--scheduler", "synchronous", "-q")
    lines = warned.stderr.splitlines()
    assert warned.returncode == 0 and lines and all(ln.startswith("WARNING stream_relu: ") for ln in lines), warned.stderr
    assert any("about 20000 are needed" in ln for ln in lines)


def test_verbose_shows_our_detail_and_refinement_progress_not_library_debug(small, tmp_path):
    path, _ = small
    run = _run("fit", path, "--out", str(tmp_path / "m.json"), "--hidden", "2", "--scheduler", "synchronous", "-v")
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert any(ln.startswith("INFO stream_relu: refinement (") for ln in lines), run.stderr
    assert any(ln.startswith("INFO stream_relu: recovered 2 units") for ln in lines)
    logged = [ln for ln in lines if ln.split(" ", 1)[0] in ("DEBUG", "INFO", "WARNING", "ERROR")]
    assert logged and all(ln.split(" ")[1].startswith("stream_relu") for ln in logged), run.stderr


@pytest.mark.slow
def test_local_cluster_is_quiet_when_port_8787_is_taken(small, tmp_path):
    path, _ = small
    with socket.socket() as busy:
        try:
            busy.bind(("127.0.0.1", 8787))
        except OSError:
            pass  # already taken by someone else: the case under test either way
        busy.listen()
        run = _run("check", path, "--n-workers", "1", "-q")
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_a_second_fit_on_the_same_output_is_refused(small, tmp_path):
    path, _ = small
    out = tmp_path / "m.json"
    Path(f"{out}.lock").write_text(str(os.getpid()))  # this process is alive: a fit in progress
    line = _one_line_error(_run("fit", path, "--out", str(out), "--hidden", "2", "-q"), EXIT_CODES[InputError])
    assert "another stream-relu fit" in line
    Path(f"{out}.lock").write_text("999999999")  # no such process: a lock left by a dead fit
    run = _run("fit", path, "--out", str(out), "--hidden", "2", "--scheduler", "synchronous", "-q")
    assert run.returncode == 0 and not Path(f"{out}.lock").exists() and not Path(f"{out}.state").exists()


def _session_gone(sid, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = subprocess.run(["ps", "-s", str(sid), "-o", "stat="], capture_output=True, text=True).stdout.split()
        if all(st.startswith("Z") for st in states):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_the_printed_command_resumes_bitwise(tmp_path, make_store):
    path, _ = make_store(8, 3, 200_000, 20_000, seed=8)
    out = tmp_path / "m.json"
    cmd = [EXE, "fit", path, "--out", str(out), "--hidden", "3", "--n-workers", "2"]
    # A terminal's job: its own process group, SIGINT at its default even when this test runs in a
    # background job (whose children inherit SIGINT ignored, as POSIX shells do for `cmd &`).
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    for line in proc.stderr:  # interrupt once the passes are kept and the refinement runs
        seen.append(line)
        if "refinement (" in line or "decomposing" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, "".join(seen) + rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    lines = [ln for ln in rest.splitlines() if ln.strip() and not ln.startswith("INFO ")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "resume with: " in lines[0], rest
    assert _session_gone(proc.pid)  # no process left (an exited worker may stay a zombie until init reaps it)
    assert Path(f"{out}.state").is_dir()
    resume = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert resume[0] == "stream-relu"
    again = _run(*resume[1:], "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["run"]["pass1_reused_chunks"] == 10  # every chunk of pass 1 was kept
    ref = tmp_path / "ref.json"
    assert _run("fit", path, "--out", str(ref), "--hidden", "3", "--scheduler", "synchronous",
                "--no-state", "-q").returncode == 0
    assert out.read_bytes() == ref.read_bytes()
    assert not Path(f"{out}.state").exists()  # the default state folder is removed after success


@pytest.mark.slow
def test_demo_cleans_up_after_itself(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = _run("demo", "--samples", "20000", "--features", "4", "--hidden", "2", "--n-workers", "1", "-q",
               env={"TMPDIR": str(tmp)})
    assert run.returncode == 0, run.stderr
    assert "rel_test_mse" in run.stdout
    # the store and model are gone; dask keeps its own (small, reused) dask-scratch-space there
    assert [p.name for p in tmp.iterdir() if not p.name.startswith("dask-scratch")] == []


def test_every_flag_has_help_and_shows_its_default():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if not action.option_strings or action.help == "==SUPPRESS==":
                continue
            assert action.help, f"{name} {action.option_strings} has no help text"
            shown = action.default is not None and action.default is not False and action.dest != "help"
            if shown:
                assert f"(default: {action.default})" in " ".join(text.split()), f"{name} {action.option_strings}"
    assert "(default: 250000)" in " ".join(subparsers.choices["fit"].format_help().split())


def test_predict_and_check_take_a_scheduler(small, tmp_path):
    path, truth = small
    model = tmp_path / "m.json"
    assert _run("fit", path, "--out", str(model), "--hidden", "2", "--scheduler", "synchronous", "-q").returncode == 0
    assert _run("check", path, "--scheduler", "synchronous", "-q").returncode == 0
    pred = tmp_path / "p.zarr"
    assert _run("predict", str(model), path, "--out", str(pred), "--scheduler", "synchronous", "-q").returncode == 0
    x, _ = sr.open_store(path).read_chunk(0)
    import zarr

    got = np.asarray(zarr.open_group(str(pred), mode="r")["y_pred"][: x.shape[0]])
    np.testing.assert_allclose(got, sr.load_model(model).predict(x), rtol=0, atol=0)
