"""Summaries equal Keras's: known published numbers, and a table checked against Keras's formulas."""
import itertools
import json
import math

import pytest

from cnnlab.spec import layers as L
from cnnlab.spec import zoo
from cnnlab.spec.layers import ModelSpec, SpecError
from cnnlab.spec.summary import summary_dict, summary_text


def rows(spec):
    return [(r["name"], r["type"], tuple(r["output_shape"]), r["params"]) for r in summary_dict(spec)["layers"]]


def test_lecture_three_convs_as_keras_prints_them():
    spec = ModelSpec([L.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
                      L.Conv2D(64, (3, 3), activation="relu"), L.Conv2D(64, (3, 3), activation="relu")])
    assert rows(spec) == [("conv2d", "Conv2D", (None, 26, 26, 32), 320),
                          ("conv2d_1", "Conv2D", (None, 24, 24, 64), 18496),
                          ("conv2d_2", "Conv2D", (None, 22, 22, 64), 36928)]
    text = summary_text(spec)
    assert "Total params: 55,744 (217.75 KB)" in text and "Non-trainable params: 0 (0.00 B)" in text
    assert "│ conv2d_1 (Conv2D)               │ (None, 24, 24, 64)     │        18,496 │" in text


def test_seed_cnn_matches_keras():
    spec, _ = zoo.resolve("seed", (28, 28, 1))
    assert rows(spec) == [
        ("conv2d", "Conv2D", (None, 26, 26, 32), 320), ("max_pooling2d", "MaxPooling2D", (None, 13, 13, 32), 0),
        ("conv2d_1", "Conv2D", (None, 11, 11, 64), 18496), ("max_pooling2d_1", "MaxPooling2D", (None, 5, 5, 64), 0),
        ("conv2d_2", "Conv2D", (None, 3, 3, 64), 36928), ("flatten", "Flatten", (None, 576), 0),
        ("dense", "Dense", (None, 64), 36928), ("dense_1", "Dense", (None, 10), 650)]
    assert summary_dict(spec)["total_params"] == 93322


def test_keras_simple_mnist_convnet_example():
    # keras.io/examples/vision/mnist_convnet prints: Total params: 34,826
    spec, _ = zoo.resolve("keras-example", (28, 28, 1))
    info = summary_dict(spec)
    assert info["total_params"] == 34826
    assert [tuple(r["output_shape"]) for r in info["layers"]][4:] == [(None, 1600), (None, 1600), (None, 10)]


def test_batchnorm_moving_statistics_are_non_trainable():
    spec = ModelSpec([L.Conv2D(32, 3), L.BatchNormalization(), L.Flatten(), L.Dense(10), L.BatchNormalization()],
                     (28, 28, 1))
    info = summary_dict(spec)
    assert [r["params"] for r in info["layers"]] == [320, 128, 0, 216330, 40]
    assert info["non_trainable_params"] == 64 + 20
    assert info["trainable_params"] == 320 + 64 + 216330 + 20
    assert "Non-trainable params: 84 (336.00 B)" in summary_text(spec)


def keras_out(n, k, s, padding):
    """Keras's documented output size: valid ceil((n - k + 1) / s), same ceil(n / s)."""
    return math.ceil((n - k + 1) / s) if padding == "valid" else math.ceil(n / s)


@pytest.mark.parametrize("n,k,s,padding,cin,filters", [
    (n, k, s, p, c, f) for n, k, s, p, (c, f) in
    itertools.product([28, 13, 7], [3, 5], [1, 2], ["valid", "same"], [(1, 32), (3, 8)])])
def test_conv_table_against_keras_formulas(n, k, s, padding, cin, filters):
    spec = ModelSpec([L.Conv2D(filters, k, strides=s, padding=padding)], (n, n, cin))
    (row,) = rows(spec)
    side = keras_out(n, k, s, padding)
    assert row[2] == (None, side, side, filters)
    assert row[3] == (k * k * cin + 1) * filters


@pytest.mark.parametrize("n,p,s,padding,kind", [
    (n, p, s, pad, kind) for n, p, s, pad, kind in
    itertools.product([28, 13, 7, 5], [2, 3], [None, 1, 2], ["valid", "same"], [L.MaxPooling2D, L.AveragePooling2D])])
def test_pool_table_against_keras_formulas(n, p, s, padding, kind):
    spec = ModelSpec([kind(p, strides=s, padding=padding)], (n, n, 4))
    side = keras_out(n, p, s or p, padding)
    assert rows(spec)[0][2:] == ((None, side, side, 4), 0)


def test_non_square_kernels_and_strides():
    spec = ModelSpec([L.Conv2D(4, (3, 5), strides=(1, 2), padding="valid"),
                      L.MaxPooling2D((2, 3), padding="same")], (28, 28, 2))
    assert rows(spec) == [("conv2d", "Conv2D", (None, 26, 12, 4), (3 * 5 * 2 + 1) * 4),
                          ("max_pooling2d", "MaxPooling2D", (None, 13, 4, 4), 0)]


