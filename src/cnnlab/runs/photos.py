"""A photo folder's run: the pretrained backbone and a head fitted on its features (`cnnlab.train.transfer`), saved
as a run folder like any other, so evaluate/predict/explain/export/serve treat it alike.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cnnlab.backbones.inference import optimize_for_inference
from cnnlab.datasets.folders.load import load_folder, stratified_split
from cnnlab.runs import run_folder
from cnnlab.spec.build import new_module
from cnnlab.train.config import TrainConfig
from cnnlab.train.fine_tune import FineTuneOptions, Photos, fine_tune
from cnnlab.train.fit import History
from cnnlab.train.transfer import (
    SIZE,
    HeadOptions,
    dataset_features,
    feature_cache,
    fit_head,
    photo_spec,
    pooled_features,
)


def train_photos(path: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0, color: str = "auto",
                 options: HeadOptions = HeadOptions(), fine_tune_options: FineTuneOptions | None = None,
                 cache: bool = True, say: Callable[[str], None] = print,
                 ) -> tuple[Path, History, run_folder.Evaluation] | None:
    """Train the photo classifier of folder `path` into run folder `out`; None when the images turn out gray.

    `fine_tune_options`: after the head, train the top of the backbone too (`cnnlab.train.fine_tune`), validated on
    the same photos as the head; the run keeps it only when it lowered the validation loss.
    """
    started = time.perf_counter()
    data = load_folder(path, image_size=SIZE, color=color, seed=seed)
    if data.input_shape[-1] != 3:
        return None
    for line in data.report.lines() if data.report else []:
        say(line)
    k = len(data.class_names)
    module = new_module(photo_spec(k), seed)  # the ImageNet weights
    net = module[0].net
    feats = dataset_features(data, net, feature_cache(path, seed, color) if cache else None, say)
    if data.x_val is not None:
        fit_rows, val_rows = np.arange(len(data.x_train)), np.arange(len(data.x_val))
        fit, val = Photos(data.x_train, data.y_train, fit_rows), Photos(data.x_val, data.y_val, val_rows)
        f_val, where = feats["val"], "val/"
    else:
        fit_rows, val_rows = stratified_split(np.asarray(data.y_train), options.holdout, seed)
        fit, val = Photos(data.x_train, data.y_train, fit_rows), Photos(data.x_train, data.y_train, val_rows)
        f_val = feats["train"][val_rows]
        where = f"{len(val_rows)} training images held out ({options.holdout:.0%} of each class)"
    f_fit = feats["train"][fit_rows]
    weight, bias, history = fit_head(f_fit, data.y_train[fit_rows], f_val, val.labels[val_rows], k, options, seed)
    steps = history.epoch[-1] * options.eval_every if history.epoch else 0
    best = (history.best_epoch or 0) * options.eval_every
    say(f"head: Dense({k}, softmax) on {len(f_fit):,} pooled 1280-d features, full-batch Adam lr {options.lr:g}, "
        f"L2 {options.weight_decay:g}; {steps} steps, kept step {best} (best loss on {where}"
        + (f", no gain for {options.patience * options.eval_every} steps" if history.stopped_early else "") + ")")
    dense = module[2].linear
    with torch.no_grad():
        dense.weight.copy_(weight)
        dense.bias.copy_(bias)
    extra: dict[str, Any] = {"transfer": {"backbone": "efficientnet_lite0", "weights": "imagenet", "head_steps": steps,
                                          "kept_step": best, "validation": where}}
    tuned = None
    if fine_tune_options is not None:
        tuned = fine_tune(net, dense, fit, val, fine_tune_options, seed, say, where)
        extra["transfer"]["fine_tune"] = {**tuned.to_dict(), "lr": fine_tune_options.lr,
                                          "head_lr": fine_tune_options.head_lr,
                                          "batch_size": fine_tune_options.batch_size}
    if tuned is not None and tuned.improved:  # the backbone changed: its test features too
        spec = photo_spec(k, trainable=True)
        with torch.no_grad():
            logits = dense(pooled_features(optimize_for_inference(net), data.x_test))
    else:
        spec = photo_spec(k)
        logits = feats["test"] @ weight.T + bias
    evaluation = run_folder.evaluation_of(logits, data.y_test, list(data.class_names))
    config = TrainConfig(epochs=max(1, len(history.epoch)), batch_size=max(1, len(f_fit)), lr=options.lr,
                         weight_decay=options.weight_decay, schedule="constant", label_smoothing=0.0, seed=seed,
                         device="cpu")
    seconds = time.perf_counter() - started
    extra["transfer"]["seconds"] = seconds
    name = "efficientnet_lite0-fine-tuned" if spec.layers[0].trainable else "efficientnet_lite0-transfer"
    run_folder.write_run(Path(out), data, spec, module, config, history, evaluation, seconds, model_name=name,
                         extra=extra)
    return Path(out), history, evaluation
