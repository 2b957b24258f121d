"""Model file format: schema, strict JSON, shape checks, coordinate mapping, prediction."""

import json
from importlib import resources

import dask.array as da
import numpy as np
import pytest

from stream_relu import ModelFileError, ReluNetwork, load_model
from stream_relu.network import model_schema


def _example_path():
    return resources.files("stream_relu").joinpath("examples/model-v1.json")


def test_example_v1_file_loads_and_validates():
    model = load_model(_example_path())
    assert model.n_features == 4 and model.n_hidden == 2
    np.testing.assert_allclose(np.linalg.norm(model.W, axis=0), 1.0, atol=1e-12)
    assert model.provenance["package_version"]
    assert "t2_spectrum" in model.diagnostics["width"]


def test_example_v2_file_loads_with_its_standard_errors():
    model = load_model(resources.files("stream_relu").joinpath("examples/model-v2.json"))
    assert model.n_features == 4 and model.n_hidden == 2
    se = model.stderr
    assert se["available"] and se["W"].shape == (4, 2) and se["a"].shape == (2,) and np.all(se["b"] > 0)


def test_schema_is_valid_draft_2020_12():
    import jsonschema

    for version in (1, 2):
        jsonschema.Draft202012Validator.check_schema(model_schema(version))


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    net = ReluNetwork(a=[1.0, -2.0], W=rng.standard_normal((3, 2)), b=[0.1, 0.2], u=[0, 1, 2], c=0.5,
                      diagnostics={"gap": float("inf"), "x": np.float32(1.5)})
    path = tmp_path / "m.json"
    net.save(path)
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    back = load_model(path)
    for k in ("a", "W", "b", "u"):
        np.testing.assert_array_equal(getattr(back, k), getattr(net, k))
    assert back.c == 0.5 and back.diagnostics["gap"] is None


def _write(tmp_path, doc, raw=None):
    path = tmp_path / "bad.json"
    path.write_text(raw if raw is not None else json.dumps(doc))
    return path


def _good():
    return json.loads(_example_path().read_text())


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d.pop("a"), "'a' is a required property"),
        (lambda d: d.update(format_version=3), "format_version is 3"),
        (lambda d: d.update(b=d["b"][:1]), "field b has 1; expected 2"),
        (lambda d: d.update(u=d["u"] + [0.0]), "field W has 4; expected 5"),
        (lambda d: d["W"][1].append(0.0), "field W/1 has 3; expected 2"),
        (lambda d: d.update(c="zero"), "field c:"),
        (lambda d: d.update(n_hidden=3), "field n_hidden has 3; expected 2"),
    ],
)
def test_malformed_files_name_the_field(tmp_path, mutate, field):
    doc = _good()
    mutate(doc)
    with pytest.raises(ModelFileError, match=field.replace("[", r"\[")):
        load_model(_write(tmp_path, doc))


def test_nan_and_bad_json_are_refused(tmp_path):
    with pytest.raises(ModelFileError, match="NaN is not allowed"):
        load_model(_write(tmp_path, None, raw=json.dumps(_good()).replace('"c": ', '"c": NaN, "old_c": ')))
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(_write(tmp_path, None, raw="{"))
    assert issubclass(ModelFileError, ValueError)


def test_from_whitened_is_the_same_function():
    rng = np.random.default_rng(1)
    d, m = 5, 3
    mean = rng.standard_normal(d)
    B = rng.standard_normal((d, d))
    cov = B @ B.T + d * np.eye(d)
    e, Q = np.linalg.eigh(cov)
    A = (Q / np.sqrt(e)) @ Q.T
    a, W, b, u, c = rng.standard_normal(m), rng.standard_normal((d, m)), rng.standard_normal(m), rng.standard_normal(d), 0.3
    net = ReluNetwork.from_whitened(a, W, b, u, c, mean, A)
    x = mean + rng.standard_normal((200, d)) @ np.linalg.cholesky(cov).T
    z = (x - mean) @ A
    direct = np.maximum(z @ W + b, 0) @ a + z @ u + c
    np.testing.assert_allclose(net.predict(x), direct, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(net.W, axis=0), 1.0)


def test_predict_numpy_and_dask_agree():
    model = load_model(_example_path())
    x = np.random.default_rng(2).standard_normal((1000, 4))
    out = model.predict(da.from_array(x, chunks=(300, 2)))
    np.testing.assert_allclose(out.compute(), model.predict(x), rtol=1e-15)
    with pytest.raises(ValueError, match="expected"):
        model.predict(x[:, :3])
