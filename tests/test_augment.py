"""Augmentation against exact references: torch.flip, torch.rot90, integer shifts, and range checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnlab.train.augment import PRESETS, AugmentOptions, affine, augment_batch
from cnnlab.train.config import TrainConfig
from cnnlab.train.fit import fit


def _batch(n: int = 3, c: int = 2, h: int = 8, w: int = 12) -> torch.Tensor:
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(1))


def _params(n: int, angle: float = 0.0, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0, flip: bool = False):
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return full(angle), full(scale), full(dx), full(dy), torch.full((n,), flip)


def test_identity_transform_returns_the_input():
    x = _batch()
    torch.testing.assert_close(affine(x, *_params(3)), x, atol=1e-6, rtol=0)


def test_flip_matches_torch_flip():
    x = _batch()
    torch.testing.assert_close(affine(x, *_params(3, flip=True)), torch.flip(x, dims=[3]), atol=1e-6, rtol=0)


def test_integer_shift_moves_pixels_and_fills_zeros():
    x = _batch()
    out = affine(x, *_params(3, dx=2, dy=-1), fill="zeros")
    expected = torch.zeros_like(x)
    expected[:, :, :-1, 2:] = x[:, :, 1:, :-2]  # right by 2, up by 1
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_quarter_turn_of_a_non_square_image_matches_rot90_in_the_centre():
    x = _batch(h=8, w=12)
    out = affine(x, *_params(3, angle=math.pi / 2))
    centre = x[:, :, :, 2:10]  # the 8x8 square around the centre turns onto itself
    torch.testing.assert_close(out[:, :, :, 2:10], torch.rot90(centre, k=-1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_zoom_two_times_matches_bilinear_upsampling_of_the_centre():
    x = torch.zeros((1, 1, 16, 16))
    x[0, 0, 6:10, 5:9] = torch.rand((4, 4), generator=torch.Generator().manual_seed(0))
    out = affine(x, *_params(1, scale=2.0), fill="zeros")
    centre = x[:, :, 4:12, 4:12]  # zero margins, so interpolate's edge clamping changes nothing
    expected = torch.nn.functional.interpolate(centre, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_random_batch_is_seeded_and_stays_within_its_limits():
    x = torch.zeros((64, 1, 20, 20))
    x[:, 0, 10, 10] = 1.0
    options = AugmentOptions(shift=0.2, fill="zeros")  # at most 4 pixels either way
    a = augment_batch(x, options, torch.Generator().manual_seed(3))
    b = augment_batch(x, options, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    ys, xs = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    mass = a[:, 0].sum((1, 2))
    cy, cx = (a[:, 0] * ys).sum((1, 2)) / mass, (a[:, 0] * xs).sum((1, 2)) / mass
    assert torch.allclose(mass, torch.ones(64), atol=1e-4)  # bilinear shifts keep the dot's mass inside
    assert (cy - 10).abs().max() <= 4 + 1e-4 and (cx - 10).abs().max() <= 4 + 1e-4
    assert (cx - 10).abs().max() > 2 and len(torch.unique(cx.round(decimals=3))) > 32  # each image differs


def test_brightness_and_contrast_keep_shape_and_range():
    x = _batch(n=32, c=3)
    out = augment_batch(x, AugmentOptions(brightness=0.3, contrast=0.5), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    only_bright = augment_batch(x * 0.2 + 0.4, AugmentOptions(brightness=0.3), torch.Generator().manual_seed(0))
    delta = only_bright - (x * 0.2 + 0.4)
    torch.testing.assert_close(delta, delta[:, :1, :1, :1].expand_as(delta), atol=1e-6, rtol=0)  # one offset per image


def test_options_are_checked_and_presets_are_valid():
    with pytest.raises(ValueError, match="rotation must be degrees"):
        AugmentOptions(rotation=200)
    with pytest.raises(ValueError, match="shift must be a fraction"):
        AugmentOptions(shift=1.5)
    assert not PRESETS["digits"].horizontal_flip and PRESETS["photos"].horizontal_flip
    assert TrainConfig(augment={"rotation": 5}).augment == AugmentOptions(rotation=5)


def _blobs(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Two classes a linear model tells apart: a bright top half, or a bright bottom half."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, 8, 8, 1)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, slice(0, 4) if label == 0 else slice(4, 8)] += 150
    return x, y.astype(np.int64)


def test_fit_runs_with_augmentation_and_class_weights_steer_the_loss():
    x, y = _blobs()
    net = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))  # noqa: E731
    augmented = fit(net(), x, y, TrainConfig(epochs=1, batch_size=32, device="cpu", augment=PRESETS["digits"]))
    assert math.isfinite(augmented.history["loss"][0])
    module = net()
    fit(module, x, y, TrainConfig(epochs=3, batch_size=32, device="cpu", lr=0.05, class_weight=(0.0, 1.0)))
    with torch.no_grad():
        pred = module(torch.as_tensor(x).permute(0, 3, 1, 2).float() / 255).argmax(1)
    assert (pred == 1).all()  # class 0 costs nothing to get wrong, so everything becomes class 1
    with pytest.raises(ValueError, match="class_weight"):
        TrainConfig(class_weight={1: 1.0})
