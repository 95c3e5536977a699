"""Response maps and Grad-CAM of a photo model (frozen EfficientNet-Lite0 + a new head), against hand-run stages.

Reference: the backbone's own submodules (stem, stages[i], head) run one after another on the scaled input,
and Grad-CAM written out with torch.autograd on the head's output, with no hooks.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.backbones.preprocess import MEAN, SCALE
from cnnlab.cli import main
from cnnlab.explain import backbone_stages, feature_maps, grad_cam
from cnnlab.runs import model_file
from cnnlab.spec import layers as L
from cnnlab.spec.build import new_module

STAGES = ["stem", *(f"block{i}" for i in range(1, 8)), "top"]
SIZE = 96  # small enough for CPU; the stages' strides give 48, 48, 24, 12, 6, 6, 3, 3, 3


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photo_model() -> tuple[L.ModelSpec, torch.nn.Module]:
    spec = L.ModelSpec((L.EfficientNetLite0(trainable=False), L.GlobalAveragePooling2D(),
                        L.Dense(3, activation="softmax")), (SIZE, SIZE, 3))
    return spec, new_module(spec, seed=0)  # ImageNet weights in the backbone, a random head


def photo() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.asarray(Image.fromarray(data.chelsea()).resize((SIZE, SIZE)))


def by_hand(module: torch.nn.Module, x: np.ndarray) -> list[torch.Tensor]:
    """Every stage's output, running the backbone's parts in order on (x * 255 - 127) / 128."""
    net = module.efficientnet_lite0.net
    t = (torch.from_numpy(x.copy()).permute(2, 0, 1)[None].float() - MEAN) / SCALE
    outs = [net.stem(t)]
    for stage in net.stages:
        outs.append(stage(outs[-1]))
    outs.append(net.head(outs[-1]))
    return outs


def test_all_maps_are_the_backbone_stages_in_order(photo_model):
    _, module = photo_model
    x = photo()
    maps = feature_maps(module, x)
    assert [name for name, _ in maps] == [f"efficientnet_lite0/{s}" for s in STAGES]
    with torch.no_grad():
        expected = by_hand(module.eval(), x)
    for (name, got), want in zip(maps, expected):
        np.testing.assert_allclose(got, want[0].permute(1, 2, 0).numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
    assert [m.shape for _, m in maps][:3] == [(48, 48, 32), (48, 48, 16), (24, 24, 24)]
    assert maps[-1][1].shape == (3, 3, 1280)  # the map the head's pooling averages
    kinds = backbone_stages(module)
    assert list(kinds) == [name for name, _ in maps]
    assert kinds["efficientnet_lite0/block3"] == "2 MBConv 5x5 blocks, stride 2"
    assert all(not m._forward_hooks for m in module.modules())


def test_asking_for_a_backbone_or_one_stage(photo_model):
    _, module = photo_model
    x = photo()
    assert [n for n, _ in feature_maps(module, x, "efficientnet_lite0")] == [f"efficientnet_lite0/{s}" for s in STAGES]
    two = feature_maps(module, x, ["efficientnet_lite0/top", "efficientnet_lite0/block3"])
    assert [n for n, _ in two] == ["efficientnet_lite0/block3", "efficientnet_lite0/top"]  # forward order
    with pytest.raises(ValueError, match=r"no stage 'block9'; its stages: \['stem', 'block1'"):
        feature_maps(module, x, ["efficientnet_lite0/block9"])
    with pytest.raises(ValueError, match="only a pretrained backbone layer has stages"):
        feature_maps(module, x, ["dense/top"])
    with pytest.raises(ValueError, match=r"not a spatial map; choose one of \['efficientnet_lite0/stem'"):
        feature_maps(module, x, ["dense"])


def test_grad_cam_of_a_photo_model_equals_autograd_on_the_head_map(photo_model):
    _, module = photo_model
    x = photo()
    module.eval()
    t = torch.from_numpy(x.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.enable_grad():
        acts = by_hand(module, x)[-1].detach().requires_grad_(True)  # (1, 1280, 3, 3): the graph starts here
        logits = module.dense(module.global_average_pooling2d(acts))
        cls = 2
        (grads,) = torch.autograd.grad(logits[0, cls], acts)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0].detach().numpy()
    want = cam / cam.max() if cam.max() > 0 else cam
    got = grad_cam(module, t, class_index=cls)
    assert got.shape == (SIZE, SIZE)
    np.testing.assert_allclose(got, want, atol=1e-4)
    stage = grad_cam(module, x, class_index=cls, layer="efficientnet_lite0/block6")  # an earlier stage works too
    assert stage.shape == (SIZE, SIZE) and 0 <= stage.min() and stage.max() <= 1
    with pytest.raises(ValueError, match="no stage 'block0'"):
        grad_cam(module, x, layer="efficientnet_lite0/block0")
    assert all(not m._forward_hooks for m in module.modules())


def test_cli_maps_of_two_stages_of_a_saved_photo_model(photo_model, tmp_path, capsys):
    spec, module = photo_model
    path = tmp_path / "photo.safetensors"
    model_file.save_model(path, spec, module, ["a", "b", "c"],
                          {"scale": 255, "size": [SIZE, SIZE], "channels": 3, "color": "rgb"})
    image = tmp_path / "cat.png"
    Image.fromarray(photo()).save(image)
    out = tmp_path / "figs"
    assert main(["explain", str(path), "--maps", "efficientnet_lite0/block3,efficientnet_lite0/top",
                 "--image", str(image), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == ["wrote", str(out / "maps_efficientnet_lite0-block3.png"),
                       "wrote", str(out / "maps_efficientnet_lite0-top.png")]
    assert all(Image.open(p).size[0] > 600 for p in printed[1::2])


def test_cli_explains_the_pretrained_classifier_by_name(tmp_path, capsys, monkeypatch):
    from cnnlab.backbones.preprocess import class_names
    monkeypatch.chdir(tmp_path)  # no folder called "imagenet" here, so the name means the zoo model
    data = pytest.importorskip("skimage.data")
    Image.fromarray(data.chelsea()).save("chelsea.png")
    assert main(["explain", "imagenet", "--grad-cam", "--image", "chelsea.png", "--out", "figs"]) == 0
    wrote = capsys.readouterr().out.split()[-1]
    cats = ["".join(c if c.isalnum() or c in "-_" else "-" for c in class_names()[i]) for i in range(281, 286)]
    assert any(wrote == f"figs/grad_cam_chelsea_pred-{name[:40]}.png" for name in cats), wrote
    assert Image.open(wrote).size[0] >= 1200  # image, heat map, overlay, saliency


def test_a_dataset_index_on_the_pretrained_classifier_says_to_give_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["explain", "imagenet", "--maps", "all", "--image", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error: --image 3 (a dataset index) needs the dataset of a run folder")
    assert err.endswith("give --image an image file instead") and "\n" not in err
