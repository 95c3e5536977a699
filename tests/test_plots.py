"""plots.py: every figure saves to a PNG that decodes at the expected pixel size, and shows the right numbers."""
import os

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from cnnlab.explain import plots
from cnnlab.explain.maps import top_losses
from cnnlab.explain.metrics import confusion_matrix
from cnnlab.spec.conv_arithmetic import conv_positions, conv_windows

NAMES = [str(i) for i in range(10)]
rng = np.random.default_rng(0)
IMAGES = rng.integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
LABELS = rng.integers(0, 10, size=40)
PROBS = rng.dirichlet(np.ones(10), size=40)


def figures() -> dict[str, Figure]:
    cm = confusion_matrix(LABELS, PROBS.argmax(1), 10)
    history = {"loss": [1.0, 0.5, 0.3], "accuracy": [0.6, 0.8, 0.9], "val_loss": [0.9, 0.6, 0.5],
               "val_accuracy": [0.7, 0.8, 0.85]}
    kernels = rng.normal(size=(3, 3, 1, 6)).astype(np.float32)
    heat = rng.random((8, 8))
    return {
        "sample_grid": plots.sample_grid(IMAGES, LABELS, NAMES, rows=2, cols=3),
        "sample_grid_rgb": plots.sample_grid(rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), [0, 1, 2, 3], NAMES, 1, 4),
        "training_curves": plots.training_curves(history),
        "training_curves_no_val": plots.training_curves({"loss": [1.0, 0.7]}),
        "confusion": plots.confusion(cm, NAMES),
        "confusion_normalized": plots.confusion(cm, NAMES, normalize=True),
        "top_losses_grid": plots.top_losses_grid(IMAGES, top_losses(PROBS, LABELS, 6), NAMES, cols=3),
        "top_losses_none": plots.top_losses_grid(IMAGES, top_losses(np.eye(3), np.arange(3), 4), NAMES),
        "filters_grid": plots.filters_grid(kernels, "conv2d"),
        "filters_grid_deep": plots.filters_grid(rng.normal(size=(3, 3, 4, 5)), "conv2d_1"),
        "filters_grid_rgb": plots.filters_grid(rng.normal(size=(3, 3, 3, 2)), "conv2d"),
        "feature_maps_grid": plots.feature_maps_grid("conv2d", rng.random((6, 6, 5)), (None, 6, 6, 5)),
        "grad_cam_overlay": plots.grad_cam_overlay(IMAGES[0], heat, "Grad-CAM: class 3"),
        "conv_explainer": plots.conv_explainer(5, 3, "same", 1),
        "pool_explainer": plots.conv_explainer(6, 2, pool=True),
    }


def test_every_figure_saves_to_a_decodable_png(tmp_path):
    figs = figures()
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        assert fig.get_suptitle() or any(ax.get_title() for ax in fig.axes) or fig.texts, f"{name} has no title"
        path = plots.save_png(fig, tmp_path / "sub" / f"{name}.png", dpi=50)
        with Image.open(path) as im:
            im.load()
            w, h = fig.get_size_inches() * 50
            assert im.format == "PNG"
            assert abs(im.size[0] - w) <= 1 and abs(im.size[1] - h) <= 1, name
    assert sorted(os.listdir(tmp_path / "sub")) == sorted(f"{n}.png" for n in figs)  # no temp files


def test_save_png_is_atomic(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    fig = plots.training_curves({"loss": [1.0]})

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    fig.savefig = broken
    with pytest.raises(RuntimeError, match="disk full"):
        plots.save_png(fig, target)
    assert target.read_bytes() == b"old"  # the old file survives a failed write
    assert os.listdir(tmp_path) == ["fig.png"]


@pytest.mark.parametrize("n,k,padding,s", [(5, 3, "valid", 1), (5, 3, "same", 1), (5, 3, "valid", 2), (6, 2, "same", 3)])
def test_conv_explainer_draws_every_window(n, k, padding, s):
    fig = plots.conv_explainer(n, k, padding, s)
    ax_in, ax_out = fig.axes
    count = len(conv_positions(n, k, padding, s))
    assert sorted(int(t.get_text()) for t in ax_in.texts) == list(range(count))
    assert sorted(int(t.get_text()) for t in ax_out.texts) == list(range(count))
    (top, bottom), (left, right) = conv_windows(n, k, padding, s).pad
    ring = [p for p in ax_in.patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert len(ring) == (n + top + bottom) * (n + left + right) - n * n  # the zero-padding cells
    assert ("ceil" if padding == "same" else "floor") in fig.get_supxlabel()


def test_confusion_cells_show_the_counts():
    cm = np.array([[5, 1], [0, 3]])
    fig = plots.confusion(cm, ["cat", "dog"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["5", "1", "0", "3"]
    assert "88.89%" in fig.axes[0].get_title()
    fig = plots.confusion(cm, ["cat", "dog"], normalize=True)
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.83", "0.17", "0.00", "1.00"]
    with pytest.raises(ValueError, match="class names"):
        plots.confusion(cm, ["a", "b", "c"])


def test_feature_map_title_reads_like_the_summary():
    fig = plots.feature_maps_grid("conv2d", np.zeros((26, 26, 3)))
    assert fig.get_suptitle().startswith("conv2d  (None, 26, 26, 3)")
    assert len(fig.axes) == 3
    fig = plots.feature_maps_grid("conv2d_1", np.zeros((4, 4, 70)), max_maps=16)
    assert len(fig.axes) == 16 and "first 16 of 70" in fig.get_suptitle()
