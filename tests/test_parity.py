"""The CLI and the web page apply the same rules: the same TrainConfig from the same choices, and the same
probabilities for the same image, a model ending in logits included."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from web_support import png_bytes  # noqa: E402

from cnnlab import cli  # noqa: E402
from cnnlab.cli import train as train_cli  # noqa: E402
from cnnlab.cli.commands import build_parser  # noqa: E402
from cnnlab.models import Sequential  # noqa: E402
from cnnlab.spec import layers as L  # noqa: E402
from cnnlab.spec import zoo  # noqa: E402
from cnnlab.train.plan import plan_training  # noqa: E402
from cnnlab.web.app import create_app  # noqa: E402
from cnnlab.web.jobs import Trainer  # noqa: E402
from cnnlab.web.stores import NotFound  # noqa: E402


def cli_config(*flags: str):
    args = build_parser().parse_args(["train", *flags])
    return plan_training(train_cli.train_choices_of(args)).config


def web_config(tmp_path, monkeypatch, **body):
    seen = {}

    def capture(self, plan, out):
        seen["config"] = plan.config
        raise NotFound("captured")  # answered 404: nothing is trained

    monkeypatch.setattr(Trainer, "start", capture)
    with TestClient(create_app(runs_dir=tmp_path / "runs"), base_url="http://127.0.0.1") as client:
        client.post("/api/train", json={"data": "mnist", **body})
    return seen["config"]


@pytest.mark.parametrize("model,lr", [("fast", 0.002), ("fast", None), ("seed", 0.002), ("seed", None)])
def test_cli_and_web_make_the_same_train_config(tmp_path, monkeypatch, model, lr):
    flags = ["--model", model, "--epochs", "2", "--batch-size", "64"] + (["--lr", str(lr)] if lr else [])
    body = {"model": model, "epochs": 2, "batch_size": 64, **({"lr": lr} if lr else {})}
    ours, theirs = cli_config(*flags), web_config(tmp_path, monkeypatch, **body)
    assert ours == theirs
    assert ours.resolved_schedule == ("constant" if lr else zoo.resolve(model, (28, 28, 1), 10)[1].get("schedule", "onecycle"))


def test_cli_and_web_give_the_same_probabilities_for_a_logits_model(tmp_path, capsys, mnist):
    model = Sequential([L.Conv2D(4, 3, activation="relu", input_shape=(28, 28, 1)), L.Flatten(), L.Dense(10)])
    model.build(seed=0)
    with_torch = model.module
    for p in with_torch.parameters():  # large weights: logits far from probabilities
        p.data.mul_(20)
    path = tmp_path / "logits.safetensors"
    model.save(path)
    image = tmp_path / "digit.png"
    image.write_bytes(png_bytes(mnist.x_test[0, :, :, 0]))

    capsys.readouterr()
    assert cli.main(["predict", str(path), str(image), "--top-k", "10", "--json"]) == 0
    by_cli = {t["class"]: t["probability"] for t in json.loads(capsys.readouterr().out)[0]["top"]}
    with TestClient(create_app(run=path, runs_dir=tmp_path / "runs"), base_url="http://127.0.0.1") as client:
        answer = client.post("/api/predict", files={"file": ("digit.png", image.read_bytes(), "image/png")})
    assert answer.status_code == 200, answer.text
    by_web = dict(zip(answer.json()["classes"], answer.json()["probabilities"]))
    assert by_web.keys() == by_cli.keys()
    np.testing.assert_allclose([by_web[k] for k in by_cli], list(by_cli.values()), rtol=1e-5, atol=1e-7)
    assert sum(by_web.values()) == pytest.approx(1.0, abs=1e-5) and min(by_web.values()) >= 0
