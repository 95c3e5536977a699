"""The training loop: exact repeatability, Keras semantics of its options, clear errors."""
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.spec import zoo
from cnnlab.spec.build import build, keras_init_
from cnnlab.train.config import TrainConfig
from cnnlab.train.device_data import to_device_images
from cnnlab.train.early_stopping import KeepBest
from cnnlab.train.fit import fit


def seed_module(seed=0):
    spec, _ = zoo.resolve("seed", (28, 28, 1))
    module = build(spec)
    keras_init_(module, seed)
    return module


def weights(module):
    return torch.cat([p.detach().cpu().flatten() for p in module.parameters()])  # wherever fit put it


def test_seeded_runs_repeat_exactly(small):
    x, y, _, _ = small
    config = TrainConfig(epochs=1, batch_size=64, seed=3)
    a, b = seed_module(), seed_module()
    ha, hb = fit(a, x[:600], y[:600], config), fit(b, x[:600], y[:600], config)
    assert torch.equal(weights(a), weights(b))
    assert ha.history["loss"] == hb.history["loss"]
    c = seed_module()
    fit(c, x[:600], y[:600], TrainConfig(epochs=1, batch_size=64, seed=4))
    assert not torch.equal(weights(a), weights(c))


def test_batches_are_reshuffled_every_epoch(small, monkeypatch):
    x, y, _, _ = small
    seen = []
    real = torch.randperm

    def spy(n, *args, **kwargs):
        order = real(n, *args, **kwargs)
        seen.append(order.clone())
        return order

    monkeypatch.setattr(torch, "randperm", spy)
    fit(seed_module(), x[:256], y[:256], TrainConfig(epochs=3, batch_size=128))
    assert len(seen) == 3 and not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert all(torch.equal(torch.sort(s).values, torch.arange(256)) for s in seen)


