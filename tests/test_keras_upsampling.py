"""Conv2DTranspose and UpSampling2D against real Keras 3 (torch backend): outputs for the same weights, summaries
of seeded random encoder-decoder models, .keras files both ways, and their compact tokens."""
import os
import random

import numpy as np
import pytest
from test_keras_parity import keras_summary, ours_summary, randomise

import cnnlab
from cnnlab.spec import compact

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TRANSPOSE = [(k, s, pad) for k in (1, 2, 3, 4, 5) for s in (1, 2, 3) for pad in ("valid", "same")]


@pytest.mark.parametrize("k,s,pad", TRANSPOSE)
def test_conv2d_transpose_equals_keras(k, s, pad):
    x = np.random.default_rng(k * 10 + s).random((2, 5, 6, 3), dtype=np.float32)
    kwargs = dict(filters=4, kernel_size=k, strides=s, padding=pad, activation="relu")
    theirs, ours = keras.layers.Conv2DTranspose(**kwargs), cnnlab.layers.Conv2DTranspose(**kwargs)
    theirs(x)
    rng = np.random.default_rng(0)
    theirs.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in theirs.get_weights()])
    ours(x)
    ours.set_weights(theirs.get_weights())
    expected = np.asarray(theirs(x).detach().cpu())
    got = np.asarray(ours(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size,interpolation", [(2, "nearest"), ((2, 3), "nearest"), (2, "bilinear"), ((3, 2), "bilinear")])
def test_upsampling2d_equals_keras(size, interpolation):
    x = np.random.default_rng(1).random((2, 4, 5, 3), dtype=np.float32)
    expected = np.asarray(keras.layers.UpSampling2D(size, interpolation=interpolation)(x).cpu())
    np.testing.assert_allclose(np.asarray(cnnlab.layers.UpSampling2D(size, interpolation=interpolation)(x)), expected,
                               atol=1e-5, rtol=1e-5)


def random_decoder(seed):
    """(input shape, [(layer class, kwargs)]) of a small encoder-decoder whose last layer is a per-pixel softmax."""
    rnd = random.Random(seed)
    side = h = w = rnd.choice([8, 9, 12])
    ops = []
    for _ in range(rnd.randint(2, 5)):
        kind = rnd.choice(["conv", "pool", "tconv", "tconv", "up", "norm"])
        if kind == "conv":
            ops.append(("Conv2D", dict(filters=rnd.randint(2, 5), kernel_size=3, padding="same",
                                       activation=rnd.choice(["relu", None]))))
        elif kind == "pool" and min(h, w) >= 4:
            ops.append(("MaxPooling2D", dict(pool_size=2, padding="same")))
            h, w = -(-h // 2), -(-w // 2)
        elif kind == "tconv":
            k, s, pad = rnd.choice([2, 3, 4]), rnd.choice([1, 2]), rnd.choice(["same", "valid"])
            ops.append(("Conv2DTranspose", dict(filters=rnd.randint(2, 5), kernel_size=k, strides=s, padding=pad,
                                                activation=rnd.choice(["relu", None]), use_bias=rnd.random() < 0.8)))
            h, w = (h * s, w * s) if pad == "same" else ((h - 1) * s + k, (w - 1) * s + k)
        elif kind == "up" and h < 40:
            size = rnd.choice([2, (2, 1)])
            ops.append(("UpSampling2D", dict(size=size, interpolation=rnd.choice(["nearest", "bilinear"]))))
            h, w = h * 2, w * (2 if size == 2 else 1)
        elif kind == "norm":
            ops.append(("BatchNormalization", {}))
    ops.append(("Conv2D", dict(filters=3, kernel_size=1, activation="softmax")))
    return (side, side, rnd.randint(1, 3)), ops


def build(lib, seed):
    shape, ops = random_decoder(seed)
    lib.backend.clear_session()
    if seed % 2:
        model = lib.Sequential([lib.Input(shape)])
        for kind, kw in ops:
            model.add(getattr(lib.layers, kind)(**kw))
        return model, shape
    x = inputs = lib.Input(shape)
    for kind, kw in ops:
        x = getattr(lib.layers, kind)(**kw)(x)
    return lib.Model(inputs, x), shape


@pytest.mark.parametrize("seed", range(32))
def test_random_decoders_summaries_and_outputs_equal_keras(seed):
    (kmodel, shape), (ours, _) = build(keras, seed), build(cnnlab, seed)
    assert ours_summary(ours) == keras_summary(kmodel)
    randomise(kmodel, seed)
    for layer in kmodel.layers:
        ours.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(seed).random((2, *shape), dtype=np.float32)
    np.testing.assert_allclose(ours.predict(x), kmodel.predict(x, verbose=0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 3])
def test_keras_files_with_the_new_layers_both_ways(seed, tmp_path):
    (kmodel, shape), (ours, _) = build(keras, seed), build(cnnlab, seed)
    randomise(kmodel, seed)
    x = np.random.default_rng(seed).random((2, *shape), dtype=np.float32)
    kmodel.save(tmp_path / "k.keras")
    loaded = cnnlab.models.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(loaded.predict(x), kmodel.predict(x, verbose=0), atol=1e-5)
    for layer in kmodel.layers:
        ours.get_layer(layer.name).set_weights(layer.get_weights())
    ours.save(tmp_path / "c.keras")
    back = keras.models.load_model(tmp_path / "c.keras")
    np.testing.assert_allclose(back.predict(x, verbose=0), ours.predict(x), atol=1e-5)


def test_compact_tokens_round_trip():
    text = "in16x16x3 conv8k3same:relu max2 tconv8k3s2same:relu up2bilinear tconv4k2x3s2nobias up2x1 conv3k1:softmax"
    spec = compact.parse(text)
    assert compact.format(spec) == text
    assert spec.shapes()[-1] == (128, 65, 3)  # 16 -> 8 -> 16 -> 32 -> (64, 65) -> (128, 65)
    with pytest.raises(cnnlab.spec.layers.SpecError, match="UpSampling2D interpolation"):
        cnnlab.layers.UpSampling2D(2, interpolation="cubic")
