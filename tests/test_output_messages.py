"""What commands print (issue 21 item 20): whole titles, no raw library warnings, no line before an error,
and `serve` on a busy port saying so in one line without first announcing that it serves."""
from __future__ import annotations

import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import web_support

from cnnlab import cli
from cnnlab.explain.plots import sample_grid


def test_a_one_image_grid_keeps_its_whole_title():
    fig = sample_grid(np.zeros((1, 28, 28, 1), np.uint8), [6], [str(k) for k in range(10)], rows=1, cols=1,
                      title="mnist train #59000")
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width, (box, fig.bbox)


def test_train_with_a_bad_model_prints_only_the_error(capsys):
    assert cli.main(["train", "--model", "sed", "--subset", "300"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "'sed' is not a zoo name" in err


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_prints_no_tracer_warning(trained: Path, tmp_path: Path, fmt: str):
    from cnnlab.runs.export import export
    if fmt == "onnx":
        pytest.importorskip("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        export(trained, fmt, tmp_path / f"model.{fmt}")


def test_serve_on_a_busy_port_is_one_line_and_never_says_serving(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "cnnlab", "serve", "--port", str(port), "--runs", str(tmp_path)],
                              env=web_support.cnnlab_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "serving on" not in done.stdout
    assert done.stderr == (f"cnnlab: error: port {port} on 127.0.0.1 is already in use (another server, or another "
                           "cnnlab serve); choose another with --port\n")
