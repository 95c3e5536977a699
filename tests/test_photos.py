"""Photos: the pretrained backbone as a spec layer, transfer training on a folder of real photos, `predict imagenet`.

Real photos come from scikit-image (chelsea the cat, a cup of coffee); references are the torch module's own
parameter counts, onnxruntime, and the ImageNet labels of those photos.
"""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import photo_support
import pytest
import torch
from PIL import Image

from cnnlab import cli
from cnnlab.applications import EfficientNetLite0 as AppLite0
from cnnlab.models import load_model
from cnnlab.runs import model_file
from cnnlab.runs.export import export
from cnnlab.spec import layers as L
from cnnlab.spec.build import build, new_module
from cnnlab.spec.summary import summary_dict
from cnnlab.train.transfer import fit_head, is_photo_folder

skimage_data = pytest.importorskip("skimage.data")


def _photo_spec(trainable: bool, size: int = 224, include_top: bool = False) -> L.ModelSpec:
    head = () if include_top else (L.GlobalAveragePooling2D(), L.Dense(2, activation="softmax"))
    return L.ModelSpec((L.EfficientNetLite0(include_top=include_top, trainable=trainable), *head), (size, size, 3))


def _torch_counts(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) as Keras counts: BN moving statistics are non-trainable weights."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    stats = sum(b.numel() for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var")))
    return trainable, frozen + stats


@pytest.mark.parametrize("trainable", [False, True])
@pytest.mark.parametrize("include_top", [False, True])
def test_summary_counts_match_the_built_network(trainable, include_top):
    spec = _photo_spec(trainable, include_top=include_top)
    info = summary_dict(spec)
    module = build(spec)
    assert (info["trainable_params"], info["non_trainable_params"]) == _torch_counts(module)
    if not trainable:
        assert info["trainable_params"] == (0 if include_top else 1280 * 2 + 2)  # only the new head learns
    assert info["layers"][0]["output_shape"] == ([None, 1000] if include_top else [None, 7, 7, 1280])
    if include_top:  # EfficientNet-Lite0 has 4.65M weights with its top, as published
        assert sum(p.numel() for p in module.parameters()) == 4_652_008


def test_spec_json_round_trip_odd_sizes_and_grey_input_refused():
    spec = _photo_spec(False, size=100)
    assert L.ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    tuned = _photo_spec(True, size=100)  # frozen by default, so a fine-tuned backbone must say it is trainable
    assert tuned.to_dict()["layers"][0]["trainable"] is True
    assert L.ModelSpec.from_dict(json.loads(json.dumps(tuned.to_dict()))) == tuned
    assert spec.shapes()[0] == (4, 4, 1280)  # ceil(100 / 32)
    with torch.no_grad():
        out = build(L.ModelSpec((L.EfficientNetLite0(),), (100, 100, 3)))(torch.rand(1, 3, 100, 100))
    assert tuple(out.shape) == (1, 1280, 4, 4)
    with pytest.raises(L.SpecError, match=r"\(None, 28, 28, 1\).*3 colour channels"):
        L.ModelSpec((L.EfficientNetLite0(),), (28, 28, 1)).shapes()


def test_frozen_backbone_stays_in_eval_mode_and_fresh_models_get_imagenet_weights():
    from cnnlab.backbones import load_pretrained
    module = new_module(_photo_spec(False, size=64), seed=0)
    module.train()
    backbone = module[0].net
    assert not any(m.training for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    torch.testing.assert_close(backbone.stem.conv.weight, load_pretrained("lite0")["stem.conv.weight"])


def test_model_file_round_trip_and_onnx_export_match(tmp_path):
    spec = _photo_spec(False, size=64)
    module = new_module(spec, seed=0).eval()
    path = tmp_path / "photo.safetensors"
    model_file.save_model(path, spec, module, ["a", "b"], {"scale": 255, "size": [64, 64], "channels": 3, "color": "rgb"})
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    reloaded = model_file.read_model(path).module()
    with torch.no_grad():
        expected = module(t).numpy()
        np.testing.assert_array_equal(reloaded(t).numpy(), expected)
    session = ort.InferenceSession(str(export(path, "onnx")), providers=["CPUExecutionProvider"])
    logits, _ = session.run(["logits", "probabilities"], {"images": x})
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=0)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """train/ (16 a class) and test/ (8 a class): crops of chelsea the cat and of a cup of coffee."""
    root = tmp_path_factory.mktemp("photos") / "pets_and_coffee"
    return photo_support.photo_folder(root, {"cat": skimage_data.chelsea(), "coffee": skimage_data.coffee()})


