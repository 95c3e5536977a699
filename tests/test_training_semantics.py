"""Keras semantics of compile/fit: binary heads against real Keras, Keras's default rates, metric names, fast recipe."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import cnnlab as keras_like
from cnnlab import layers, optimizers
from cnnlab.runs.predict import probabilities
from cnnlab.train.config import RECIPES

os.environ.setdefault("KERAS_BACKEND", "torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's own numpy-2 noise


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 4, 4, 1), dtype=np.uint8)
    y = (x.reshape(64, -1).mean(1) > 127).astype(np.int64)
    return x, y


def _binary_model():
    return keras_like.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(1, activation="sigmoid")])


def test_binary_crossentropy_loss_and_one_step_match_keras(data):
    import keras
    x, y = data
    ours = _binary_model()
    ours.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="binary_crossentropy", metrics=["acc"])
    ours.build((4, 4, 1), seed=0)
    w = ours.module.state_dict()
    theirs = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
    theirs.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="binary_crossentropy", metrics=["acc"])
    weight, bias = [v for k, v in w.items() if k.endswith("weight")][0], [v for k, v in w.items() if k.endswith("bias")][0]
    theirs.layers[-1].set_weights([weight.numpy().T, bias.numpy()])
    xf = x.astype(np.float32) / 255  # cnnlab feeds pixels / 255 to the module
    k_loss, k_acc = theirs.evaluate(xf, y, verbose=0)
    loss, acc = ours.evaluate(x, y)
    assert loss == pytest.approx(k_loss, rel=1e-4) and acc == pytest.approx(k_acc)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(xf, verbose=0), atol=1e-5)
    # one full-batch step each, then the same loss again
    ours.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0, device="cpu", precision="fp32")
    theirs.fit(xf, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    assert ours.evaluate(x, y)[0] == pytest.approx(theirs.evaluate(xf, y, verbose=0)[0], rel=1e-4)


def test_keras_default_rates_metric_names_and_fast_recipe(data):
    import keras
    x, y = data
    for name in ("adam", "rmsprop", "sgd"):
        model = _binary_model()
        model.compile(optimizer=name, loss="binary_crossentropy", metrics=["acc"])
        h = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0, device="cpu")
        expected = float(keras.optimizers.get(name).learning_rate)
        assert h.history["learning_rate"] == pytest.approx([expected, expected])
        assert set(h.history) == {"loss", "acc", "val_loss", "val_acc", "learning_rate"}
    fast = _binary_model()
    fast.compile(optimizer="adam", loss="binary_crossentropy", recipe="fast")
    h = fast.fit(x, y, epochs=2, verbose=0, device="cpu")
    assert h.history["learning_rate"][0] != pytest.approx(1e-3)  # one-cycle, peaking at 8e-3
    assert fast._train_options["label_smoothing"] == RECIPES["fast"]["label_smoothing"][0] == 0.1  # the table's
    assert model._train_options["label_smoothing"] == 0.0
    with pytest.raises(ValueError, match="recipe"):
        fast.compile(recipe="slow")


def test_binary_labels_checked_and_probabilities_two_columns(data):
    x, y = data
    model = _binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    with pytest.raises(ValueError, match="0/1 labels"):
        model.fit(x, y + 1, verbose=0, device="cpu")
    logits = torch.tensor([[0.0], [2.0]])
    p = torch.sigmoid(torch.tensor(2.0)).item()
    np.testing.assert_allclose(probabilities(logits).numpy(), [[0.5, 0.5], [1 - p, p]], rtol=1e-6)


def test_load_img_and_img_to_array(tmp_path):
    from PIL import Image
    arr = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = keras_like.utils.load_img(tmp_path / "a.png")
    a = keras_like.utils.img_to_array(img)
    assert a.dtype == np.float32 and a.shape == (10, 12, 3)
    np.testing.assert_array_equal(a, arr)
    small = keras_like.utils.img_to_array(keras_like.utils.load_img(tmp_path / "a.png", target_size=(5, 6),
                                                                    color_mode="grayscale"))
    assert small.shape == (5, 6, 1)


def test_a_trained_binary_model_saves_reloads_and_exports_its_two_classes(data, tmp_path):
    """One sigmoid unit names two classes everywhere: fit, the model file, and the exported graph's probabilities."""
    ort = pytest.importorskip("onnxruntime")
    from cnnlab.models import load_model
    from cnnlab.runs.export import export

    x, y = data
    model = _binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0, device="cpu")
    assert model.class_names == ["0", "1"]
    model.save(tmp_path / "binary.safetensors")
    again = load_model(tmp_path / "binary.safetensors")
    assert again.class_names == ["0", "1"]
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    session = ort.InferenceSession(str(export(tmp_path / "binary.safetensors", "onnx")),
                                   providers=["CPUExecutionProvider"])
    logits, probs = session.run(["logits", "probabilities"], {"images": x})
    assert logits.shape == (len(x), 1) and probs.shape == (len(x), 2)
    np.testing.assert_allclose(probs, probabilities(torch.from_numpy(logits)).numpy(), atol=1e-6)


def test_weights_of_layers_keras_files_do_not_hold(tmp_path):
    """Preprocessing layers have none; a pretrained backbone shows torch's tensors, its BN statistics frozen."""
    import cnnlab.applications as apps
    model = keras_like.Sequential([layers.Rescaling(1 / 255, input_shape=(8, 8, 1)), layers.Flatten(), layers.Dense(2)])
    model.build()
    assert [w.shape for w in model.weights] == [(64, 2), (2,)] and model.layers[0].get_weights() == []
    model.set_weights(model.get_weights())
    base = apps.EfficientNetLite0(weights=None, include_top=False)
    net = keras_like.Sequential([base, layers.GlobalAveragePooling2D(), layers.Dense(2)])
    net.build()
    assert base.trainable_weights == [] and len(base.weights) == len(base.get_weights()) > 100
    base.trainable = True
    frozen = sum(int(np.prod(w.shape)) for w in base.non_trainable_weights)
    assert frozen == 42_016  # the BN moving statistics, as the summary counts them
    weights = base.get_weights()
    weights[0] = np.zeros_like(weights[0])
    base.set_weights(weights)
    assert not base.get_weights()[0].any()
