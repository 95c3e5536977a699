"""cnnlab.callbacks: Keras's EarlyStopping / ReduceLROnPlateau rules checked against real Keras, and a ported convnet."""
from __future__ import annotations

import os

import numpy as np
import pytest

import cnnlab as keras_like
from cnnlab import callbacks, layers

os.environ.setdefault("KERAS_BACKEND", "torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VAL_LOSSES = [1.0, 0.8, 0.81, 0.79, 0.795, 0.80, 0.81, 0.7, 0.71, 0.72, 0.73]


class _Dummy:
    stop_training = False


def _stopped_at(cb, model):
    cb.set_model(model)
    cb.on_train_begin({})
    for epoch, value in enumerate(VAL_LOSSES):
        cb.on_epoch_end(epoch, {"val_loss": value, "loss": value})
        if model.stop_training:
            return epoch
    return None


@pytest.mark.parametrize("patience,min_delta", [(0, 0.0), (1, 0.0), (2, 0.0), (2, 0.015), (3, 0.0)])
def test_early_stopping_stops_where_keras_does(patience, min_delta):
    import keras
    ours = _stopped_at(callbacks.EarlyStopping(patience=patience, min_delta=min_delta), _Dummy())
    theirs = _stopped_at(keras.callbacks.EarlyStopping(patience=patience, min_delta=min_delta), _Dummy())
    assert ours == theirs


def test_ported_convnet_with_checkpoint_early_stopping_and_lr_callbacks(tmp_path):
    (x, y), _ = keras_like.datasets.mnist.load_data()
    x, y = x[:1500], y[:1500]
    model = keras_like.Sequential([
        layers.Input((28, 28, 1)), layers.Conv2D(8, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Flatten(), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best = tmp_path / "convnet_from_scratch.safetensors"
    cbs = [callbacks.ModelCheckpoint(best, save_best_only=True, monitor="val_loss"),
           callbacks.EarlyStopping(monitor="val_accuracy", patience=2),
           callbacks.ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.5),
           callbacks.CSVLogger(tmp_path / "log.csv")]
    history = model.fit(x, y, epochs=4, batch_size=64, validation_split=0.2, callbacks=cbs, verbose=0, device="cpu")
    losses = history.history["val_loss"]
    assert history.epoch == list(range(len(losses))) and "learning_rate" in history.history
    again = keras_like.models.load_model(best)
    val_x, val_y = x[-300:], y[-300:]
    assert again.evaluate(val_x, val_y)[0] == pytest.approx(min(losses), rel=1e-3)
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0] == "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss" and len(rows) == len(losses) + 1


def test_learning_rate_scheduler_and_stop_training():
    x = np.random.default_rng(0).integers(0, 256, (32, 4, 4, 1), dtype=np.uint8)
    y = np.arange(32) % 2

    class StopAfterTwo(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    model = keras_like.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    h = model.fit(x, y, epochs=5, verbose=0, device="cpu",
                  callbacks=[callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1)), StopAfterTwo()])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.05])


@pytest.mark.parametrize("patience,min_delta", [(0, 0.0), (1, 0.0), (2, 0.015), (3, 0.0), (1, 0.05)])
@pytest.mark.parametrize("monitor,sign", [("val_loss", 1.0), ("val_accuracy", -1.0)])
def test_fit_and_the_keras_callback_share_one_rule(patience, min_delta, monitor, sign):
    """fit's early stopping (tolerates `patience` epochs, stops on the next) decides as real Keras does with
    patience + 1, min_delta and the monitor's direction included: one keep-best rule."""
    import keras
    import torch

    from cnnlab.train.early_stopping import KeepBest

    stopper, module = KeepBest(monitor, patience, restore_best_weights=False, min_delta=min_delta), torch.nn.Linear(1, 1)
    ours = next((epoch for epoch, value in enumerate(VAL_LOSSES)
                 if stopper.update(epoch + 1, {monitor: sign * value}, module)), None)
    mode = "min" if sign > 0 else "max"
    cb = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience + 1, min_delta=min_delta, mode=mode)
    model = _Dummy()
    cb.set_model(model)
    cb.on_train_begin({})
    theirs = next((epoch for epoch, value in enumerate(VAL_LOSSES)
                   if cb.on_epoch_end(epoch, {monitor: sign * value}) or model.stop_training), None)
    assert ours == theirs
