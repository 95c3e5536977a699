"""What Keras models do once built: compile, fit, evaluate, predict, save (shared by every model class).

A model class provides `spec`, `module`, `build(input_shape, seed)`, `num_classes`, `name`, `class_names`
and `preprocessing`; training itself is `cnnlab.train.fit.fit` on the model's torch module.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from cnnlab import keras_loop, optimizers
from cnnlab.callbacks import Callback, CallbackList
from cnnlab.datasets.arrays import as_images, as_labels
from cnnlab.datasets.directory import ImageDataset
from cnnlab.runs import model_file
from cnnlab.spec.build import class_count, ends_in_sigmoid, ends_in_softmax, place
from cnnlab.train.config import TrainConfig, recipe_fields
from cnnlab.train.device_data import eval_images, targets_tensor
from cnnlab.train.fit import History, evaluate_tensors, fit, predict_logits, resolve_device
from cnnlab.train.optim import CONSTANT_LR

LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy")
METRICS = ("accuracy", "acc")


class Trainer:
    """compile / fit / evaluate / predict / save, Keras-shaped, over the model's spec and torch module."""

    _metric = "accuracy"
    stop_training = False
    learning_rate: float | None = None  # the current rate while fit runs; lr callbacks set it

    # --- training -------------------------------------------------------------------------
    def compile(self, optimizer: str | optimizers.Optimizer = "rmsprop", loss: Any = "sparse_categorical_crossentropy",
                metrics: Any = None, loss_weights: Any = None, recipe: str = "keras", **options: Any) -> None:
        """Choose optimiser, loss and metrics; extra `options` are TrainConfig fields (schedule, label_smoothing...).

        `loss`, `loss_weights` and `metrics` take what Keras's take: names or `cnnlab.losses` / `cnnlab.metrics`
        objects, one for all outputs, a list in output order or a dict keyed by output name.
        recipe "keras" (default): Keras's semantics, the optimiser's default constant learning rate
        (Adam/RMSprop 1e-3, SGD 0.01, SGD without momentum) and no label smoothing. recipe "fast": cnnlab's recipe, as
        `cnnlab train` uses it: a one-cycle schedule (Adam peaks at 8e-3) and label smoothing 0.1.
        """
        # train.config.RECIPES: each recipe's table, with its reasons; fit's own arguments say how long
        base = {k: v for k, v in recipe_fields(recipe).items() if k != "epochs"}
        self._plan = keras_loop.make_plan(keras_loop.output_names(self) if self._output_count() > 1 else ["output"],
                                          loss, loss_weights, metrics)  # checks every name now, not at fit time
        self._compiled = (loss, loss_weights, metrics)
        self._loss = self._plan.losses[0].default_name if self._plan.losses[0] else "sparse_categorical_crossentropy"
        fast = (isinstance(loss, str) and loss in LOSSES and loss_weights is None
                and all(isinstance(m, str) and m in METRICS for m in metrics or []) and len(metrics or []) <= 1)
        self._fast = fast and self._output_count() == 1
        self._metric = (metrics or ["accuracy"])[0] if self._fast else "accuracy"
        given = optimizers.get(optimizer).train_options()
        chosen = {**base, **given}
        if recipe == "keras":  # a constant schedule needs its rate: the optimiser's Keras default
            chosen["lr"] = given["lr"] or CONSTANT_LR[given["optimizer"]]
        if self._loss == "binary_crossentropy":
            chosen["loss"] = "binary"
        self._train_options = {**chosen, **options}
        TrainConfig(**self._train_options)  # validate now, not at fit time

    def _general_for(self, x: Any, seed: int | None = None) -> bool:
        """_general() once the model is built (a Sequential learns its input shape from the first `x`)."""
        if self._module is None:
            self.build(None if isinstance(x, (list, tuple, dict)) else tuple(as_images(x).shape[1:]), seed=seed)
        return isinstance(x, dict) or self._general()

    def _general(self) -> bool:
        """Whether fit/evaluate take Keras's general loop (cnnlab.keras_loop) rather than the fast one:
        several inputs or outputs, per-pixel outputs, or losses and metrics beyond cross-entropy and accuracy."""
        if not getattr(self, "_fast", True) or self._output_count() != 1 or len(self.inputs) != 1:
            return True
        return len(self.outputs[0].shape) != 2

    def _general_plan(self) -> keras_loop.Plan:
        loss, loss_weights, metrics = getattr(self, "_compiled", (self._loss, None, None))
        names = keras_loop.output_names(self)
        return keras_loop.make_plan(names if len(names) > 1 else ["output"], loss, loss_weights, metrics)

    def _fit_general(self, x: Any, y: Any, epochs: int, batch_size: int | None, verbose: int | str,
                     callbacks: list[Callback] | None, validation_split: float, validation_data: Any, shuffle: bool,
                     seed: int | None, device: str) -> History:
        from cnnlab.train.optim import make_optimizer
        options = self._train_options
        if options.get("schedule") not in (None, "constant") or options.get("label_smoothing"):
            raise ValueError("this model trains in Keras's general loop (several inputs or outputs, or losses and "
                             "metrics beyond cross-entropy and accuracy), which uses a constant learning rate and no "
                             f"label smoothing; compile it with recipe='keras' (the default), got schedule "
                             f"{options.get('schedule')!r}, label_smoothing {options.get('label_smoothing')!r}")
        config = TrainConfig(epochs=epochs, seed=seed, device=device, **{**options, "schedule": "constant"})
        target = resolve_device(device)
        place(self.module, target)
        plan = self._plan = self._general_plan()
        size = batch_size or config.batch_size
        n = len(keras_loop.inputs_of(self, x)[0])
        hooks = CallbackList(callbacks, self, {"epochs": epochs, "verbose": verbose, "steps": -(-n // size)},
                             lambda logs: {("learning_rate" if k == "lr" else k): v for k, v in logs.items()})
        quiet = verbose in (0, False, "silent")
        self.stop_training, self.learning_rate = False, None
        hooks.call("on_train_begin", {})
        with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            opt = make_optimizer(self.module.parameters(), config, target)
            keras_loop.fit(self, plan, x, y, epochs=epochs, batch_size=size, shuffle=shuffle, seed=seed,
                           validation_split=validation_split, validation_data=validation_data, opt=opt, hooks=hooks,
                           print_epoch=None if quiet else lambda e, logs: print(
                               f"Epoch {e + 1}/{epochs} - " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())))
        hooks.call("on_train_end", hooks.epoch_logs[-1] if hooks.epoch_logs else {})
        history = History()
        for epoch, logs in enumerate(hooks.epoch_logs):
            history.append(epoch, logs)
        return history

    def fit(self, x: Any, y: Any = None, epochs: int = 1, batch_size: int | None = None, verbose: int | str = "auto",
            callbacks: list[Callback] | None = None, validation_split: float = 0.0,
            validation_data: Any = None, shuffle: bool = True, seed: int | None = 0, device: str = "auto",
            **options: Any) -> History:
        """Train; returns a History whose `.history` has loss, accuracy (the name given to compile),
        val_loss, val_accuracy per epoch. `x` may be an image dataset (image_dataset_from_directory).

        batch_size None uses the dataset's, else cnnlab's default (128); other TrainConfig fields can be
        passed as keywords.
        """
        if self._loss is None:
            raise RuntimeError("call model.compile(optimizer=..., loss=...) before fit()")
        if isinstance(x, ImageDataset) and not getattr(self, "_fast", True):  # the general loop takes arrays
            batch_size = batch_size or x.batch_size
            self.class_names = self.class_names or list(x.class_names)
            x, y = self._xy(x, y)
        if not isinstance(x, ImageDataset) and self._general_for(x, seed):
            return self._fit_general(x, y, epochs, batch_size, verbose, callbacks, validation_split, validation_data,
                                     shuffle, seed, device)
        if isinstance(x, ImageDataset):
            batch_size = batch_size or x.batch_size
            if self.class_names is None:
                self.class_names = list(x.class_names)
        x, y = self._xy(x, y)
        self.build(tuple(x.shape[1:]), seed=seed)
        self._check_labels(y)
        if validation_data is not None:
            vx, vy = self._xy(*(validation_data if isinstance(validation_data, tuple) else (validation_data, None)),
                              what="validation ")
            validation_data = (vx, vy)
        options = {**self._train_options, **options}
        if batch_size is not None:
            options["batch_size"] = batch_size
        config = TrainConfig(epochs=epochs, validation_split=validation_split, shuffle=shuffle, seed=seed,
                             device=device, **options)
        if self.class_names is None:
            self.class_names = [str(i) for i in range(class_count(self.spec))]
        return self._fit_fast(x, y, config, validation_data, callbacks, verbose)

    def _fit_fast(self, x: torch.Tensor | np.ndarray, y: Any, config: TrainConfig, validation_data: Any,
                  callbacks: list[Callback] | None, verbose: int | str) -> History:
        """cnnlab's fast loop (`cnnlab.train.fit`) with Keras's callbacks and progress around it."""
        from cnnlab.train.progress import progress_callbacks
        hooks = CallbackList(callbacks, self, {"epochs": config.epochs, "verbose": verbose,
                                               "steps": -(-len(x) // config.batch_size)}, self._keras_logs)
        progress_step, progress_epoch, close = progress_callbacks(verbose, config.epochs)

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            if progress_epoch:
                progress_epoch(epoch, logs)
            hooks.on_epoch(epoch, logs)

        def on_step(epoch: int, step: int, logs: dict[str, float]) -> None:
            if progress_step:
                progress_step(epoch, step, logs)
            hooks.on_step(epoch, step, logs)

        # fit seeds torch's global generator (dropout); fork it so the caller's random state is left as it was
        target = resolve_device(config.device)
        devices = [target] if target.type == "cuda" else []
        self.stop_training, self.learning_rate = False, None
        hooks.call("on_train_begin", {})
        try:
            with torch.random.fork_rng(devices=devices):
                done = fit(self.module, x, y, config, validation_data=validation_data, on_step=on_step,
                           on_epoch=on_epoch, step_every=1 if hooks.wants_batches else 20,
                           should_stop=hooks.should_stop, lr_for_epoch=hooks.lr_for_epoch if hooks.callbacks else None)
        finally:
            close()
        hooks.call("on_train_end", hooks.epoch_logs[-1] if hooks.epoch_logs else {})
        history = History(stopped_early=done.stopped_early, best_epoch=done.best_epoch)
        for epoch, logs in enumerate(hooks.epoch_logs):  # Keras numbers epochs from 0 in history.epoch
            history.append(epoch, logs)
        return history

    def _keras_logs(self, logs: dict[str, float]) -> dict[str, float]:
        """fit's logs under Keras's names: the metric as given to compile, and "learning_rate" (the key Keras 3's
        lr callbacks log; cnnlab logs it every epoch)."""
        names = {"loss": "loss", "accuracy": self._metric, "val_loss": "val_loss", "val_accuracy": f"val_{self._metric}",
                 "lr": "learning_rate"}
        return {names[k]: v for k, v in logs.items() if k in names}

    def _xy(self, x: Any, y: Any, what: str = "") -> tuple[Any, np.ndarray]:
        """(images, labels) from arrays or an image dataset (its uint8 images, whole: the fast path)."""
        if isinstance(x, ImageDataset):
            if y is not None:
                raise ValueError(f"{what}y must not be given with a dataset: the dataset holds the labels")
            x, y = x.images, (x.labels if self._loss == "categorical_crossentropy" else x.int_labels())
        if y is None:
            raise ValueError(f"{what}y is missing: give labels, or a dataset from image_dataset_from_directory")
        x = as_images(x, self.spec.input_shape, what=f"{what}x")
        return x, as_labels(y, len(x), what=f"{what}y")

    def _check_labels(self, y: np.ndarray) -> None:
        k = self.num_classes
        if self._loss == "binary_crossentropy":
            if k != 1 or y.ndim != 1 or (len(y) and not np.isin(y, (0, 1)).all()):
                raise ValueError(f"loss 'binary_crossentropy' takes a last layer of 1 unit (Dense(1, "
                                 f"activation='sigmoid'); this one has {k}) and 0/1 labels (N,), got shape {y.shape}")
            return
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
        x = as_images(x.images if isinstance(x, ImageDataset) else x, self.spec.input_shape)
        device = next(self.module.parameters()).device
        return eval_images(x, device)  # a memmap stays on the host, read batch by batch

    def predict(self, x: Any, batch_size: int = 2000, verbose: int | str = 0) -> np.ndarray:
        """What the last layer gives, float32 numpy: class probabilities (N, classes) after a softmax,
        the probability of class 1 (N, 1) after a one-unit sigmoid, else the raw outputs."""
        if isinstance(x, (list, tuple, dict)):
            outs = keras_loop.predict_outputs(self, keras_loop.inputs_of(self, x), batch_size)
            return outs[0] if len(outs) == 1 else outs  # type: ignore[return-value]
        logits = predict_logits(self.module, self._device_images(x), batch_size)
        if ends_in_softmax(self.spec):
            logits = torch.softmax(logits, 1)
        elif ends_in_sigmoid(self.spec):
            logits = torch.sigmoid(logits)
        return logits.cpu().numpy()

    def evaluate(self, x: Any, y: Any = None, batch_size: int = 2000, verbose: int | str = 0,
                 return_dict: bool = False) -> list[float] | dict[str, float]:
        """[loss, accuracy] on (x, y) or a dataset, as Keras returns with metrics=['accuracy']; with other losses,
        metrics or several outputs, Keras's list (loss, each output's loss, the metrics) or dict."""
        if not isinstance(x, ImageDataset) and self._general_for(x):
            logs = keras_loop.evaluate(self, self._general_plan(), x, y, batch_size)
            return logs if return_dict else [logs[k] for k in self._general_plan().log_names()]
        x, y = self._xy(x, y)
        xs = self._device_images(x)
        ys = targets_tensor(y, next(self.module.parameters()).device)
        loss, acc = evaluate_tensors(self.module, xs, ys, batch_size, binary=self._loss == "binary_crossentropy")
        return {"loss": loss, self._metric: acc} if return_dict else [loss, acc]

    # --- files ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save weights + spec + class names to a `.safetensors` file (no pickle)."""
        model_file.save_model(path, self.spec, self.module, self.class_names or [str(i) for i in range(class_count(self.spec))],
                      self.preprocessing, self.name)

    def save_weights(self, path: str | os.PathLike) -> None:
        """The weights alone, as a `.safetensors` file of the torch module's state dict."""
        from safetensors.torch import save_file
        if not str(path).endswith(".safetensors"):
            raise ValueError(f"save_weights writes .safetensors files, got {str(path)!r}")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}, str(path))

    def to(self, device: str) -> Trainer:
        place(self.module, resolve_device(device))
        return self


