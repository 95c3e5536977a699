"""Several inputs and outputs in fit/evaluate/predict against real Keras 3 (torch backend): the same weights give
the same losses and metrics, and one full-batch SGD step the same new weights."""
import os

import numpy as np
import pytest

import cnnlab

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")


def two_in_two_out(lib):
    layers = lib.layers
    a, b = lib.Input((6, 6, 1), name="img_a"), lib.Input((6, 6, 2), name="img_b")
    x = layers.Conv2D(3, 3, activation="relu", name="conv")(a)
    y = layers.Conv2D(3, 3, activation="relu", name="conv_b")(b)
    x = layers.Flatten(name="flat")(layers.Concatenate(name="join")([x, y]))
    cls = layers.Dense(4, activation="softmax", name="cls")(x)
    flag = layers.Dense(1, activation="sigmoid", name="flag")(x)
    return lib.Model([a, b], [cls, flag])


def data(n=12):
    rng = np.random.default_rng(3)
    return (rng.random((n, 6, 6, 1), dtype=np.float32), rng.random((n, 6, 6, 2), dtype=np.float32),
            rng.integers(0, 4, n), rng.integers(0, 2, n).astype(np.float32))


def same_models():
    cnnlab.backend.clear_session()
    keras.backend.clear_session()
    theirs, ours = two_in_two_out(keras), two_in_two_out(cnnlab)
    rng = np.random.default_rng(0)
    theirs.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in theirs.get_weights()])
    ours.set_weights(theirs.get_weights())
    return theirs, ours


@pytest.mark.parametrize("as_dict", [False, True])
def test_two_inputs_two_outputs_losses_and_metrics_equal_keras(as_dict):
    theirs, ours = same_models()
    xa, xb, y1, y2 = data()
    for model, lib in ((theirs, keras), (ours, cnnlab)):
        if as_dict:
            model.compile("sgd", loss={"cls": "sparse_categorical_crossentropy", "flag": lib.losses.BinaryCrossentropy()},
                          loss_weights={"cls": 1.0, "flag": 0.3}, metrics={"cls": ["acc"], "flag": [lib.metrics.AUC()]})
        else:
            model.compile("sgd", loss=["sparse_categorical_crossentropy", "binary_crossentropy"], loss_weights=[1.0, 0.3],
                          metrics=[["accuracy"], ["accuracy", "precision"]])
    x = {"img_a": xa, "img_b": xb} if as_dict else [xa, xb]
    y = {"cls": y1, "flag": y2} if as_dict else [y1, y2]
    k = theirs.evaluate(x, y, verbose=0, return_dict=True)
    c = ours.evaluate(x, y, return_dict=True)
    assert sorted(c) == sorted(k)
    for key in k:
        np.testing.assert_allclose(c[key], k[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert ours.evaluate(x, y) == pytest.approx(theirs.evaluate(x, y, verbose=0), rel=1e-5)
    for a, b in zip(ours.predict(x), theirs.predict(x, verbose=0)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # one full-batch SGD step: the gradients of the weighted sum of losses agree
    hk = theirs.fit(x, y, epochs=1, batch_size=len(xa), shuffle=False, verbose=0)
    hc = ours.fit(x, y, epochs=1, batch_size=len(xa), shuffle=False, verbose=0)
    assert set(hk.history) <= set(hc.history)
    for key in hk.history:
        np.testing.assert_allclose(hc.history[key], hk.history[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_structures_say_what_is_expected():
    _, ours = same_models()
    xa, xb, y1, y2 = data()
    ours.compile("adam", loss=["sparse_categorical_crossentropy", "binary_crossentropy"])
    with pytest.raises(ValueError, match="has 1 arrays for 2 model inputs"):
        ours.fit([xa], [y1, y2], verbose=0)
    with pytest.raises(ValueError, match=r"no array for input\(s\) \['img_b'\]"):
        ours.fit({"img_a": xa}, [y1, y2], verbose=0)
    with pytest.raises(ValueError, match="names output"):
        ours.compile("adam", loss={"nope": "mse"})


def test_per_pixel_labels_are_checked_against_the_output():
    inputs = cnnlab.Input((6, 6, 1))
    outputs = cnnlab.layers.Conv2D(3, 1, activation="softmax")(inputs)
    model = cnnlab.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.zeros((4, 6, 6, 1), np.float32)
    with pytest.raises(ValueError, match=r"labels from 3 to 3, but the output has 3 classes"):
        model.fit(x, np.full((4, 6, 6), 3), verbose=0)
    with pytest.raises(ValueError, match=r"integer labels of shape \(N, 6, 6\)"):
        model.fit(x, np.zeros((4, 5, 6), int), verbose=0)
    history = model.fit(x, np.zeros((4, 6, 6, 1), int), epochs=2, verbose=0)  # (N, H, W, 1) masks too
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_callbacks_see_the_general_loops_metrics(tmp_path):
    model = cnnlab.Sequential([cnnlab.Input((8, 8, 1)), cnnlab.layers.Flatten(), cnnlab.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy", metrics=["auc"])
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 1)).astype("float32")
    y = (x.mean((1, 2, 3)) > 0.5).astype(int)
    log = tmp_path / "log.csv"
    history = model.fit(x, y, epochs=3, validation_split=0.25, verbose=0, callbacks=[cnnlab.callbacks.CSVLogger(log)])
    assert log.read_text().splitlines()[0] == "epoch,auc,learning_rate,loss,val_auc,val_loss"
    assert len(history.history["val_auc"]) == 3
