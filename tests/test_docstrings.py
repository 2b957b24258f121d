"""Numpydoc docstrings on every public function and class (and their public methods)."""

import importlib
import inspect

import pytest

import stream_relu

numpydoc_validate = pytest.importorskip("numpydoc.validate")

# Checked codes: a docstring exists (GL08), has a one-line summary (SS01, SS03),
# documents every parameter with a description and nothing else (PR01, PR02,
# PR07), and says what it returns (RT01).
CODES = {"GL08", "SS01", "SS03", "PR01", "PR02", "PR07", "RT01"}
EXTRA = [("stream_relu.sklearn", "ReluNetworkRegressor"), ("stream_relu.report", "render_report")]


def _public_objects():
    objs = [getattr(stream_relu, name) for name in stream_relu.__all__]
    for module, name in EXTRA:
        try:
            objs.append(getattr(importlib.import_module(module), name))
        except ImportError:  # an optional extra is not installed
            continue
    for obj in objs:
        if inspect.isfunction(obj):
            yield f"{obj.__module__}.{obj.__qualname__}"
        elif inspect.isclass(obj) and not issubclass(obj, Exception):
            yield f"{obj.__module__}.{obj.__qualname__}"
            for name, member in vars(obj).items():
                if name.startswith("_"):
                    continue
                if inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod)):
                    yield f"{obj.__module__}.{obj.__qualname__}.{name}"


@pytest.mark.parametrize("name", sorted(set(_public_objects())))
def test_numpydoc(name):
    errors = [(code, msg) for code, msg in numpydoc_validate.validate(name)["errors"] if code in CODES]
    assert not errors, f"{name}: {errors}"
