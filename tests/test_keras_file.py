"""Keras 3 .keras files, checked against real Keras: cnnlab -> Keras, Keras -> cnnlab, layout, random models both
ways (what cnnlab refuses to read: tests/test_keras_file_refusals.py)."""
import dataclasses
import json
import random
import zipfile

import h5py
import numpy as np
import pytest
import torch
from keras_file_support import ATOL, LECTURE, _cnnlab_model, _images, _randomise_keras, keras

from cnnlab.models import load_model as load_keras_model
from cnnlab.runs.keras_file import load_keras, save_keras
from cnnlab.spec import layers as L
from cnnlab.spec.conv_arithmetic import same_padding

# Keras's torch backend converts tensors with np.array(x, copy=False), which numpy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ACTS = ["relu", None, "sigmoid", "tanh", "gelu", "elu", "selu", "silu", "leaky_relu"]


def _unnamed(spec: L.ModelSpec) -> list[L.Layer]:
    """Layers without names; pooling strides equal to the pool size read back as None (Keras writes both)."""
    out = []
    for layer in spec.layers:
        if isinstance(layer, L._Pooling2D) and layer.strides == layer.pool_size:
            layer = dataclasses.replace(layer, strides=None)
        out.append(dataclasses.replace(layer, name=None))
    return out


def _cnnlab_to_keras(spec, tmp_path, seed=0):
    """Save a cnnlab model, open it in Keras: both predictions on the same images."""
    model = _cnnlab_model(spec, seed)
    path = save_keras(model.spec, model.module, tmp_path / "m.keras", name=model.name)
    x = _images(spec.input_shape, seed=seed)
    return model.predict(x), np.asarray(keras.models.load_model(path).predict(x, verbose=0))


# --- (a) cnnlab -> Keras ---------------------------------------------------------------------
def test_cnnlab_model_opens_in_keras_with_equal_predictions(tmp_path):
    ours, theirs = _cnnlab_to_keras(LECTURE, tmp_path)
    assert ours.shape == theirs.shape == (5, 4)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(theirs.sum(1), 1, atol=1e-5)  # probabilities on both sides


def test_a_model_that_starts_with_rescaling_saves_and_opens_in_keras(tmp_path):
    """The lecture's first layer: Rescaling(1/255) on 0-255 pixels, in a .keras file both libraries read alike."""
    spec = L.ModelSpec((L.Rescaling(1 / 255), *LECTURE.layers), LECTURE.input_shape)
    model = _cnnlab_model(spec)
    path = save_keras(model.spec, model.module, tmp_path / "m.keras", name=model.name)
    pixels = (_images(spec.input_shape) * 255).astype(np.uint8)
    theirs = np.asarray(keras.models.load_model(path).predict(pixels.astype(np.float32), verbose=0))
    np.testing.assert_allclose(model.predict(pixels), theirs, atol=ATOL, rtol=0)
    assert load_keras(path).spec == model.spec and load_keras_model(path).predict(pixels).shape == (5, 4)


def test_a_layer_keras_files_do_not_hold_yet_is_one_line_naming_it(tmp_path):
    spec = L.ModelSpec((L.RandomFlip("horizontal"), *LECTURE.layers), LECTURE.input_shape)
    model = _cnnlab_model(spec)
    with pytest.raises(ValueError, match=r"cannot hold the RandomFlip layer 'random_flip' .*\.safetensors") as info:
        save_keras(model.spec, model.module, tmp_path / "m.keras")
    assert "\n" not in str(info.value) and not (tmp_path / "m.keras").exists()


def test_round_trip_keeps_spec_weights_names_and_class_names(tmp_path):
    model = _cnnlab_model(LECTURE)
    path = save_keras(model.spec, model.module, tmp_path / "m.keras", class_names=list("wxyz"), name="lecture")
    back = load_keras(path)
    assert back.spec == model.spec and back.name == "lecture" and back.class_names == list("wxyz")
    for key, tensor in model.module.state_dict().items():
        assert torch.equal(back.state[key], tensor), key
    reloaded = load_keras_model(path)
    assert reloaded.class_names == list("wxyz")
    x = _images(LECTURE.input_shape)
    np.testing.assert_allclose(reloaded.predict(x), model.predict(x), atol=1e-6, rtol=0)


