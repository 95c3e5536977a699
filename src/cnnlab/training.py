"""What Keras models do once built: compile, fit, evaluate, predict, save (shared by every model class).

A model class provides `spec`, `module`, `build(input_shape, seed)`, `num_classes`, `name`, `class_names`
and `preprocessing`; training itself is `cnnlab.train.fit.fit` on the model's torch module.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from cnnlab import optimizers
from cnnlab.datasets.arrays import as_images, as_labels
from cnnlab.runs import model_file
from cnnlab.spec.build import ends_in_softmax, place
from cnnlab.train.config import TrainConfig
from cnnlab.train.device_data import eval_images, targets_tensor
from cnnlab.train.fit import History, evaluate_tensors, fit, predict_logits, resolve_device

LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy")


class Trainer:
    """compile / fit / evaluate / predict / save, Keras-shaped, over the model's spec and torch module."""

    # --- training -------------------------------------------------------------------------
    def compile(self, optimizer: str | optimizers.Optimizer = "adam", loss: str = "sparse_categorical_crossentropy",
                metrics: list[str] | None = None, **options: Any) -> None:
        """Choose optimiser and loss; extra `options` are TrainConfig fields (schedule, label_smoothing...)."""
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        for metric in metrics or []:
            if metric not in ("accuracy", "acc"):
                raise ValueError(f"the only metric is 'accuracy', got {metric!r}")
        self._loss = loss
        self._train_options = {**optimizers.get(optimizer).train_options(), **options}
        TrainConfig(**self._train_options)  # validate now, not at fit time

    def fit(self, x: Any, y: Any, epochs: int = 1, batch_size: int | None = None, verbose: int | str = "auto",
            validation_split: float = 0.0, validation_data: tuple[Any, Any] | None = None, shuffle: bool = True,
            seed: int | None = 0, device: str = "auto", **options: Any) -> History:
        """Train; returns a History whose `.history` has loss, accuracy, val_loss, val_accuracy per epoch.

        batch_size None uses cnnlab's default (128); other TrainConfig fields can be passed as keywords.
        """
        from cnnlab.train.progress import progress_callbacks
        if self._loss is None:
            raise RuntimeError("call model.compile(optimizer=..., loss=...) before fit()")
        x = as_images(x, self.spec.input_shape)
        y = as_labels(y, len(x))
        self.build(tuple(x.shape[1:]), seed=seed)
        self._check_labels(y)
        if validation_data is not None:
            vx = as_images(validation_data[0], self.spec.input_shape, what="validation x")
            validation_data = (vx, as_labels(validation_data[1], len(vx), what="validation y"))
        options = {**self._train_options, **options}
        if batch_size is not None:
            options["batch_size"] = batch_size
        config = TrainConfig(epochs=epochs, validation_split=validation_split, shuffle=shuffle, seed=seed,
                             device=device, **options)
        if self.class_names is None:
            self.class_names = [str(i) for i in range(self.num_classes)]
        on_step, on_epoch, close = progress_callbacks(verbose, config.epochs)
        # fit seeds torch's global generator (dropout); fork it so the caller's random state is left as it was
        target = resolve_device(device)
        devices = [target] if target.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                return fit(self.module, x, y, config, validation_data=validation_data, on_step=on_step,
                           on_epoch=on_epoch)
        finally:
            close()

    def _check_labels(self, y: np.ndarray) -> None:
        k = self.num_classes
        if self._loss == "sparse_categorical_crossentropy" and y.ndim != 1:
            raise ValueError(f"loss 'sparse_categorical_crossentropy' takes integer labels (N,), got shape {y.shape}; "
                             "use loss='categorical_crossentropy' for one-hot labels")
        if self._loss == "categorical_crossentropy" and y.ndim != 2:
            raise ValueError(f"loss 'categorical_crossentropy' takes one-hot labels (N, {k}), got shape {y.shape}; "
                             "use to_categorical(y) or loss='sparse_categorical_crossentropy'")
        if y.ndim == 2 and y.shape[1] != k:
            raise ValueError(f"labels have {y.shape[1]} columns but the model's last layer has {k} units")
        if y.ndim == 1 and len(y) and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"labels range from {y.min()} to {y.max()}, but the model's last layer has {k} units "
                             f"(classes 0 to {k - 1})")

    # --- inference ------------------------------------------------------------------------
    def _device_images(self, x: Any) -> torch.Tensor | np.memmap:
        x = as_images(x, self.spec.input_shape)
        device = next(self.module.parameters()).device
        return eval_images(x, device)  # a memmap stays on the host, read batch by batch

    def predict(self, x: Any, batch_size: int = 2000, verbose: int | str = 0) -> np.ndarray:
        """Class probabilities (N, classes) as float32 numpy."""
        logits = predict_logits(self.module, self._device_images(x), batch_size)
        return (torch.softmax(logits, 1) if ends_in_softmax(self.spec) else logits).cpu().numpy()

    def evaluate(self, x: Any, y: Any, batch_size: int = 2000, verbose: int | str = 0,
                 return_dict: bool = False) -> list[float] | dict[str, float]:
        """[loss, accuracy] on (x, y), as Keras returns with metrics=['accuracy']."""
        xs = self._device_images(x)
        ys = targets_tensor(as_labels(y, len(xs)), next(self.module.parameters()).device)
        loss, acc = evaluate_tensors(self.module, xs, ys, batch_size)
        return {"loss": loss, "accuracy": acc} if return_dict else [loss, acc]

    # --- files ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save weights + spec + class names to a `.safetensors` file (no pickle)."""
        model_file.save_model(path, self.spec, self.module, self.class_names or [str(i) for i in range(self.num_classes)],
                      {"scale": 255, **self.preprocessing}, self.name)

    def to(self, device: str) -> Trainer:
        place(self.module, resolve_device(device))
        return self


