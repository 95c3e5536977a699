"""keras.metrics and keras.losses against real Keras 3 (torch backend) on fixed predictions."""
import os

import numpy as np
import pytest
import torch

import cnnlab

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.random((40, 5)).astype(np.float32)
    probs /= probs.sum(1, keepdims=True)
    labels = rng.integers(0, 5, 40)
    binary_p = rng.random((40, 1)).astype(np.float32)
    binary_y = (rng.random((40, 1)) < 0.4).astype(np.float32)
    pixels_p = rng.random((3, 6, 7, 4)).astype(np.float32)
    pixels_p /= pixels_p.sum(-1, keepdims=True)
    masks = rng.integers(0, 4, (3, 6, 7))
    return probs, labels, binary_p, binary_y, pixels_p, masks


def _cases():
    probs, labels, bp, by, pp, masks = _data()
    onehot = np.eye(5, dtype=np.float32)[labels]
    return [
        ("Accuracy", {}, labels, probs.argmax(1)),
        ("BinaryAccuracy", {}, by, bp),
        ("BinaryAccuracy", {"threshold": 0.3}, by, bp),
        ("CategoricalAccuracy", {}, onehot, probs),
        ("SparseCategoricalAccuracy", {}, labels, probs),
        ("SparseCategoricalAccuracy", {}, labels[:, None], probs),
        ("SparseCategoricalAccuracy", {}, masks, pp),
        ("SparseCategoricalAccuracy", {}, masks[..., None], pp),
        ("TopKCategoricalAccuracy", {"k": 2}, onehot, probs),
        ("SparseTopKCategoricalAccuracy", {"k": 3}, labels, probs),
        ("Precision", {}, by, bp),
        ("Recall", {}, by, bp),
        ("Precision", {"thresholds": 0.7}, by, bp),
        ("AUC", {}, by, bp),
        ("AUC", {"num_thresholds": 37}, by, bp),
        ("AUC", {"curve": "PR"}, by, bp),
        ("AUC", {"summation_method": "minoring"}, by, bp),
    ]


@pytest.mark.parametrize("case", range(len(_cases())))
def test_metric_objects_equal_keras_over_two_batches(case):
    name, kwargs, y, p = _cases()[case]
    ours, theirs = getattr(cnnlab.metrics, name)(**kwargs), getattr(keras.metrics, name)(**kwargs)
    cut = 2 if p.ndim == 4 else 17
    for part in (slice(0, cut), slice(cut, None)):
        ours.update_state(y[part], p[part])
        theirs.update_state(y[part], p[part])
    np.testing.assert_allclose(float(ours.result()), float(np.asarray(theirs.result())), atol=1e-6)
    ours.reset_state()
    assert float(ours.result()) == 0.0


def test_metric_strings_and_names_follow_keras():
    cnnlab.backend.clear_session()
    keras.backend.clear_session()
    for lib in (cnnlab, keras):
        made = [lib.metrics.AUC(), lib.metrics.AUC(), lib.metrics.Precision(), lib.metrics.TopKCategoricalAccuracy()]
        names = [m.name for m in made]
        if lib is cnnlab:
            ours = names
    assert ours == names
    assert cnnlab.metrics.get("acc", "binary_crossentropy").name == "acc"
    assert isinstance(cnnlab.metrics.get("accuracy", "binary_crossentropy"), cnnlab.metrics.BinaryAccuracy)
    assert isinstance(cnnlab.metrics.get("precision"), cnnlab.metrics.Precision)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        cnnlab.metrics.get("f1")


@pytest.mark.parametrize("name", ["SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
                                  "MeanSquaredError", "MeanAbsoluteError"])
def test_loss_objects_equal_keras(name):
    probs, labels, bp, by, pp, masks = _data(1)
    y, p = {"SparseCategoricalCrossentropy": (masks, pp), "CategoricalCrossentropy": (np.eye(5, dtype=np.float32)[labels], probs),
            }.get(name, (by, bp))
    ours, theirs = getattr(cnnlab.losses, name)(), getattr(keras.losses, name)()
    np.testing.assert_allclose(float(ours(y, p)), float(np.asarray(theirs(y, p))), rtol=1e-5)
    w = np.linspace(0.5, 2, len(y)).astype(np.float32)
    if p.ndim == 4:  # per-pixel weights, as Keras broadcasts them
        w = np.linspace(0.5, 2, masks.size).astype(np.float32).reshape(masks.shape)
    np.testing.assert_allclose(float(ours(y, p, w)), float(np.asarray(theirs(y, p, sample_weight=w))), rtol=1e-5)
    fn = ours.default_name
    np.testing.assert_allclose(getattr(cnnlab.losses, fn)(y, p).numpy(),
                               np.asarray(getattr(keras.losses, fn)(y, p)), rtol=1e-5, atol=1e-6)


def test_logits_and_probabilities_give_one_loss():
    logits = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = cnnlab.losses.SparseCategoricalCrossentropy()
    torch.testing.assert_close(loss.per_value(y, logits, logits=True), loss.per_value(y, logits.softmax(-1)))


def test_namespaces_after_import_cnnlab_as_keras():
    import cnnlab as k
    assert k.applications.EfficientNetLite0 is cnnlab.applications.efficientnet_lite.EfficientNetLite0
    assert callable(k.applications.efficientnet_lite.preprocess_input)
    assert k.metrics.AUC and k.losses.BinaryCrossentropy