def test_file_layout_is_what_keras_writes(tmp_path):
    """Same layers, same names: cnnlab's config.json and HDF5 tree equal Keras's own."""
    kmodel = keras.Sequential([keras.Input((14, 14, 3)), *[_keras_layer(layer, name) for layer, name in
                                                            zip(LECTURE.layers, LECTURE.names)]])
    kmodel.save(tmp_path / "k.keras")
    model = _cnnlab_model(LECTURE)
    save_keras(model.spec, model.module, tmp_path / "c.keras", name=kmodel.name)

    def contents(path):
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read("config.json"), object_hook=lambda d: {
                k: v for k, v in d.items() if k != "shared_object_id"})
            with h5py.File(zf.open("model.weights.h5"), "r") as f:
                tree = []
                f.visititems(lambda name, obj: tree.append((name, dict(obj.attrs), getattr(obj, "shape", None))))
            return zf.namelist(), config, tree, json.loads(zf.read("metadata.json"))

    k_names, k_config, k_tree, k_meta = contents(tmp_path / "k.keras")
    c_names, c_config, c_tree, c_meta = contents(tmp_path / "c.keras")
    assert c_names == k_names == ["metadata.json", "config.json", "model.weights.h5"]
    k_config["config"]["layers"][0]["config"]["name"] = "input_layer"  # Keras numbers it per session
    assert c_config == k_config
    assert c_tree == k_tree
    assert set(c_meta) == set(k_meta) == {"keras_version", "date_saved"}


