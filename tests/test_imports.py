"""Layering contracts of [tool.importlinter] in pyproject.toml, checked by import-linter.

Each contract runs as its own test (``lint-imports --contract ID``) so a broken
one does not hide the others; the tool's report is the failure message.
"""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the `test` extra")

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _lint_imports():
    beside = Path(sys.executable).with_name("lint-imports")  # the venv's entry point
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert found, "the lint-imports command of import-linter is not installed"
    return found


def test_contracts_are_configured():
    assert len(CONTRACTS) >= 3 and all("id" in c and "name" in c for c in CONTRACTS), CONTRACTS


def _top_level_modules():
    package = ROOT / "stream_relu"
    found = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    found |= {p.parent.name for p in package.glob("*/__init__.py")}
    return {f"stream_relu.{name}" for name in found}


def test_contract_lists_name_every_module():
    # the contracts list modules one by one: a new module must be added to them
    everything = _top_level_modules()
    by_id = {c["id"]: c for c in CONTRACTS}
    expected = {
        ("nothing-imports-cli", "source_modules"): everything - {"stream_relu.cli"},
        ("frontends-use-public-api", "forbidden_modules"): everything
        - {"stream_relu.cli", "stream_relu.sklearn", "stream_relu.report", "stream_relu.errors"},
    }
    for (cid, key), modules in expected.items():
        listed = set(by_id[cid][key])
        assert listed == modules, (
            f"[tool.importlinter] contract {cid!r}, {key}: add {sorted(modules - listed)}, "
            f"remove {sorted(listed - modules)}"
        )


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c["id"] for c in CONTRACTS])
def test_import_contract(contract):
    run = subprocess.run(
        [_lint_imports(), "--no-cache", "--no-logo", "--contract", contract["id"], str(ROOT / "pyproject.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    report = run.stdout + run.stderr
    # the tool really checked this contract (and not, say, an empty or unreadable configuration)
    assert f"{contract['name']} KEPT" in report or f"{contract['name']} BROKEN" in report, report
    assert run.returncode == 0, f"lint-imports exited {run.returncode}:\n{report}"
