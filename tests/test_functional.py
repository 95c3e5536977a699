"""The functional API and Keras layer objects, checked against hand computations (numpy convolution,
frozen weights that must not move) and against their own saved copies."""
import numpy as np
import pytest
import torch

import cnnlab as keras
from cnnlab import layers
from cnnlab.spec.graph import GraphSpec, spec_from_dict
from cnnlab.spec.layers import SpecError


def book_model(name=None):
    """Deep Learning with Python, chapter 8: the MNIST convnet in the functional API."""
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(filters=32, kernel_size=3, activation="relu")(inputs)
    x = layers.MaxPooling2D(pool_size=2)(x)
    x = layers.Conv2D(filters=64, kernel_size=3, activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=2)(x)
    x = layers.Conv2D(filters=128, kernel_size=3, activation="relu")(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def residual_model():
    inputs = keras.Input(shape=(12, 12, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    residual = x
    x = layers.SeparableConv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.add([x, residual])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(4, activation="softmax")(x))


def numpy_conv_valid(images, kernel, bias):
    """(N, H, W, C) * (kh, kw, C, F) -> (N, H-kh+1, W-kw+1, F): the textbook sum, no framework."""
    kh, kw = kernel.shape[:2]
    n, h, w, _ = images.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, kernel.shape[3]))
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            out[:, i, j] = np.tensordot(images[:, i:i + kh, j:j + kw], kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out + bias


def test_book_model_trains_and_its_activation_model_shares_weights(small):
    x, y, xt, yt = small
    model = book_model()
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1000], y[:1000], epochs=1, batch_size=64, verbose=0)
    assert model.count_params() == 320 + 18_496 + 73_856 + 1152 * 10 + 10
    probs = model.predict(xt[:20])
    assert probs.shape == (20, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # the book's activation model: every conv and pooling output of the trained model
    outputs = [layer.output for layer in model.layers if isinstance(layer, (layers.Conv2D, layers.MaxPooling2D))]
    activations = keras.Model(inputs=model.input, outputs=outputs).predict(xt[:3])
    assert [a.shape for a in activations] == [(3, 26, 26, 32), (3, 13, 13, 32), (3, 11, 11, 64), (3, 5, 5, 64),
                                              (3, 3, 3, 128)]
    kernel, bias = model.get_layer(index=1).get_weights()
    expected = np.maximum(numpy_conv_valid(xt[:3].reshape(3, 28, 28, 1) / 255.0, kernel, bias), 0)
    np.testing.assert_allclose(activations[0], expected, atol=1e-4)


def test_layer_and_model_accessors():
    keras.backend.clear_session()
    model = book_model()
    conv = model.get_layer("conv2d")
    assert model.layers[0].__class__.__name__ == "InputLayer" and model.input is model.inputs[0]
    assert conv.input is model.input and conv.output.shape == (None, 26, 26, 32)
    assert model.output is model.layers[-1].output and model.outputs == [model.output]
    with pytest.raises(ValueError, match="No such layer: nope"):
        model.get_layer("nope")
    loose = layers.Dense(3)
    assert not loose.built and loose.get_weights() == [] and loose.weights == []
    with pytest.raises(AttributeError, match="never been called"):
        loose.output  # noqa: B018
    assert tuple(loose(np.zeros((2, 4))).shape) == (2, 3) and loose.built  # an eager call builds it, as in Keras
    with pytest.raises(TypeError, match="not both in one call"):
        layers.Add()([model.input, np.zeros((1, 28, 28, 1))])
    with pytest.raises(TypeError, match="cnnlab's Dense takes units"):
        layers.Dense(3, kernel_initializer="he_normal")


def test_several_outputs_predict_a_list_channels_last():
    inputs = keras.Input((10, 10, 2))
    a = layers.Conv2D(3, 3)(inputs)
    b = layers.Dense(5)(layers.Flatten()(a))
    model = keras.Model(inputs, [b, a])
    out = model.predict(np.random.default_rng(0).random((4, 10, 10, 2), dtype=np.float32))
    assert isinstance(out, list) and [o.shape for o in out] == [(4, 5), (4, 8, 8, 3)]
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((4, 10, 10, 2), np.float32), np.zeros(4, int))
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="a list or dict of 2 targets"):
        model.fit(np.zeros((4, 10, 10, 2), np.float32), np.zeros(4, int))


