"""explain.py against hand-written torch.nn.functional computations from the same weights."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.explain.maps import conv_layers, feature_maps, filters, grad_cam, layer_kind, saliency, top_losses


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread while these tests run (their reductions then match the hand computations' order);
    the process's own setting comes back after, so later tests train as the CLI does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_cnn(in_ch: int = 1, seed: int = 0) -> nn.Sequential:
    """Keras-named children as the core builds them: conv children carry padding + activation."""
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv2d=nn.Sequential(nn.Conv2d(in_ch, 4, 3), nn.ReLU()),
            max_pooling2d=nn.MaxPool2d(2),
            conv2d_1=nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(4, 6, 3), nn.ReLU()),
            batch_normalization=nn.BatchNorm2d(6),
            dropout=nn.Dropout(0.5),
            flatten=nn.Flatten(),
            dense=nn.Linear(6 * 5 * 5, 10),
        )
    )


def image(seed: int = 1, shape=(12, 12)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def reference_maps(model: nn.Sequential, img: np.ndarray) -> dict[str, torch.Tensor]:
    """The same forward pass written out with F.* from the raw weights (eval mode)."""
    x = torch.from_numpy(img.astype(np.float32) / 255)[None, None]
    c0, c1, bn = model.conv2d[0], model.conv2d_1[1], model.batch_normalization
    a = F.relu(F.conv2d(x, c0.weight, c0.bias))
    p = F.max_pool2d(a, 2)
    b = F.relu(F.conv2d(F.pad(p, (1, 1, 1, 1)), c1.weight, c1.bias))
    n = F.batch_norm(b, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
    return {"conv2d": a, "max_pooling2d": p, "conv2d_1": b, "batch_normalization": n}


def as_hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).detach().numpy()


def test_layer_names():
    assert layer_kind("conv2d_12") == "conv2d"
    assert layer_kind("max_pooling2d") == "max_pooling2d"
    assert conv_layers(small_cnn()) == ["conv2d", "conv2d_1"]


def test_feature_maps_equal_manual_forward():
    model = small_cnn()
    with torch.no_grad():  # give batch norm non-trivial running statistics
        model.batch_normalization.running_mean.uniform_(-0.5, 0.5)
        model.batch_normalization.running_var.uniform_(0.5, 2.0)
    model.train()  # feature_maps must use inference behaviour and restore this mode
    img = image()
    maps = feature_maps(model, img)
    ref = reference_maps(model, img)
    assert [n for n, _ in maps] == list(ref)  # dropout and flat layers left out
    for name, arr in maps:
        assert arr.shape == as_hwc(ref[name]).shape
        np.testing.assert_allclose(arr, as_hwc(ref[name]), rtol=1e-5, atol=1e-6)
    assert maps[0][1].shape == (10, 10, 4)
    assert all(m.training for m in model.modules())


def test_feature_maps_input_forms_agree():
    model = small_cnn()
    img = image()
    base = feature_maps(model, img, ["conv2d"])[0][1]
    as_float = img.astype(np.float32) / 255
    for x in (img[:, :, None], img[None, :, :, None], as_float, torch.from_numpy(as_float)[None]):
        np.testing.assert_allclose(feature_maps(model, x, "conv2d")[0][1], base, rtol=1e-6)


def test_feature_maps_rgb_channels_last():
    model = small_cnn(in_ch=3)
    img = image(shape=(12, 12, 3))
    got = feature_maps(model, img, ["conv2d"])[0][1]
    x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    want = F.relu(F.conv2d(x, model.conv2d[0].weight, model.conv2d[0].bias))
    np.testing.assert_allclose(got, as_hwc(want), rtol=1e-5, atol=1e-6)


def test_feature_maps_bad_requests():
    model = small_cnn()
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        feature_maps(model, image(), ["conv9"])
    with pytest.raises(ValueError, match="not a spatial map"):
        feature_maps(model, image(), ["dense"])
    with pytest.raises(ValueError, match="channel"):
        feature_maps(model, image(shape=(12, 12, 3)))
    with pytest.raises(ValueError, match="one image"):
        feature_maps(model, np.zeros((2, 12, 12, 1), np.uint8))


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_no_hooks_left_behind_even_when_forward_raises():
    model = small_cnn()
    feature_maps(model, image())
    grad_cam(model, image())
    assert no_hooks(model)
    with pytest.raises(RuntimeError):  # 9x9 input: the dense layer gets the wrong width
        feature_maps(model, image(shape=(9, 9)))
    with pytest.raises(RuntimeError):
        grad_cam(model, image(shape=(9, 9)))
    assert no_hooks(model)


def test_filters_are_the_weights_in_keras_layout():
    model = small_cnn(in_ch=3)
    k = filters(model, "conv2d_1")
    w = model.conv2d_1[1].weight.detach().numpy()  # (out, in, kh, kw)
    assert k.shape == (3, 3, 4, 6)
    for i in range(4):
        for o in range(6):
            np.testing.assert_array_equal(k[:, :, i, o], w[o, i])
    with pytest.raises(ValueError, match="not a Conv2D layer"):
        filters(model, "max_pooling2d")


def quadrant_model() -> nn.Sequential:
    """2-channel input; class 0 = mean of channel 0 over the top-left quadrant,
    class 1 = mean of channel 1 over the bottom-right quadrant (after an identity conv + pooling)."""
    conv = nn.Conv2d(2, 2, 1)
    dense = nn.Linear(2 * 8 * 8, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
        conv.bias.zero_()
        w = torch.zeros(2, 2, 8, 8)  # (class, channel, h, w) over the pooled 8x8 map
        w[0, 0, :4, :4] = 1 / 16
        w[1, 1, 4:, 4:] = 1 / 16
        dense.weight.copy_(w.reshape(2, -1))
        dense.bias.zero_()
    return nn.Sequential(
        OrderedDict(
            conv2d=nn.Sequential(conv, nn.ReLU()),
            max_pooling2d=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            dense=dense,
        )
    )


def quadrant_image() -> np.ndarray:
    img = np.zeros((16, 16, 2), np.uint8)
    img[2:6, 1:7, 0] = 255  # evidence for class 0, top-left
    img[9:14, 10:15, 1] = 200  # evidence for class 1, bottom-right
    return img


def test_grad_cam_peaks_in_the_region_the_class_reads():
    model, img = quadrant_model(), quadrant_image()
    for cls, (rows, cols) in ((0, (slice(0, 8), slice(0, 8))), (1, (slice(8, 16), slice(8, 16)))):
        cam = grad_cam(model, img, class_index=cls)
        assert cam.shape == (16, 16) and cam.dtype == np.float32
        assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
        r, c = np.unravel_index(cam.argmax(), cam.shape)
        assert rows.start <= r < rows.stop and cols.start <= c < cols.stop
        outside = np.ones_like(cam, bool)
        outside[rows, cols] = False
        assert cam[outside].max() < 0.5 * cam.max()
    # default class: the predicted one (class 0: 8/16 pooled cells at 1.0 > class 1: 9/16 at 0.78)
    np.testing.assert_array_equal(grad_cam(model, img), grad_cam(model, img, class_index=0))


def test_grad_cam_equals_reference_without_hooks():
    """Grad-CAM from hooks vs. running the children by hand and differentiating the cut tensor."""
    model = small_cnn().eval()
    img = image(shape=(12, 12))
    got = grad_cam(model, img)
    assert all(p.grad is None for p in model.parameters())  # explaining leaves no gradients behind
    x = torch.from_numpy(img.astype(np.float32) / 255)[None, None]
    children = list(model.named_children())
    cut = [n for n, _ in children].index("conv2d_1") + 1
    acts = nn.Sequential(OrderedDict(children[:cut]))(x).detach().requires_grad_(True)
    logits = nn.Sequential(OrderedDict(children[cut:]))(acts)
    cls = int(logits.argmax())
    (grads,) = torch.autograd.grad(logits[0, cls], acts)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(12, 12), mode="bilinear", align_corners=False)[0, 0]
    want = (cam / cam.max()).detach().numpy() if cam.max() > 0 else np.zeros((12, 12))
    assert want.max() == pytest.approx(1.0)  # a non-trivial map, so the comparison means something
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_saliency_of_a_linear_model_is_its_weights():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(flatten=nn.Flatten(), dense=nn.Linear(3 * 5 * 5, 4)))
    img = image(shape=(5, 5, 3))
    sal = saliency(model, img, class_index=2)
    w = model.dense.weight[2].detach().reshape(3, 5, 5).abs().amax(0).numpy()
    np.testing.assert_allclose(sal, w, rtol=1e-6)
    with pytest.raises(ValueError, match="class_index"):
        saliency(model, img, class_index=4)


def test_top_losses_brute_force():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(200, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 5, 200)
    top = top_losses(probs, y, k=7)
    wrong = [(-np.log(probs[i, y[i]]), i) for i in range(200) if probs[i].argmax() != y[i]]
    want = [i for _, i in sorted(wrong, key=lambda t: (-t[0], t[1]))[:7]]
    assert top.index.tolist() == want and len(top) == 7
    np.testing.assert_array_equal(top.y_true, y[want])
    np.testing.assert_array_equal(top.y_pred, probs[want].argmax(1))
    np.testing.assert_allclose(top.prob, probs[want].max(1))
    assert np.all(np.diff(top.loss) <= 0)
    assert len(top_losses(np.eye(3), np.arange(3), k=5)) == 0  # nothing wrong
