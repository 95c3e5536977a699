"""The Keras surface against real Keras 3: the same model code runs on `keras` and on `cnnlab`, and the
summaries (names, output shapes, parameter counts, trainable split), each layer's output for the same
weights, the .keras files both ways and the automatic names agree."""
import os
import random

import numpy as np
import pytest

import cnnlab
from cnnlab.spec.summary import summary_dict

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning",
                                        "ignore:Do not pass an `input_shape`")
ATOL = 1e-5
ACTS = ["relu", None, "tanh", "sigmoid", "gelu", "softmax"]


def random_recipe(seed: int) -> tuple[tuple[int, int, int], list[tuple[str, dict, list[int]]], list[int], bool]:
    """(input shape, ops, output tensor indices, sequential?): an op is (layer class, kwargs, input tensor
    indices); tensor 0 is the input, op i makes tensor i + 1. Odd seeds are linear stacks (Sequential)."""
    rnd = random.Random(seed)
    sequential = seed % 2 == 1
    shape = (rnd.randint(8, 14), rnd.randint(8, 14), rnd.randint(1, 3))
    shapes = [shape]
    ops: list[tuple[str, dict, list[int]]] = []

    def add(kind, kwargs, ins, out):
        ops.append((kind, kwargs, ins))
        shapes.append(out)

    def pick_image():
        images = [i for i, s in enumerate(shapes) if len(s) == 3 and min(s[:2]) >= 3]
        return len(shapes) - 1 if sequential else rnd.choice(images[-3:])

    for _ in range(rnd.randint(2, 6)):
        i = pick_image()
        h, w, c = shapes[i]
        kind = rnd.choice(["conv", "conv", "sep", "pool", "norm", "act", "drop", "dense", "add", "concat"])
        if sequential and kind in ("add", "concat"):
            kind = "conv"
        if kind in ("conv", "sep", "add", "concat"):
            k, s = rnd.choice([1, 2, 3]), rnd.choice([1, 1, 2])
            pad = "same" if kind in ("add", "concat") else rnd.choice(["valid", "same"])
            s = 1 if kind in ("add", "concat") else s
            filters = c if kind == "add" else rnd.randint(2, 6)
            cls = "SeparableConv2D" if kind == "sep" else "Conv2D"
            kw = dict(filters=filters, kernel_size=k, strides=s, padding=pad, activation=rnd.choice(ACTS[:5]),
                      use_bias=rnd.random() < 0.8)
            if cls == "SeparableConv2D":
                kw["depth_multiplier"] = rnd.choice([1, 2])
            out_hw = [(n - k) // s + 1 if pad == "valid" else -(-n // s) for n in (h, w)]
            if min(out_hw) < 1 or (pad == "valid" and k > min(h, w)):
                continue
            add(cls, kw, [i], (*out_hw, filters))
            if kind == "add":
                add("Add", {}, [i, len(shapes) - 1], (h, w, c))
            elif kind == "concat":
                add("Concatenate", {}, [i, len(shapes) - 1], (h, w, c + filters))
        elif kind == "pool":
            p = rnd.choice([2, 3])
            cls = rnd.choice(["MaxPooling2D", "AveragePooling2D"])
            pad = "valid" if cls == "AveragePooling2D" else rnd.choice(["valid", "same"])  # see test_keras_file
            out_hw = [(n - p) // p + 1 if pad == "valid" else -(-n // p) for n in (h, w)]
            if min(out_hw) >= 1 and min(h, w) >= p:
                add(cls, dict(pool_size=p, padding=pad), [i], (*out_hw, c))
        elif kind == "norm":
            add("BatchNormalization", dict(momentum=rnd.choice([0.9, 0.99])), [i], (h, w, c))
        elif kind == "act":
            add("Activation", dict(activation=rnd.choice(ACTS[:5]) or "linear"), [i], (h, w, c))
        elif kind == "drop":
            add("Dropout", dict(rate=0.3), [i], (h, w, c))
        else:
            units = rnd.randint(2, 5)
            add("Dense", dict(units=units, activation=rnd.choice(ACTS[:5])), [i], (h, w, units))
    heads = [len(shapes) - 1] if sequential or rnd.random() < 0.3 else [len(shapes) - 1, rnd.randrange(len(shapes))]
    flats = []
    for i in sorted(set(heads)):
        h, w, c = shapes[i] if len(shapes[i]) == 3 else (1, 1, shapes[i][0])
        flat = rnd.choice(["Flatten", "GlobalAveragePooling2D"])
        add(flat, {}, [i], (h * w * c,) if flat == "Flatten" else (c,))
        flats.append(len(shapes) - 1)
    if len(flats) > 1 and rnd.random() < 0.5:
        add("Concatenate", {}, flats, (sum(shapes[f][0] for f in flats),))
        flats = [len(shapes) - 1]
    outputs = []
    for f in flats:
        if rnd.random() < 0.5:
            add("BatchNormalization", {}, [f], shapes[f])
            f = len(shapes) - 1
        add("Dense", dict(units=rnd.randint(2, 5), activation=rnd.choice(["softmax", None])), [f], (3,))
        outputs.append(len(shapes) - 1)
    return shape, ops, outputs, sequential


def make(lib, recipe, frozen=()):
    """The recipe's model built with `lib` (keras or cnnlab) by the same code: the API is what is tested."""
    shape, ops, outputs, sequential = recipe
    lib.backend.clear_session()
    if sequential:
        model = lib.Sequential([lib.Input(shape)])
        for kind, kw, _ in ops:
            model.add(getattr(lib.layers, kind)(**kw))
    else:
        tensors = [lib.Input(shape=shape)]
        for kind, kw, ins in ops:
            args = [tensors[i] for i in ins]
            tensors.append(getattr(lib.layers, kind)(**kw)(args if len(args) > 1 else args[0]))
        model = lib.Model(tensors[0], [tensors[i] for i in outputs] if len(outputs) > 1 else tensors[outputs[0]])
    for index in frozen:
        model.layers[index % len(model.layers)].trainable = False
    return model


def keras_summary(model):
    """Keras's own numbers: one row per layer and the trainable split, read from the Keras objects."""
    rows = []
    for layer in model.layers:
        shape = layer.output.shape if layer.__class__.__name__ != "InputLayer" else layer.batch_shape
        rows.append((layer.name, layer.__class__.__name__, tuple(shape), layer.count_params()))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return rows, trainable, frozen


def ours_summary(model):
    info = summary_dict(model.spec)
    rows = [(r["name"], r["type"], tuple(r["output_shape"]), r["params"]) for r in info["layers"]]
    return rows, info["trainable_params"], info["non_trainable_params"]


def randomise(kmodel, seed):
    rng = np.random.default_rng(seed)
    for layer in kmodel.layers:
        weights = layer.get_weights()
        low = 0.5 if isinstance(layer, keras.layers.BatchNormalization) else -0.5
        layer.set_weights([rng.uniform(low, low + 1, w.shape).astype("float32") for w in weights])


@pytest.mark.parametrize("seed", range(32))
def test_random_models_summaries_and_layer_outputs_equal_keras(seed, capsys):
    recipe = random_recipe(seed)
    frozen = random.Random(seed).sample(range(1, 20), k=seed % 3)
    kmodel, ours = make(keras, recipe, frozen), make(cnnlab, recipe, frozen)
    assert ours.name == kmodel.name
    assert ours_summary(ours) == keras_summary(kmodel)
    assert [w.name for w in ours.trainable_weights] == [w.name for w in kmodel.trainable_weights]
    kmodel.summary()
    connected = "Connected to" in capsys.readouterr().out
    ours.summary()
    assert ("Connected to" in capsys.readouterr().out) == connected
    # the same weights on both sides (layer by layer), then every layer's output on the same images
    randomise(kmodel, seed)
    for layer in kmodel.layers:
        ours.get_layer(layer.name).set_weights(layer.get_weights())
    for klayer, layer in zip(kmodel.layers, ours.layers):
        for a, b in zip(klayer.get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(seed).random((3, *recipe[0]), dtype=np.float32)
    kinputs = kmodel.inputs
    layers = [layer for layer in kmodel.layers if layer.__class__.__name__ != "InputLayer"]
    theirs = keras.Model(kinputs, [layer.output for layer in layers]).predict(x, verbose=0)
    mine = cnnlab.Model(ours.inputs, [ours.get_layer(layer.name).output for layer in layers]).predict(x)
    for layer, a, b in zip(layers, theirs, mine):
        np.testing.assert_allclose(b, np.asarray(a), atol=ATOL, rtol=1e-5, err_msg=layer.name)


@pytest.mark.parametrize("seed", [0, 2, 4, 6])
def test_functional_keras_files_both_ways(seed, tmp_path):
    recipe = random_recipe(seed)
    kmodel, ours = make(keras, recipe), make(cnnlab, recipe)
    randomise(kmodel, seed)
    x = np.random.default_rng(seed).random((4, *recipe[0]), dtype=np.float32)

    def outputs(model, keras_side):
        out = model.predict(x, verbose=0) if keras_side else model.predict(x)
        return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]

    kmodel.save(tmp_path / "k.keras")  # Keras -> cnnlab
    loaded = cnnlab.models.load_model(tmp_path / "k.keras")
    for a, b in zip(outputs(kmodel, True), outputs(loaded, False)):
        np.testing.assert_allclose(b, a, atol=ATOL, rtol=0)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in kmodel.layers]
    for layer in kmodel.layers:  # cnnlab -> Keras
        ours.get_layer(layer.name).set_weights(layer.get_weights())
    ours.save(tmp_path / "c.keras")
    back = keras.models.load_model(tmp_path / "c.keras")
    for a, b in zip(outputs(back, True), outputs(ours, False)):
        np.testing.assert_allclose(b, a, atol=ATOL, rtol=0)
    assert keras_summary(back) == ours_summary(ours)


def test_automatic_names_follow_keras_for_a_mixed_sequence():
    def names(lib):
        lib.backend.clear_session()
        kl = lib.layers
        made = [kl.Conv2D(2, 3), kl.Dense(3), kl.Conv2D(2, 3, name="mine"), kl.Conv2D(2, 3), kl.MaxPooling2D(),
                kl.SeparableConv2D(2, 3), kl.BatchNormalization(), kl.Dense(2), kl.Flatten(), kl.Add(), kl.Dropout(0.1)]
        inp = lib.Input((8, 8, 1))
        first = lib.Sequential([lib.Input((8, 8, 1)), kl.Conv2D(2, 3), kl.Flatten()])
        second = lib.Sequential()
        tail = kl.GlobalAveragePooling2D()(kl.Conv2D(2, 3)(inp))
        return ([layer.name for layer in made] + [inp._keras_history[0].name, first.name, second.name]
                + [layer.name for layer in first.layers] + [lib.Model(inp, tail).layers[-1].name])

    assert names(cnnlab) == names(keras)


def test_trainable_flags_move_the_counts_as_in_keras():
    def counts(lib):
        lib.backend.clear_session()
        model = lib.Sequential([lib.Input((10, 10, 3)), lib.layers.Conv2D(4, 3), lib.layers.BatchNormalization(),
                                lib.layers.Flatten(), lib.layers.Dense(5)])
        out = [(len(model.trainable_weights), len(model.non_trainable_weights))]
        model.layers[0].trainable = False
        out.append((len(model.trainable_weights), len(model.non_trainable_weights)))
        model.trainable = False
        out.append((len(model.trainable_weights), len(model.non_trainable_weights), model.layers[3].trainable))
        model.trainable = True
        out.append((len(model.trainable_weights), model.count_params()))
        return out, [w.name for w in model.weights], [w.shape for w in model.weights]

    assert counts(cnnlab) == counts(keras)