def test_set_weights_checks_shapes_and_round_trips():
    keras.backend.clear_session()
    model = residual_model()
    weights = [np.random.default_rng(i).random(w.shape).astype("float32") for i, w in enumerate(model.get_weights())]
    model.set_weights(weights)
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    sep = model.get_layer("separable_conv2d")
    assert [w.shape for w in sep.get_weights()] == [(3, 3, 8, 1), (1, 1, 8, 8), (8,)]
    assert [w.name for w in sep.weights] == ["depthwise_kernel", "pointwise_kernel", "bias"]
    with pytest.raises(ValueError, match=r"takes 3 weights of shapes"):
        sep.set_weights(weights[:2])


def test_frozen_layers_do_not_move_in_fit_and_counts_move_in_summary(small, capsys):
    x, y, _, _ = small
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(4, 3, activation="relu"),
                              layers.BatchNormalization(), layers.Flatten(), layers.Dense(10, activation="softmax")])
    conv, norm = model.layers[0], model.layers[1]
    conv.trainable = False
    norm.trainable = False
    before = [w.copy() for w in model.get_weights()]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    after = model.get_weights()
    for frozen in range(6):  # conv kernel and bias, batch norm's four vectors (its statistics too: inference mode)
        np.testing.assert_array_equal(after[frozen], before[frozen])
    assert not np.array_equal(after[6], before[6])  # the Dense still learns
    model.summary()
    text = capsys.readouterr().out
    assert "Trainable params: 27,050" in text and "Non-trainable params: 56 " in text
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 6
    assert not next(conv.module.parameters()).requires_grad


def test_save_right_after_building_and_reload_both_formats(tmp_path):
    model = keras.Sequential([layers.Conv2D(2, 3, input_shape=(8, 8, 1)), layers.Flatten(),
                              layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "m.safetensors")  # before any fit or build: the input shape is known
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(1).random((2, 8, 8, 1), dtype=np.float32)
    for path in ("m.safetensors", "m.keras"):
        np.testing.assert_allclose(keras.models.load_model(tmp_path / path).predict(x), model.predict(x), atol=1e-6)


def test_graph_spec_json_and_safetensors_round_trip(tmp_path):
    keras.backend.clear_session()
    model = residual_model()
    spec = model.spec
    assert isinstance(spec, GraphSpec) and spec_from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["outputs"] == [["dense", 0]] and spec.to_dict()["inputs"] == [{"name": "image",
                                                                                         "shape": [12, 12, 3]}]
    model.save(tmp_path / "r.safetensors")
    again = keras.models.load_model(tmp_path / "r.safetensors")
    x = np.random.default_rng(2).random((3, 12, 12, 3), dtype=np.float32)
    np.testing.assert_allclose(again.predict(x), model.predict(x), atol=1e-6)
    assert [layer.name for layer in again.layers] == [layer.name for layer in model.layers]
    for key, tensor in model.module.state_dict().items():
        assert torch.equal(again.module.state_dict()[key], tensor.cpu()), key


def test_graph_errors_name_the_problem():
    inputs = keras.Input((6, 6, 1))
    other = keras.Input((6, 6, 1))
    with pytest.raises(ValueError, match="Graph disconnected"):
        keras.Model(inputs, layers.Flatten()(other))
    with pytest.raises(ValueError, match="used 2 times"):
        keras.Model(inputs, layers.Add()([layers.Conv2D(1, 1, name="c")(inputs), layers.Conv2D(1, 1, name="c")(inputs)]))
    with pytest.raises(SpecError, match="needs inputs of one shape"):
        layers.add([layers.Conv2D(2, 3)(inputs), inputs])
    conv = layers.Conv2D(2, 3)
    conv(inputs)
    with pytest.raises(ValueError, match="was built for input shape"):
        conv(keras.Input((9, 9, 1)))