def test_dense_dropout_activation_gap_flatten():
    spec = ModelSpec([L.Conv2D(8, 3, padding="same"), L.Dense(5), L.Activation("tanh"), L.GlobalAveragePooling2D(),
                      L.Dropout(0.3), L.Dense(3, use_bias=False)], (6, 6, 1))
    assert rows(spec) == [("conv2d", "Conv2D", (None, 6, 6, 8), 80), ("dense", "Dense", (None, 6, 6, 5), 45),
                          ("activation", "Activation", (None, 6, 6, 5), 0),
                          ("global_average_pooling2d", "GlobalAveragePooling2D", (None, 5), 0),
                          ("dropout", "Dropout", (None, 5), 0), ("dense_1", "Dense", (None, 3), 15)]


@pytest.mark.parametrize("layers,message", [
    ([L.Conv2D(8, 5), L.Conv2D(8, 5)], "conv2d_1.*kernel 5x5 is larger than the 4x4 input"),
    ([L.Flatten(), L.Conv2D(8, 3)], "Conv2D layer 'conv2d'.*\\(None, 64\\).*image input"),
    ([L.MaxPooling2D(2), L.MaxPooling2D(2), L.MaxPooling2D(2), L.MaxPooling2D(2)], "max_pooling2d_3.*pool 2x2"),
])
def test_layers_that_cannot_fit_name_layer_and_shapes(layers, message):
    with pytest.raises(SpecError, match=message):
        ModelSpec(layers, (8, 8, 1)).shapes()


@pytest.mark.parametrize("bad,message", [
    (lambda: L.Conv2D(32, 3, padding="full"), "padding must be 'valid' or 'same', got 'full'"),
    (lambda: L.Conv2D(0, 3), "filters must be a positive integer, got 0"),
    (lambda: L.Conv2D(8, (3, 3, 3)), "kernel_size must be an int or a pair"),
    (lambda: L.Dense(10, activation="relu6"), "activation must be one of"),
    (lambda: L.Dropout(1.5), "rate must be a number in \\[0, 1\\), got 1.5"),
    (lambda: L.from_dict({"type": "Conv3D"}), "unknown layer type 'Conv3D'"),
    (lambda: L.from_dict({"type": "Dense", "units": 3, "unit": 4}), "unknown argument\\(s\\) unit"),
    (lambda: L.from_dict({"type": "Dense"}), "Dense: .*units"),
    (lambda: L.from_dict({"type": "Dense", "units": 3, "use_bias": "no"}), "use_bias must be true or false, got 'no'"),
    (lambda: ModelSpec.from_dict({"input_shape": [28, 28, 1], "layers": []}).shapes(), "no layers"),
])
def test_bad_layer_arguments(bad, message):
    with pytest.raises(SpecError, match=message):
        bad()


def test_json_round_trip_and_keras_defaults():
    for name in zoo.ZOO:
        spec, _ = zoo.resolve(name, (28, 28, 1))
        again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec and summary_dict(again) == summary_dict(spec)
    short = ModelSpec.from_dict({"input_shape": [28, 28, 1], "layers": [
        {"type": "Conv2D", "filters": 32, "kernel_size": 3, "activation": "relu"}, {"type": "MaxPooling2D"}]})
    assert short.layers[0] == L.Conv2D(32, (3, 3), (1, 1), "valid", "relu")
    assert short.layers[1].pool_size == (2, 2) and short.shapes()[-1] == (13, 13, 32)


def test_explicit_names_and_duplicates():
    spec = ModelSpec([L.Conv2D(4, 3, name="first"), L.Conv2D(4, 3)], (8, 8, 1))
    assert spec.names == ("first", "conv2d_1")
    with pytest.raises(SpecError, match="used twice"):
        ModelSpec([L.Conv2D(4, 3, name="a"), L.Dense(4, name="a")], (8, 8, 1))


def test_keras2_style_text():
    spec, _ = zoo.resolve("seed", (28, 28, 1))
    text = summary_text(spec, style="keras2")
    assert " conv2d (Conv2D)             (None, 26, 26, 32)        320" in text
    assert "Total params: 93,322" in text


def test_keras2_style_wraps_long_names_as_keras_2_did():
    spec, _ = zoo.resolve("seed", (28, 28, 1))
    lines = summary_text(spec, style="keras2").splitlines()
    # TF 2.12+'s model.summary() for this model prints these two lines (the name continues below)
    i = lines.index(" max_pooling2d_1 (MaxPoolin  (None, 5, 5, 64)          0")
    assert lines[i + 1] == " g2D)"
    assert all(len(line) <= 65 for line in lines)