def test_save_is_atomic_and_checks_the_suffix(tmp_path):
    model = _cnnlab_model(LECTURE)
    with pytest.raises(ValueError, match=r"\.keras.*m\.h5"):
        save_keras(model.spec, model.module, tmp_path / "m.h5")
    save_keras(model.spec, model.module, tmp_path / "m.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]  # no temporary file left behind


# --- (b) Keras -> cnnlab ---------------------------------------------------------------------
def test_keras_model_loads_in_cnnlab_with_equal_predictions(tmp_path):
    kl = keras.layers
    kmodel = keras.Sequential([
        keras.Input((16, 16, 3)),
        kl.Conv2D(6, 3, padding="same", activation="relu"), kl.BatchNormalization(),
        kl.Conv2D(8, (3, 2), strides=(2, 1), padding="valid"), kl.Activation("tanh"),
        kl.MaxPooling2D(), kl.Conv2D(8, 3, strides=2, padding="same", activation="elu"),
        kl.AveragePooling2D(pool_size=2, strides=1, padding="same"),
        kl.Flatten(), kl.BatchNormalization(), kl.Dropout(0.5), kl.Dense(12, activation="relu"),
        kl.Dense(5), kl.Activation("softmax")])
    _randomise_keras(kmodel, 1)
    kmodel.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    kmodel.save(tmp_path / "k.keras")
    x = _images((16, 16, 3))
    ours = load_keras_model(tmp_path / "k.keras")
    assert [layer.name for layer in kmodel.layers] == list(ours.spec.names)
    np.testing.assert_allclose(ours.predict(x), np.asarray(kmodel.predict(x, verbose=0)), atol=ATOL, rtol=0)


def test_keras_global_pooling_model_loads(tmp_path):
    kl = keras.layers
    kmodel = keras.Sequential([keras.Input((9, 9, 2)), kl.Conv2D(4, 3, activation="gelu"),
                               kl.GlobalAveragePooling2D(), kl.Dropout(0.1), kl.Dense(3, activation="softmax")])
    _randomise_keras(kmodel, 2)
    kmodel.save(tmp_path / "k.keras")
    x = _images((9, 9, 2))
    np.testing.assert_allclose(load_keras_model(tmp_path / "k.keras").predict(x),
                               np.asarray(kmodel.predict(x, verbose=0)), atol=ATOL, rtol=0)


# --- (c) random architectures, both ways --------------------------------------------------------
def _uneven_same(pool: L._Pooling2D, shape: L.Shape) -> bool:
    """Whether 'same' pads one side more than the other. There Keras's torch backend pads by repeating the
    edge and averages the copies too; TensorFlow, JAX and cnnlab average the real pixels only."""
    sides = [same_padding(n, k, s) for n, k, s in zip(shape[:2], pool.pool_size, pool.stride_pair)]
    return pool.padding == "same" and any(before != after for before, after in sides)


def random_spec(seed: int) -> L.ModelSpec:
    """A small valid Sequential image classifier drawn from every layer type cnnlab has."""
    rnd = random.Random(seed)
    shape = (rnd.randint(6, 12), rnd.randint(6, 12), rnd.randint(1, 3))
    start, layers = shape, []

    def add(layer: L.Layer) -> None:
        nonlocal shape
        try:
            new = layer.output_shape(shape)
        except L.SpecError:
            return
        layers.append(layer)
        shape = new

    for _ in range(rnd.randint(1, 5)):
        kind = rnd.choice(["conv", "conv", "pool", "norm", "act", "drop", "dense"])
        if kind == "conv":
            add(L.Conv2D(rnd.randint(2, 6), (rnd.randint(1, 3), rnd.randint(1, 3)), (rnd.randint(1, 2),) * 2,
                         rnd.choice(["valid", "same"]), rnd.choice(ACTS), rnd.random() < 0.8))
        elif kind == "pool":
            cls = rnd.choice([L.MaxPooling2D, L.AveragePooling2D])
            pool = cls((rnd.randint(2, 3),) * 2, rnd.choice([None, (1, 1), (2, 2), (1, 2)]),
                       rnd.choice(["valid", "same"]))
            if not (isinstance(pool, L.AveragePooling2D) and _uneven_same(pool, shape)):
                add(pool)
        elif kind == "norm":
            add(L.BatchNormalization(momentum=rnd.choice([0.9, 0.99]), epsilon=rnd.choice([1e-3, 1e-5])))
        elif kind == "act":
            add(L.Activation(rnd.choice([a for a in ACTS if a])))
        elif kind == "drop":
            add(L.Dropout(rnd.choice([0.1, 0.5])))
        else:  # Dense on an image: a map of the channel axis
            add(L.Dense(rnd.randint(2, 5), rnd.choice(ACTS)))
    add(rnd.choice([L.Flatten(), L.GlobalAveragePooling2D()]))
    for _ in range(rnd.randint(0, 3)):
        add(rnd.choice([L.BatchNormalization(), L.Dropout(0.2), L.Activation(rnd.choice(ACTS[:4]) or "linear"),
                        L.Dense(rnd.randint(3, 8), rnd.choice(ACTS))]))
    if rnd.random() < 0.5:
        add(L.Dense(rnd.randint(2, 5), "softmax"))
    else:
        add(L.Dense(rnd.randint(2, 5)))
        add(rnd.choice([L.Activation("softmax"), L.Activation("linear"), L.Dropout(0.3)]))
    return L.ModelSpec(tuple(layers), start)


def _keras_layer(layer: L.Layer, name: str | None = None):
    """The Keras layer for a cnnlab spec, built from Keras's own constructors (not from cnnlab's config)."""
    kl, kw = keras.layers, {"name": name} if name else {}
    if isinstance(layer, L.Conv2D):
        return kl.Conv2D(layer.filters, layer.kernel_size, layer.strides, layer.padding,
                         activation=layer.activation, use_bias=layer.use_bias, **kw)
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
        return getattr(kl, layer.type)(layer.pool_size, layer.strides, layer.padding, **kw)
    if isinstance(layer, L.Dense):
        return kl.Dense(layer.units, activation=layer.activation, use_bias=layer.use_bias, **kw)
    if isinstance(layer, L.BatchNormalization):
        return kl.BatchNormalization(momentum=layer.momentum, epsilon=layer.epsilon, **kw)
    if isinstance(layer, L.Dropout):
        return kl.Dropout(layer.rate, **kw)
    if isinstance(layer, L.Activation):
        return kl.Activation(layer.activation, **kw)
    return getattr(kl, layer.type)(**kw)  # Flatten, GlobalAveragePooling2D


@pytest.mark.parametrize("seed", range(12))
def test_random_cnnlab_models_open_in_keras(seed, tmp_path):
    ours, theirs = _cnnlab_to_keras(random_spec(seed), tmp_path, seed)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", range(12, 24))
def test_random_keras_models_load_in_cnnlab(seed, tmp_path):
    spec = random_spec(seed)
    kmodel = keras.Sequential([keras.Input(spec.input_shape), *map(_keras_layer, spec.layers)])
    _randomise_keras(kmodel, seed)
    kmodel.save(tmp_path / "k.keras")
    loaded = load_keras(tmp_path / "k.keras")
    assert _unnamed(loaded.spec) == _unnamed(spec) and loaded.spec.input_shape == spec.input_shape
    x = _images(spec.input_shape, seed=seed)
    np.testing.assert_allclose(load_keras_model(tmp_path / "k.keras").predict(x),
                               np.asarray(kmodel.predict(x, verbose=0)), atol=ATOL, rtol=0)
