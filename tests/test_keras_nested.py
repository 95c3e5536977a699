"""Models as layers (Keras's nested models) against real Keras 3 (torch backend): summaries, trainable counts,
outputs for the same weights, shared sub-networks, and files."""
import os

import numpy as np
import pytest
from test_keras_parity import keras_summary, ours_summary

import cnnlab

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning",
                                        "ignore:Do not pass an `input_shape`")


def augmented_convnet(lib, frozen_block=False):
    layers = lib.layers
    aug = lib.Sequential([layers.RandomFlip("horizontal"), layers.RandomZoom(0.2)], name="augmentation")
    block_in = lib.Input((14, 14, 4))
    y = layers.Conv2D(6, 3, padding="same", activation="relu")(block_in)
    y = layers.BatchNormalization()(y)
    block = lib.Model(block_in, layers.MaxPooling2D()(y), name="block")
    if frozen_block:
        block.trainable = False
    inputs = lib.Input((16, 16, 3))
    x = aug(inputs)
    x = layers.Conv2D(4, 3, activation="relu")(x)
    x = block(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(3, activation="softmax")(x)
    return lib.Model(inputs, outputs)


def shared_siamese(lib):
    layers = lib.layers
    tower = lib.Sequential([lib.Input((10, 10, 1)), layers.Conv2D(3, 3, activation="relu"),
                            layers.GlobalAveragePooling2D()], name="tower")
    a, b = lib.Input((10, 10, 1), name="left"), lib.Input((10, 10, 1), name="right")
    joined = layers.Concatenate()([tower(a), tower(b)])
    return lib.Model([a, b], layers.Dense(1, activation="sigmoid")(joined))


def pair(build, **kw):
    cnnlab.backend.clear_session()
    keras.backend.clear_session()
    theirs, ours = build(keras, **kw), build(cnnlab, **kw)
    rng = np.random.default_rng(0)
    theirs.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if "variance" in w.path
                        else rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in theirs.weights])
    ours.set_weights(theirs.get_weights())
    return theirs, ours


@pytest.mark.parametrize("frozen", [False, True])
def test_nested_models_summary_weights_and_outputs_equal_keras(frozen, capsys):
    theirs, ours = pair(augmented_convnet, frozen_block=frozen)
    assert ours_summary(ours) == keras_summary(theirs)
    assert [w.name for w in ours.trainable_weights] == [w.name for w in theirs.trainable_weights]
    assert [x.name for x in ours.layers] == [x.name for x in theirs.layers]
    assert [x.name for x in ours.get_layer("block").layers] == [x.name for x in theirs.get_layer("block").layers]
    theirs.summary()
    expected = capsys.readouterr().out
    ours.summary()
    assert capsys.readouterr().out == expected
    x = np.random.default_rng(1).random((4, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ours(x, training=False)), np.asarray(theirs(x, training=False).detach()),
                               rtol=1e-5, atol=1e-6)


def test_shared_sub_network_called_twice_equals_keras():
    theirs, ours = pair(shared_siamese)
    assert ours_summary(ours) == keras_summary(theirs)
    assert ours.spec.connections("tower") == ["left[0][0]", "right[0][0]"]  # one row, both calls
    rng = np.random.default_rng(2)
    x = [rng.random((3, 10, 10, 1), dtype=np.float32), rng.random((3, 10, 10, 1), dtype=np.float32)]
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_nested_models_save_and_load(tmp_path):
    _, ours = pair(augmented_convnet, frozen_block=True)
    x = np.random.default_rng(3).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    ours.save(tmp_path / "m.safetensors")
    back = cnnlab.models.load_model(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(back.predict(x), ours.predict(x))
    assert ours_summary(back) == ours_summary(ours)
    assert not back.get_layer("block").trainable and back.get_layer("augmentation").layers[0].name == "random_flip"


def test_sequential_takes_a_model_as_a_layer():
    def build(lib):
        base = lib.Sequential([lib.Input((8, 8, 2)), lib.layers.Conv2D(3, 3)], name="base")
        return lib.Sequential([base, lib.layers.Flatten(), lib.layers.Dense(2)])
    theirs, ours = pair(build)
    assert ours_summary(ours) == keras_summary(theirs)
    x = np.random.default_rng(4).random((2, 8, 8, 2), dtype=np.float32)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_keras_file_of_a_nested_model_says_why_not(tmp_path):
    _, ours = pair(augmented_convnet)
    with pytest.raises(ValueError, match=r"holds? other models.*\.safetensors"):
        ours.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()
