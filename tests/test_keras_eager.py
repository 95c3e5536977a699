"""Eager calls of layers and models on arrays and tensors against real Keras 3 (torch backend), same weights."""
import os

import numpy as np
import pytest
import torch
from test_keras_parity import make, random_recipe, randomise

import cnnlab

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

LAYERS = [
    ("Conv2D", dict(filters=4, kernel_size=3, strides=2, padding="same", activation="relu")),
    ("Conv2D", dict(filters=3, kernel_size=(2, 3), padding="valid")),
    ("SeparableConv2D", dict(filters=3, kernel_size=3, depth_multiplier=2, padding="same")),
    ("Dense", dict(units=4, activation="tanh")),
    ("BatchNormalization", {}),
    ("MaxPooling2D", dict(pool_size=2, padding="same")),
    ("AveragePooling2D", dict(pool_size=2)),
    ("GlobalAveragePooling2D", {}),
    ("Flatten", {}),
    ("Activation", dict(activation="softmax")),
    ("Dropout", dict(rate=0.4)),
    ("Rescaling", dict(scale=0.5, offset=-1.0)),
    ("RandomFlip", {}),
]


@pytest.mark.parametrize("kind,kwargs", LAYERS, ids=[k for k, _ in LAYERS])
def test_layer_called_on_an_array_equals_keras(kind, kwargs):
    x = np.random.default_rng(0).random((2, 7, 9, 3), dtype=np.float32) * 4
    theirs, ours = getattr(keras.layers, kind)(**kwargs), getattr(cnnlab.layers, kind)(**kwargs)
    expected = theirs(x)  # builds it
    rng = np.random.default_rng(1)
    theirs.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in theirs.get_weights()])
    expected = np.asarray(theirs(x, training=False).detach().cpu())
    ours(torch.as_tensor(x))  # a tensor builds it as an array does
    ours.set_weights(theirs.get_weights())
    got = ours(x, training=False)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_merge_layers_called_on_arrays_equal_keras():
    rng = np.random.default_rng(2)
    a, b = rng.random((2, 4, 4, 3), dtype=np.float32), rng.random((2, 4, 4, 3), dtype=np.float32)
    for kind in ("Add", "Concatenate"):
        expected = np.asarray(getattr(keras.layers, kind)()([a, b]).cpu())
        np.testing.assert_allclose(np.asarray(getattr(cnnlab.layers, kind)()([a, b])), expected, rtol=1e-6)


def test_training_true_drops_and_flips():
    x = np.ones((4, 6, 6, 2), np.float32)
    dropped = cnnlab.layers.Dropout(0.5)(x, training=True)
    assert set(np.unique(np.asarray(dropped))) == {0.0, 2.0}  # kept values scaled by 1 / (1 - rate), as Keras's
    np.testing.assert_array_equal(np.asarray(cnnlab.layers.Dropout(0.5)(x)), x)
    image = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5, 1)
    torch.manual_seed(0)
    flipped = np.asarray(cnnlab.layers.RandomFlip("horizontal")(np.repeat(image[:1], 16, 0), training=True))
    assert any(np.array_equal(f, image[0, :, ::-1]) for f in flipped)
    assert any(np.array_equal(f, image[0]) for f in flipped)


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_model_called_on_an_array_equals_keras(seed):
    recipe = random_recipe(seed)
    kmodel, ours = make(keras, recipe), make(cnnlab, recipe)
    randomise(kmodel, seed)
    for layer in kmodel.layers:
        ours.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(seed).random((3, *recipe[0]), dtype=np.float32)
    theirs = kmodel(x, training=False)
    mine = ours(x, training=False)
    theirs, mine = (theirs, mine) if isinstance(mine, list) else ([theirs], [mine])
    for a, b in zip(theirs, mine):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a.detach().cpu()), rtol=1e-5, atol=1e-5)


def test_augmentation_model_keeps_pixel_values():
    aug = cnnlab.Sequential([cnnlab.layers.RandomFlip("horizontal"), cnnlab.layers.RandomRotation(0.1)])
    images = np.random.default_rng(0).integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(aug(images, training=False)), images.astype(np.float32), atol=1e-4)
    for turned in (np.asarray(aug(images, training=True)), np.asarray(aug(images))):  # Keras 3 augments by default
        assert turned.shape == images.shape and 100 < turned.max() <= 255.01
        assert not np.allclose(turned, images)
    np.testing.assert_array_equal(np.asarray(cnnlab.layers.Dropout(0.5)(images)), images)  # dropout does not