def test_photo_folder_trains_through_the_default_path(photo_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))
    assert is_photo_folder(photo_folder)[0]
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(photo_folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pretrained EfficientNet-Lite0" in printed and "kept step" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9  # 16 held-out photos; the frozen features separate cats from coffee
    model = load_model(out)
    assert [layer.type for layer in model.spec.layers] == ["EfficientNetLite0", "GlobalAveragePooling2D", "Dense"]
    assert summary_dict(model.spec)["trainable_params"] == 1280 * 2 + 2
    # the saved file alone predicts: the reloaded full network agrees with the run's evaluation
    cat = str(next((photo_folder / "test" / "cat").iterdir()))
    assert cli.main(["predict", str(out), cat, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] == "cat"
    grey = tmp_path / "digits"
    (grey / "a").mkdir(parents=True)
    (grey / "b").mkdir()
    assert not is_photo_folder(grey)[0]  # no images: not photos


def test_predict_imagenet_names_real_photos(tmp_path, capsys):
    paths = []
    for name in ("chelsea", "coffee"):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(getattr(skimage_data, name)()).save(paths[-1])
    assert cli.main(["predict", "imagenet", *map(str, paths), "--top-k", "5", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == list(map(str, paths))
    assert 281 <= results[0]["top"][0]["index"] <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert results[1]["top"][0]["index"] == 967 and results[1]["top"][0]["class"] == "espresso"
    assert len(results[0]["top"]) == 5 and abs(sum(t["probability"] for t in results[0]["top"]) - 1) < 0.5


def test_application_gives_the_feature_map_and_plugs_into_sequential():
    from cnnlab import layers, models
    base = AppLite0(weights="imagenet", include_top=False, input_shape=(224, 224, 3))
    assert isinstance(base, layers.EfficientNetLite0) and isinstance(base.spec, L.EfficientNetLite0)
    assert not base.trainable
    model = models.Sequential([base, layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")])
    assert model.spec.shapes()[0] == (7, 7, 1280)
    summary = summary_dict(model.spec)
    assert summary["trainable_params"] == 1280 * 2 + 2 and summary["non_trainable_params"] > 3_000_000
    base.trainable = True  # Keras's switch unfreezes it, and the summary says so
    assert summary_dict(model.spec)["trainable_params"] > 3_000_000


def test_head_weights_stay_bounded_on_features_nearly_constant_in_training():
    """A feature that fired (a little) on one training photo only must not get a weight of 1 / its tiny spread."""
    gen = torch.Generator().manual_seed(0)
    f_train = torch.randn(40, 8, generator=gen).abs()
    y = (f_train[:, 0] > f_train[:, 0].median()).long().numpy()
    f_train[:, 7] = 0
    f_train[0, 7] = 1e-4  # spread ~1.6e-5
    weight, bias, _ = fit_head(f_train[:32], y[:32], f_train[32:], y[32:], 2)
    assert weight[:, 7].abs().max() < 50  # ~1e4 when the spread itself standardised the feature
    new = f_train[32:].clone()
    new[:, 7] = 0.05  # the feature fires a little on new photos: the decisions must not flip
    torch.testing.assert_close((new @ weight.T + bias).argmax(1), (f_train[32:] @ weight.T + bias).argmax(1))
