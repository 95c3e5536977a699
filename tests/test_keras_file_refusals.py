"""What cnnlab refuses to read in a .keras file, each refusal one line naming the file and the reason."""
import json
import zipfile

import numpy as np
import pytest
import torch
from keras_file_support import ATOL, LECTURE, _cnnlab_model, _images, _randomise_keras, keras

from cnnlab.runs.keras_file import KerasFileError, load_keras, save_keras

# Keras's torch backend converts tensors with np.array(x, copy=False), which numpy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _keras_file(tmp_path, *layers, shape=(8, 8, 3)):
    kmodel = keras.Sequential([keras.Input(shape), *layers])
    path = tmp_path / "k.keras"
    kmodel.save(path)
    return path


def test_unknown_layer_types_are_all_named(tmp_path):
    kl = keras.layers
    path = _keras_file(tmp_path, kl.ZeroPadding2D(1), kl.Conv2D(2, 3), kl.LayerNormalization(),
                       kl.Flatten(), kl.Dense(3))
    with pytest.raises(ValueError, match=r"LayerNormalization, ZeroPadding2D") as info:
        load_keras(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("layer, option", [
    (lambda kl: kl.Conv2D(2, 3, data_format="channels_first"), "data_format='channels_first'"),
    (lambda kl: kl.Conv2D(2, 3, dilation_rate=2), "dilation_rate=[2, 2]"),
    (lambda kl: kl.Conv2D(3, 3, groups=3), "groups=3"),
    (lambda kl: kl.Conv2D(2, 3, kernel_regularizer="l2"), "kernel_regularizer="),
    (lambda kl: kl.Dense(2, kernel_constraint="non_neg"), "kernel_constraint="),
    (lambda kl: kl.Dense(2, activation="softplus"), "activation='softplus'"),
    (lambda kl: kl.BatchNormalization(center=False), "center=False"),
    (lambda kl: kl.GlobalAveragePooling2D(keepdims=True), "keepdims=True"),
    (lambda kl: kl.SeparableConv2D(2, 3, dilation_rate=2), "dilation_rate=[2, 2]"),
])
def test_options_cnnlab_cannot_honour_are_named(tmp_path, layer, option):
    path = _keras_file(tmp_path, layer(keras.layers), shape=(8, 8, 3))
    with pytest.raises(ValueError, match="Received: " + option.replace("[", r"\[")) as info:
        load_keras(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore:You are saving a model that has not yet been built")
@pytest.mark.parametrize("first", [lambda kl: [kl.Conv2D(2, 3)], lambda kl: [keras.Input((None, None, 3)), kl.Conv2D(2, 3)]])
def test_models_without_a_fixed_input_shape_are_refused(tmp_path, first):
    kmodel = keras.Sequential([*first(keras.layers), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    kmodel.save(tmp_path / "k.keras")
    with pytest.raises(ValueError, match=r"k.keras.*fixed input shape.*Received: (batch_shape|build_input_shape)="):
        load_keras(tmp_path / "k.keras")


def test_vector_input_models_load(tmp_path):
    kmodel = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu"),
                               keras.layers.BatchNormalization(), keras.layers.Dense(3, activation="softmax")])
    _randomise_keras(kmodel, 3)
    kmodel.save(tmp_path / "k.keras")
    x = _images((6,))
    logits = load_keras(tmp_path / "k.keras").module()(torch.from_numpy(x))  # the module leaves softmax out
    np.testing.assert_allclose(torch.softmax(logits, 1).detach().numpy(), np.asarray(kmodel.predict(x, verbose=0)),
                               atol=ATOL, rtol=0)


def test_other_model_classes_are_refused_by_name(tmp_path):
    path = _keras_file(tmp_path, keras.layers.Dense(2), shape=(4,))
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    config["class_name"] = "MyModel"
    with pytest.raises(ValueError, match=r"Sequential.*Received: class_name='MyModel'"):
        from cnnlab.runs.keras_config import read_config
        read_config(config)


def test_damaged_files_are_named(tmp_path):
    model = _cnnlab_model(LECTURE)
    good = save_keras(model.spec, model.module, tmp_path / "good.keras")
    raw = good.read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(KerasFileError, match="cut.keras"):
        load_keras(cut)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(KerasFileError, match="junk.keras.*zip"):
        load_keras(junk)
    with pytest.raises(KerasFileError, match="no .keras file"):
        load_keras(tmp_path / "absent.keras")
    with zipfile.ZipFile(good) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    for drop in ("config.json", "model.weights.h5"):
        partial = tmp_path / f"no_{drop}.keras"
        with zipfile.ZipFile(partial, "w") as zf:
            for name, data in members.items():
                if name != drop:
                    zf.writestr(name, data)
        with pytest.raises(KerasFileError, match=f"no_{drop}.keras.*no {drop}"):
            load_keras(partial)
    bad_h5 = tmp_path / "bad_h5.keras"
    with zipfile.ZipFile(bad_h5, "w") as zf:
        zf.writestr("config.json", members["config.json"])
        zf.writestr("model.weights.h5", b"\x89HDF garbage" * 10)
    with pytest.raises(KerasFileError, match="bad_h5.keras.*HDF5"):
        load_keras(bad_h5)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    model = _cnnlab_model(LECTURE)
    good = save_keras(model.spec, model.module, tmp_path / "good.keras")
    with zipfile.ZipFile(good) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][1]["config"]["filters"] = 7  # the file holds 6 filters
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, json.dumps(config) if name == "config.json" else data)
    with pytest.raises(KerasFileError, match=r"bad.keras.*conv2d.*shape \(3, 3, 3, 6\), expected \(3, 3, 3, 7\)"):
        load_keras(bad)


def test_a_custom_layer_with_a_keras_class_name_is_not_taken_for_keras_own(tmp_path):
    @keras.saving.register_keras_serializable(package="mine")
    class Conv2D(keras.layers.Conv2D):
        pass

    path = _keras_file(tmp_path, Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(2))
    with pytest.raises(ValueError, match=r"no layer type\(s\) mine>Conv2D;"):
        load_keras(path)
