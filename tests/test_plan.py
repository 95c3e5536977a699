"""One training plan: the web page's default request and `cnnlab train`'s default command plan and train alike.

For every zoo entry and every kind of data the page offers (a built-in set, a folder of digits, a folder of
photos), the plan the page is pre-filled from (POST /api/train/plan) is the CLI's; trained, the two record the
same config.json (up to paths and times) and the same test accuracy.
"""
import json
import time

import pytest
import web_support

from cnnlab.cli import commands as cli
from cnnlab.cli import train as train_cli
from cnnlab.spec import zoo
from cnnlab.train.plan import TrainChoices, plan_training

pytest.importorskip("fastapi")
skimage_data = pytest.importorskip("skimage.data")
import photo_support  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from cnnlab.web.app import create_app  # noqa: E402


def digit_folder(root, per_class=12, classes=(0, 1, 7)):
    """root/{train,test}/<digit>/<i>.png: real MNIST digits, a few of each of three classes."""
    data = web_support.mnist()
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        for digit in classes:
            (root / split / str(digit)).mkdir(parents=True)
            for i, j in enumerate((y == digit).nonzero()[0][:per_class]):
                Image.fromarray(x[j][:, :, 0]).save(root / split / str(digit) / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    photos = photo_support.photo_folder(root / "photos", {"cat": skimage_data.chelsea(), "coffee": skimage_data.coffee()},
                                        n_train=8, n_test=4)
    return {"digits": digit_folder(root / "digits"), "photos": photos}


def _same_up_to_the_cache(plan):
    """A plan without the line saying whether the folder was decoded now or read from the cache."""
    return {**plan, "reasons": [r for r in plan["reasons"] if not r.strip().startswith(("decoded in", "loaded from"))]}


def cli_plan(*flags):
    return plan_training(train_cli.train_choices_of(cli.build_parser().parse_args(["train", *flags])))


def test_the_page_and_the_cli_plan_alike_for_every_zoo_entry_and_kind_of_data(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))
    app = create_app(runs_dir=tmp_path / "runs", data_dirs=list(folders.values()))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for name, data in (("mnist", "mnist"), ("digits", str(folders["digits"])), ("photos", str(folders["photos"]))):
            for model in [None, *zoo.ZOO]:
                body = {"data": name, **({"model": model} if model else {})}
                web = client.post("/api/train/plan", json=body)
                assert web.status_code == 200, web.text
                ours = cli_plan("--data", data, *(["--model", model] if model else [])).to_dict()
                assert _same_up_to_the_cache(web.json()) == _same_up_to_the_cache(json.loads(json.dumps(ours))), (name, model)
                assert web.json()["transfer"] == (name == "photos" and model in (None, "seed"))
        best = client.post("/api/train/plan", json={"data": "mnist", "model": "best"}).json()["train"]
        assert (best["optimizer"], best["epochs"]) == ("adamw", 15)  # the zoo recipe, not a form's default
        assert "model: a pretrained EfficientNet-Lite (ImageNet)" in client.post(
            "/api/train/plan", json={"data": "photos"}).json()["reasons"][0]


def test_typed_choices_are_checked_and_none_means_not_given():
    plan = plan_training(TrainChoices(model="best", epochs=2))
    assert plan.config.epochs == 2 and plan.config.optimizer == "adamw"  # the user's epochs over the recipe's
    assert TrainChoices(data="x", model="seed").chosen() == ()
    assert TrainChoices(data="x", epochs=3, augment_options={"horizontal_flip": True}).chosen() == ("--epochs", "--flip")


def _web_run(client, body):
    r = client.post("/api/train", json=body)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 300
    while (state := client.get("/api/train").json())["state"] == "running":
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state["state"] == "done", state["events"][-1]
    return r.json()["run"]


def _recorded(folder):
    """config.json without what differs between two runs of one plan: times, and where the run was written."""
    config = json.loads((folder / "config.json").read_text())
    for key in ("created",):
        config.pop(key)
    transfer = config.get("transfer", {})
    transfer.pop("seconds", None)
    for candidate in transfer.get("candidates", []):
        candidate.pop("feature_seconds")
    return config, json.loads((folder / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("kind,web_extra,cli_extra", [
    ("digits", {}, []), ("photos", {}, []),
    ("mnist", {"model": "lenet5", "limit_train": 600}, ["--model", "lenet5", "--subset", "600"])])
def test_the_page_and_the_cli_train_the_same_plan(folders, tmp_path, monkeypatch, kind, web_extra, cli_extra):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))
    data = str(folders[kind]) if kind in folders else kind
    out = tmp_path / "cli-run"
    assert cli.main(["train", "--data", data, *cli_extra, "--out", str(out), "--quiet"]) == 0
    runs = tmp_path / "runs"
    app = create_app(runs_dir=runs, data_dirs=list(folders.values()))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        run = _web_run(client, {"data": kind, **web_extra})
    (ours, our_metrics), (theirs, their_metrics) = _recorded(out), _recorded(runs / run)
    assert ours == theirs
    assert our_metrics["test_accuracy"] == their_metrics["test_accuracy"]
    assert our_metrics["confusion_matrix"] == their_metrics["confusion_matrix"]
    assert ("transfer" in ours) == (kind == "photos")
