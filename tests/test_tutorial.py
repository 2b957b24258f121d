"""docs/TUTORIAL.md runs as written: its bash and python blocks execute in order in a fresh folder."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "TUTORIAL.md"
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.S)


def _blocks():
    return BLOCK.findall(TUTORIAL.read_text())


def test_tutorial_has_commands_for_each_step():
    text = " ".join(code for _, code in _blocks())
    for command in ("simulate", "check", "fit", "evaluate", "report", "predict"):
        assert f"stream-relu {command}" in text
    assert "Client(" in text and "load_model" in text


@pytest.mark.slow
def test_tutorial_runs(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    namespace = {"__name__": "tutorial"}
    for lang, code in _blocks():
        if lang == "bash":
            for line in code.strip().splitlines():
                out = subprocess.run(shlex.split(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
                assert out.returncode == 0, f"{line}\n{out.stderr[-2000:]}"
        else:
            exec(compile(code, str(TUTORIAL), "exec"), namespace)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert (tmp_path / "pred.zarr").is_dir()