def test_one_fast_step_equals_the_plain_step(small):
    """The fast path (uint8 on device, channels_last, in-loop scaling) computes the same update
    as a textbook float32 NCHW step with the same optimiser."""
    x, y, _, _ = small
    xb, yb = x[:64], y[:64]
    fast, plain = seed_module(), seed_module()
    fit(fast, xb, yb, TrainConfig(epochs=1, batch_size=64, lr=1e-3, label_smoothing=0.0, shuffle=False, seed=0,
                                  precision="fp32", device="cpu"))  # the plain step below runs on the CPU
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3, eps=1e-7)
    inputs = torch.tensor(xb, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    loss = F.cross_entropy(plain(inputs), torch.tensor(yb))
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = (weights(fast) - weights(seed_module())).abs()
    assert moved.max() > 5e-4  # Adam's first step moves weights by about lr = 1e-3
    torch.testing.assert_close(weights(fast), weights(plain), rtol=0, atol=1e-5)


def test_bf16_fast_path_computes_the_same_gradient(small):
    """bf16 autocast (the default on CUDA and on CPUs with native bf16) only rounds: its gradient points
    the same way as the fp32 one."""
    x, y, _, _ = small
    grads = {}
    for precision in ("fp32", "bf16"):
        module = seed_module()
        fit(module, x[:128], y[:128], TrainConfig(epochs=1, batch_size=128, optimizer="sgd", lr=1.0, momentum=0.0,
                                                 shuffle=False, precision=precision))
        grads[precision] = weights(seed_module()) - weights(module)  # one SGD step with lr 1 = the gradient
    cos = torch.nn.functional.cosine_similarity(grads["fp32"], grads["bf16"], dim=0)
    assert cos > 0.99, cos
    assert not torch.equal(grads["fp32"], grads["bf16"])  # bf16 really ran


def test_validation_split_takes_the_last_fraction_like_keras(small):
    x, y, _, _ = small
    h = fit(seed_module(), x[:500], y[:500], TrainConfig(epochs=1, batch_size=100, validation_split=0.2))
    assert set(h.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    # Keras holds out the last 20%: 100 validation images, so accuracy is a multiple of 1/100
    assert round(h.history["val_accuracy"][0] * 100, 6).is_integer()


def test_early_stopping_restores_best_weights(small):
    x, y, xt, yt = small
    module = seed_module()
    snapshots = []
    config = TrainConfig(epochs=8, batch_size=100, lr=0.05, optimizer="sgd", momentum=0.9,
                         early_stopping_patience=0, monitor="val_loss", validation_split=0.25)
    h = fit(module, x[:800], y[:800], config, on_epoch=lambda e, logs: snapshots.append(weights(module).clone()))
    best = int(np.argmin(h.history["val_loss"]))
    assert h.best_epoch == best + 1
    assert torch.equal(weights(module), snapshots[best])
    assert h.stopped_early and len(h.history["loss"]) == best + 2  # patience 0: the first worse epoch stops it


def test_early_stopping_counts_patience_on_the_monitored_value():
    stopper = KeepBest("val_accuracy", patience=1)
    module = torch.nn.Linear(1, 1)
    stops = [stopper.update(epoch, {"val_accuracy": acc}, module)
             for epoch, acc in enumerate([0.5, 0.7, 0.6, 0.8, 0.79, 0.78], start=1)]
    assert stops == [False, False, False, False, False, True]  # higher is better for accuracies
    assert stopper.best_epoch == 4 and stopper.best == -0.8
    assert not KeepBest("val_loss", patience=None).update(1, {}, module)  # off: nothing is monitored
    with pytest.raises(ValueError, match="no validation data"):
        KeepBest("val_loss", patience=2).update(1, {"loss": 1.0}, module)


def test_non_finite_images_are_refused_before_training(small):
    x = small[0][:200].astype(np.float32) / 255
    x[5, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="the first at index 5"):
        fit(seed_module(), x, small[1][:200], TrainConfig(epochs=2, batch_size=50))


def test_explicit_lr_is_constant_and_default_is_one_cycle(small):
    x, y, _, _ = small
    h = fit(seed_module(), x[:256], y[:256], TrainConfig(epochs=2, batch_size=128, lr=0.002))
    assert h.history["lr"] == [0.002, 0.002]
    config = TrainConfig(epochs=2)
    assert config.resolved_schedule == "onecycle" and config.peak_lr() == pytest.approx(8e-3)
    h = fit(seed_module(), x[:256], y[:256], TrainConfig(epochs=2, batch_size=128))
    assert h.history["lr"][-1] < 1e-5  # the last step ran at the annealed floor


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_optimizer_learns(small, optimizer):
    x, y, xt, yt = small
    module = seed_module()
    h = fit(module, x, y, TrainConfig(epochs=2, batch_size=64, optimizer=optimizer))
    assert h.history["accuracy"][-1] > 0.6, h.history


def test_one_hot_targets_train_exactly_like_integer_labels(small):
    x, y, _, _ = small
    onehot = np.eye(10, dtype=np.float32)[y[:300]]
    config = TrainConfig(epochs=1, batch_size=100, label_smoothing=0.1, precision="fp32")
    by_index, by_onehot = seed_module(), seed_module()
    h_index = fit(by_index, x[:300], y[:300], config)
    h_onehot = fit(by_onehot, x[:300], onehot, config)
    assert h_onehot.history["loss"] == pytest.approx(h_index.history["loss"], rel=1e-5)
    assert h_onehot.history["accuracy"] == h_index.history["accuracy"]
    torch.testing.assert_close(weights(by_onehot), weights(by_index))


@pytest.mark.parametrize("kwargs,message", [
    ({"epochs": 0}, "epochs must be an integer in [1, 100000], got 0"),
    ({"batch_size": -1}, "batch_size must be an integer in [1, 1048576], got -1"),
    ({"optimizer": "adagrad"}, "optimizer must be adam or adamw or sgd or rmsprop, got 'adagrad'"),
    ({"validation_split": 1.0}, "validation_split must be a number in [0, 1)"),
    ({"schedule": "linear"}, "schedule must be"),
    ({"device": "tpu"}, "device must be 'auto', 'cpu' or 'cuda"),
])
def test_bad_config(kwargs, message, small):
    x, y, _, _ = small
    with pytest.raises(ValueError, match=re.escape(message)):
        fit(seed_module(), x[:10], y[:10], TrainConfig(**kwargs))


def test_device_images_are_channels_last_without_a_copy(small):
    x = small[0]
    t = to_device_images(x, torch.device("cpu"))
    assert t.shape == (2000, 1, 28, 28) and t.dtype == torch.uint8
    assert t.is_contiguous(memory_format=torch.channels_last)
