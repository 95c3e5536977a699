"""What the .keras file tests share: real Keras (torch backend), a lecture-style model and random weights."""
import os

import numpy as np
import pytest
import torch

from cnnlab.models import Sequential
from cnnlab.spec import layers as L

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 on torch needs no TensorFlow
keras = pytest.importorskip("keras")

ATOL = 1e-5
LECTURE = L.ModelSpec((
    L.Conv2D(6, (3, 3), activation="relu", padding="same"), L.BatchNormalization(),
    L.MaxPooling2D((2, 2)), L.Conv2D(8, (3, 3), strides=(2, 2), activation="relu"),
    L.AveragePooling2D((2, 2), strides=(1, 1), padding="same"), L.Flatten(), L.BatchNormalization(),
    L.Dropout(0.25), L.Dense(16, activation="relu"), L.Dense(4, activation="softmax")), (14, 14, 3))


def _randomise_norms(module: torch.nn.Module, seed: int) -> None:
    """Batch-norm statistics away from (0, 1), so that a wrong mapping of them shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def _randomise_keras(model, seed: int) -> None:
    """Every Keras variable random (biases and BN statistics too); variances stay positive."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in weights])
        elif weights:
            layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in weights])


def _images(shape, n=5, seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _cnnlab_model(spec: L.ModelSpec, seed: int = 0) -> Sequential:
    model = Sequential([L.Input(spec.input_shape), *spec.layers], name="sequential")
    model.build(seed=seed)
    _randomise_norms(model.module, seed)
    return model.to("cpu")  # channels_last memory, as every cnnlab model has once placed
