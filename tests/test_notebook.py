"""examples/lecture.ipynb runs top to bottom in a Jupyter kernel and prints the lecture's parameter counts."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "lecture.ipynb"


def test_lecture_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    src = str(Path(__file__).resolve().parents[1] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])  # the kernel imports this tree
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    # printed text, and the live progress line (a display updated in place, shown as HTML and plain text)
    text = "\n".join(out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in outputs)
    images = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if "image/png" in out.get("data", {})]
    assert "conv params: 55,744" in text and "total params: 93,322" in text
    assert "(60000, 28, 28) (60000,) (10000, 28, 28) (10000,)" in text
    assert "epoch 1/1" in text  # fit's progress shows in the notebook
    assert "test accuracy" in text and len(images) >= 2
