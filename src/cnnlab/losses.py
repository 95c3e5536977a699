"""Keras's `keras.losses`: loss functions (per-sample values) and loss objects (reduced to one number).

    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(), ...)   # or loss="sparse_categorical_crossentropy"

Functions take `(y_true, y_pred)` channels-last, as Keras's do, and return a torch tensor of per-sample
(or per-pixel, for (N, H, W, C) predictions) values; objects average them over every value ("sum over batch
size", Keras's default). Probabilities are clipped to [1e-7, 1 - 1e-7] before the log, as Keras does; training
feeds the logits the model's module gives (its final softmax or sigmoid left out) through `per_value(...,
logits=True)`, the same loss without the clip.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

EPSILON = 1e-7


def _t(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x))


def _log_probs(y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
    if logits:
        return F.log_softmax(y_pred.float(), -1)
    p = y_pred.float()
    return (p / p.sum(-1, keepdim=True)).clamp(EPSILON, 1 - EPSILON).log()


def sparse_categorical_crossentropy(y_true: Any, y_pred: Any, from_logits: bool = False) -> torch.Tensor:
    """Integer labels (N, ...) or (N, ..., 1) against class scores (N, ..., C): one value per label."""
    y_pred = _t(y_pred)
    y = _t(y_true).long()
    if y.ndim == y_pred.ndim and y.shape[-1] == 1:
        y = y[..., 0]
    if tuple(y.shape) != tuple(y_pred.shape[:-1]):
        raise ValueError(f"sparse_categorical_crossentropy: labels of shape {tuple(y.shape)} do not fit predictions of "
                         f"shape {tuple(y_pred.shape)}; expected labels {tuple(y_pred.shape[:-1])}")
    return -_log_probs(y_pred, from_logits).gather(-1, y.to(y_pred.device)[..., None])[..., 0]


def categorical_crossentropy(y_true: Any, y_pred: Any, from_logits: bool = False,
                             label_smoothing: float = 0.0) -> torch.Tensor:
    y_pred, y = _t(y_pred), _t(y_true).float().to(_t(y_pred).device)
    if label_smoothing:
        y = y * (1 - label_smoothing) + label_smoothing / y.shape[-1]
    return -(y * _log_probs(y_pred, from_logits)).sum(-1)


def binary_crossentropy(y_true: Any, y_pred: Any, from_logits: bool = False, label_smoothing: float = 0.0) -> torch.Tensor:
    """0/1 targets against probabilities of the same shape, averaged over the last axis (per sample)."""
    y_pred = _t(y_pred).float()
    y = _t(y_true).float().to(y_pred.device).reshape(y_pred.shape)
    if label_smoothing:
        y = y * (1 - label_smoothing) + label_smoothing / 2
    if from_logits:
        return F.binary_cross_entropy_with_logits(y_pred, y, reduction="none").mean(-1)
    p = y_pred.clamp(EPSILON, 1 - EPSILON)
    return -(y * p.log() + (1 - y) * (1 - p).log()).mean(-1)


def mean_squared_error(y_true: Any, y_pred: Any) -> torch.Tensor:
    y_pred = _t(y_pred).float()
    return (_t(y_true).float().to(y_pred.device).reshape(y_pred.shape) - y_pred).square().mean(-1)


def mean_absolute_error(y_true: Any, y_pred: Any) -> torch.Tensor:
    y_pred = _t(y_pred).float()
    return (_t(y_true).float().to(y_pred.device).reshape(y_pred.shape) - y_pred).abs().mean(-1)


class Loss:
    """A loss object: `loss(y_true, y_pred, sample_weight=None)` is the mean of the per-value losses."""

    default_name = ""
    activation = ""  # the output activation whose logits `per_value(..., logits=True)` takes

    def __init__(self, from_logits: bool = False, name: str | None = None, **options: Any):
        self.from_logits, self.name, self.options = from_logits, name or self.default_name, options

    def function(self, y_true: Any, y_pred: Any, from_logits: bool) -> torch.Tensor:
        raise NotImplementedError

    def per_value(self, y_true: Any, y_pred: Any, logits: bool = False) -> torch.Tensor:
        return self.function(y_true, y_pred, self.from_logits or logits)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> torch.Tensor:
        values = self.per_value(y_true, y_pred)
        if sample_weight is not None:
            w = _t(sample_weight).float().to(values.device)
            values = values * w.reshape(*w.shape, *[1] * (values.ndim - w.ndim))
        return values.mean()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


class SparseCategoricalCrossentropy(Loss):
    default_name, activation = "sparse_categorical_crossentropy", "softmax"

    def function(self, y_true: Any, y_pred: Any, from_logits: bool) -> torch.Tensor:
        return sparse_categorical_crossentropy(y_true, y_pred, from_logits)


class CategoricalCrossentropy(Loss):
    default_name, activation = "categorical_crossentropy", "softmax"

    def function(self, y_true: Any, y_pred: Any, from_logits: bool) -> torch.Tensor:
        return categorical_crossentropy(y_true, y_pred, from_logits, self.options.get("label_smoothing", 0.0))


class BinaryCrossentropy(Loss):
    default_name, activation = "binary_crossentropy", "sigmoid"

    def function(self, y_true: Any, y_pred: Any, from_logits: bool) -> torch.Tensor:
        return binary_crossentropy(y_true, y_pred, from_logits, self.options.get("label_smoothing", 0.0))


class MeanSquaredError(Loss):
    default_name = "mean_squared_error"

    def function(self, y_true: Any, y_pred: Any, from_logits: bool) -> torch.Tensor:
        return mean_squared_error(y_true, y_pred)


class MeanAbsoluteError(Loss):
    default_name = "mean_absolute_error"

    def function(self, y_true: Any, y_pred: Any, from_logits: bool) -> torch.Tensor:
        return mean_absolute_error(y_true, y_pred)


BY_NAME: dict[str, type[Loss]] = {cls.default_name: cls for cls in (
    SparseCategoricalCrossentropy, CategoricalCrossentropy, BinaryCrossentropy, MeanSquaredError, MeanAbsoluteError)}
BY_NAME.update(mse=MeanSquaredError, mae=MeanAbsoluteError)


def get(identifier: str | Loss) -> Loss:
    """The loss object for a compile entry: an object as it is, or Keras's string name."""
    if isinstance(identifier, Loss):
        return identifier
    if not isinstance(identifier, str) or identifier not in BY_NAME:
        raise ValueError(f"unknown loss {identifier!r}; expected one of {', '.join(BY_NAME)} or a cnnlab.losses object")
    return BY_NAME[identifier]()


def name_of(loss: str | Loss) -> str:
    return loss if isinstance(loss, str) else loss.default_name


__all__ = ["BinaryCrossentropy", "CategoricalCrossentropy", "Loss", "MeanAbsoluteError", "MeanSquaredError",
           "SparseCategoricalCrossentropy", "binary_crossentropy", "categorical_crossentropy", "get",
           "mean_absolute_error", "mean_squared_error", "sparse_categorical_crossentropy"]
