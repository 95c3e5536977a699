"""One way in: every command and the web open every kind of model argument alike (`cnnlab.runs.open_model`).

The reference for probabilities and accuracy is the Python API's own `model.predict` / `model.evaluate` on
the same arrays; the commands and the web must agree with it, whichever file kind carried the model.
"""
import json
import shutil

import numpy as np
import pytest
import web_support
from PIL import Image

import cnnlab as keras
from cnnlab import layers
from cnnlab.cli import commands as cli

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.web.app import create_app  # noqa: E402


def _trained(head):
    """A Python-built model trained briefly on real digits; `head`: its first layers after the input."""
    data = web_support.mnist()
    model = keras.Sequential([keras.Input((28, 28, 1)), *head, layers.Conv2D(4, 3, activation="relu"),
                              layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train[:1500], data.y_train[:1500], epochs=1, batch_size=64, verbose=0, device="cpu")
    return model


@pytest.fixture(scope="module")
def rescaling_model(tmp_path_factory):
    """`digits.safetensors`: an input `Rescaling(1/255)` (Keras files cnnlab writes do not take it yet);
    `digits.keras`: the same network without it."""
    folder = tmp_path_factory.mktemp("rescaling")
    models = {"digits.safetensors": _trained([layers.Rescaling(1 / 255)]), "digits.keras": _trained([])}
    for name, model in models.items():
        model.save(folder / name)
    return models, folder, web_support.mnist()


def _cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("kind", ["digits.safetensors", "digits.keras"])
def test_a_saved_rescaling_model_predicts_and_evaluates_alike_everywhere(rescaling_model, kind, tmp_path, capsys):
    models, folder, data = rescaling_model
    model = models[kind]
    x = data.x_test[:6]
    expected = model.predict(x)
    paths = []
    for i, image in enumerate(x):
        paths.append(tmp_path / f"d{i}.png")
        Image.fromarray(image[:, :, 0]).save(paths[-1])
    rc, out, err = _cli(capsys, "predict", folder / kind, *paths, "--top-k", "10", "--json")
    assert rc == 0, err
    for row, probs in zip(json.loads(out), expected):
        got = {t["class"]: t["probability"] for t in row["top"]}
        np.testing.assert_allclose([got[str(k)] for k in range(10)], probs, atol=1e-5)
    with TestClient(create_app(run=folder / kind, runs_dir=tmp_path / "runs"), base_url="http://127.0.0.1") as c:
        for path, probs in zip(paths[:2], expected):
            r = c.post("/api/predict", content=path.read_bytes(), headers={"Content-Type": "image/png"})
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["probabilities"], probs, atol=1e-5)
    rc, out, err = _cli(capsys, "evaluate", folder / kind, "--data", "mnist", "--json")
    assert rc == 0, err
    loss, accuracy = model.evaluate(data.x_test, data.y_test)
    assert json.loads(out)["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert json.loads(out)["test_loss"] == pytest.approx(loss, rel=1e-4)


def _commands(model, image, out):
    """Each command that takes a model argument, with the least else it needs."""
    return {"summary": ["summary", "--model", model, "--json"],
            "evaluate": ["evaluate", model, "--data", "mnist", "--json"],
            "predict": ["predict", model, image],
            "explain": ["explain", model, "--grad-cam", "--image", image, "--out", out / "explain"],
            "plot": ["plot", model, "--out", out / "plot"],
            "export": ["export", model, "--format", "torchscript", "--out", out / "m.pt"]}


def _serve_error(model, runs):
    try:
        create_app(run=model, runs_dir=runs)
    except ValueError as exc:
        return str(exc).splitlines()[0]
    return None


def test_every_command_and_the_web_take_every_kind_of_model(rescaling_model, tiny_run, tmp_path, capsys):
    _, folder, data = rescaling_model
    image = tmp_path / "digit.png"
    Image.fromarray(data.x_test[0][:, :, 0]).save(image)
    kinds = {"run folder": tiny_run, "run's model file": tiny_run / "model.safetensors",
             "model.save .safetensors": folder / "digits.safetensors", "model.save .keras": folder / "digits.keras"}
    for kind, model in kinds.items():
        for command, argv in _commands(model, image, tmp_path / kind.replace(" ", "_")).items():
            rc, _, err = _cli(capsys, *argv)
            if command == "plot" and "run" not in kind:  # only a run folder has a history to draw
                assert rc == 1 and "is not in a run folder" in err, (kind, err)
                continue
            assert rc == 0, (kind, command, err)
        assert _serve_error(model, tmp_path / "runs") is None, kind


def test_every_command_refuses_what_is_not_a_model_with_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model at all")
    (tmp_path / "empty").mkdir()
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    for model in [tmp_path / "missing.safetensors", tmp_path / "missing.keras", garbage, tmp_path / "empty"]:
        errors = {}
        for command, argv in _commands(model, image, tmp_path / "out").items():
            rc, _, err = _cli(capsys, *argv)
            assert rc == 1 and len(err.strip().splitlines()) == 1, (command, err)
            errors[command] = err.strip().removeprefix("cnnlab: error: ")
        errors["serve"] = _serve_error(model, tmp_path / "runs")
        assert len(set(errors.values())) == 1, errors
        assert str(model) in errors["serve"]


@pytest.mark.slow
def test_the_pretrained_name_is_a_model_argument_everywhere(tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray((np.indices((64, 64)).sum(0) * 2).astype(np.uint8)).convert("RGB").save(image)
    for command, argv in _commands("imagenet", image, tmp_path).items():
        rc, _, err = _cli(capsys, *argv)
        if command == "plot":
            assert rc == 1 and "is not in a run folder" in err
        elif command == "evaluate":  # ImageNet's 224 x 224 colour photos are not MNIST's digits
            assert rc == 1 and "224x224x3" in err and "28x28x1" in err, err
        else:
            assert rc == 0, (command, err)
    assert _serve_error("imagenet", tmp_path / "runs") is None
    shutil.rmtree(tmp_path / "explain", ignore_errors=True)


def test_every_save_records_the_preprocessing_by_one_rule(rescaling_model, tiny_run, tmp_path):
    """Run folders, `model.save` and `.keras` loads give the same keys; only a known digit set centres digits."""
    from cnnlab.runs.model_file import model_preprocessing, read_model
    from cnnlab.runs.open_model import open_model

    _, folder, _ = rescaling_model
    assert read_model(tiny_run).preprocessing == model_preprocessing((28, 28, 1), "mnist")
    assert read_model(tiny_run).preprocessing["mnist_style"] is True
    assert read_model(folder / "digits.safetensors").preprocessing == model_preprocessing((28, 28, 1))
    assert open_model(folder / "digits.keras").preprocessing == model_preprocessing((28, 28, 1))
    assert model_preprocessing((28, 28, 1))["mnist_style"] is False
    again = keras.models.load_model(tiny_run)  # resaved from Python, it keeps what it was trained with
    again.save(tmp_path / "again.safetensors")
    assert read_model(tmp_path / "again.safetensors").preprocessing == read_model(tiny_run).preprocessing


def test_a_functional_rescaling_model_is_built_alike_by_the_api_and_from_its_file(tmp_path):
    """The functional Model's layer objects take their modules from the spec builder too."""
    from cnnlab.runs.open_model import open_model
    from cnnlab.runs.predict import class_probabilities

    inputs = keras.Input((8, 8, 1))
    hidden = layers.Flatten()(layers.Rescaling(1 / 127.5, offset=-1)(inputs))
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(hidden))
    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    expected = model.predict(x)
    model.save(tmp_path / "f.safetensors")
    np.testing.assert_allclose(class_probabilities(open_model(tmp_path / "f.safetensors").module, x), expected,
                               atol=1e-6)
    assert not np.allclose(expected, expected[:1])  # the inputs matter: [-1, 1], not [-1, -0.99]
