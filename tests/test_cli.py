"""The command line in-process (`cli.main` + capsys): output, files written, exit codes, one-line errors.

One test runs the real `cnnlab` entry point in a subprocess.
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import cli
from cnnlab.datasets import registry


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cnnlab(capsys, monkeypatch):
    """Run `cnnlab ARGS` in this process; argparse's usage errors exit, and count as return code 2."""
    def run(*args, cwd=None, check=True):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        if check and code != 0:
            raise AssertionError(f"cnnlab {' '.join(map(str, args))} failed:\n{out}\n{err}")
        return Result(code, out, err)
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder made by `cnnlab train` itself: 2,000 MNIST digits, one epoch of 63 steps."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert cli.main(["train", "--subset", "2000", "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    return out


def test_train_writes_a_complete_run_folder(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert names >= {"model.safetensors", "config.json", "history.json", "history.csv", "metrics.json",
                     "summary.txt", "summary.json", "curves.png", "confusion.png"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_test"] == 10000 and metrics["test_accuracy"] > 0.8
    cm = np.array(metrics["confusion_matrix"])
    assert cm.sum() == 10000 and np.trace(cm) / 10000 == pytest.approx(metrics["test_accuracy"])
    assert "Total params: 93,322" in (run_dir / "summary.txt").read_text()
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_train_refuses_to_overwrite_a_run(run_dir, cnnlab):
    before = (run_dir / "model.safetensors").read_bytes()
    result = cnnlab("train", "--subset", 100, "--epochs", 1, "--out", run_dir, check=False)
    assert result.returncode == 1 and "already exists" in result.stderr
    assert (run_dir / "model.safetensors").read_bytes() == before


def test_evaluate_from_the_folder_alone(run_dir, cnnlab):
    out = json.loads(cnnlab("evaluate", run_dir, "--json").stdout)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert out["test_accuracy"] == pytest.approx(saved["test_accuracy"])
    assert "precision" in cnnlab("evaluate", run_dir).stdout


def test_predict_image_files(tiny_run, tmp_path, cnnlab):
    ds = registry.load("mnist")
    paths = []
    for i in range(5):
        Image.fromarray(ds.x_test[i, :, :, 0]).save(tmp_path / f"d{i}.png")
        paths.append(tmp_path / f"d{i}.png")
    out = json.loads(cnnlab("predict", tiny_run, *paths, "--top-k", 2, "--json").stdout)
    assert len(out) == 5 and all(len(r["top"]) == 2 for r in out)
    predicted = [int(r["top"][0]["class"]) for r in out]
    assert sum(p == int(t) for p, t in zip(predicted, ds.y_test[:5])) >= 4


def test_summary_json_interface(cnnlab):
    out = json.loads(cnnlab("summary", "--model", "seed", "--json").stdout)
    assert out["total_params"] == 93322 and out["trainable_params"] == 93322 and out["non_trainable_params"] == 0
    assert out["layers"][0] == {"name": "conv2d", "type": "Conv2D", "output_shape": [None, 26, 26, 32], "params": 320}


def test_summary_of_json_and_compact_specs(tmp_path, cnnlab):
    spec = {"input_shape": [28, 28, 1], "layers": [{"type": "Conv2D", "filters": 32, "kernel_size": [3, 3],
                                                     "activation": "relu"}, {"type": "Flatten"}, {"type": "Dense", "units": 10}]}
    (tmp_path / "m.json").write_text(json.dumps(spec))
    a = json.loads(cnnlab("summary", "--model", tmp_path / "m.json", "--json").stdout)
    b = json.loads(cnnlab("summary", "--model", "conv32k3:relu flatten dense10", "--json").stdout)
    assert a == b and a["total_params"] == 320 + 26 * 26 * 32 * 10 + 10


def test_show_one_sample(tmp_path, cnnlab):
    result = cnnlab("show", "mnist", "--index", 59000, "--out", tmp_path / "x.png")
    assert "labels 6" in result.stdout
    assert Image.open(tmp_path / "x.png").size[0] > 100


def test_datasets_listing(cnnlab):
    rows = json.loads(cnnlab("datasets", "--json").stdout)
    mnist = next(r for r in rows if r["name"] == "mnist")
    assert mnist["status"] == "available" and Path(mnist["where"]).is_dir()


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "nope"], "--data 'nope' is neither a built-in dataset"),
    (["train", "--model", "conv32k99"], "kernel 99x99 is larger than the 28x28 input"),
    (["train", "--model", "conv32q3"], "cannot read token 1 'conv32q3'"),
    (["train", "--epochs", "0"], "epochs must be an integer in [1, 100000], got 0"),
    (["evaluate", "no/such/run"], "no model at 'no/such/run'"),
    (["predict", "no/such/run", "x.png"], "no model at"),
    (["show", "--index", "70000"], "--index 70000 is out of range"),
    (["train", "--model", "flatten dense5:softmax"], "outputs shape (5,) but the data has 10 classes"),
    (["train", "--early-stopping", "1"], "no validation data"),
    (["train", "--subset", "0"], "subset must be between 1 and 60,000"),
    (["train", "--device", "cuda"], "no CUDA GPU"),
    (["export", "no/such/run", "--opset", "5"], "opset must be between 13 and 21"),
])
def test_errors_are_one_line_with_nonzero_exit(args, message, tmp_path, cnnlab):
    result = cnnlab(*args, cwd=tmp_path, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())  # nothing half-made is left


def test_top_k_must_be_positive(tiny_run, tmp_path, cnnlab):
    result = cnnlab("predict", tiny_run, tmp_path / "x.png", "--top-k", "0", check=False)
    assert result.returncode == 2 and "expected a whole number >= 1, got '0'" in result.stderr


def test_predict_bad_image_file(tiny_run, tmp_path, cnnlab):
    (tmp_path / "fake.png").write_text("not an image")
    result = cnnlab("predict", tiny_run, tmp_path / "fake.png", check=False)
    assert result.returncode == 1 and "not an image: a text file" in result.stderr


def test_the_installed_entry_point_runs():
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    result = subprocess.run([sys.executable, "-m", "cnnlab", "--help"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0
    for command in ["train", "summary", "evaluate", "predict", "show", "datasets", "explain", "plot"]:
        assert command in result.stdout
