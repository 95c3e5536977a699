"""`cnnlab export RUN --check FOLDER`: the exported file (onnxruntime for ONNX, TorchScript) run over a folder of
image files agrees with cnnlab's predictions of the same decoded pixels; a tampered export is caught."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from cnnlab import cli
from cnnlab.models import load_model
from cnnlab.runs.export_check import check_export

pytest.importorskip("onnxruntime")


@pytest.fixture
def digits(tmp_path, mnist):
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(mnist.x_test[i][..., 0]).save(folder / f"{i:02d}.png")
    (folder / "bad.png").write_bytes(b"not a png")
    return folder


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_check_reports_full_agreement(tiny_run, digits, tmp_path, capsys, fmt):
    out = tmp_path / f"model.{fmt}"
    out = out.with_suffix(".onnx" if fmt == "onnx" else ".pt")
    assert cli.main(["export", str(tiny_run), "--format", fmt, "--out", str(out), "--check", str(digits)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert "on 40 images: same top-1 class on 40 (100.0%)" in line and "1 unreadable" in line
    assert float(re.search(r"difference ([0-9.]+)", line).group(1)) < 1e-4


def test_export_check_catches_an_export_that_disagrees(tiny_run, digits, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    assert cli.main(["export", str(tiny_run), "--out", str(out)]) == 0
    from cnnlab.runs import export_check
    real = export_check.exported_runner

    def scaled_twice(path):  # the classic bug: the deployment divides by 255 before the graph does it again
        run = real(path)
        return lambda x: run((x.astype(np.float32) / 255).astype(np.uint8))
    monkeypatch.setattr(export_check, "exported_runner", scaled_twice)
    result = check_export(load_model(tiny_run), out, digits, progress=False)
    assert result.agree < 0.5 * result.images and result.max_difference > 0.5
