"""Transfer learning on photo folders: a frozen ImageNet backbone, its features computed once, a softmax head fitted on them.

The trained run is one ordinary model file, spec `[EfficientNetLite0(trainable=False), GlobalAveragePooling2D,
Dense(K, softmax)]` (`trainable=True` after a fine-tune that paid, see cnnlab.train.fine_tune), so evaluate/predict/explain/export/serve treat it like any other run. Images are read by the
folder loader stretched to 224x224 (the backbone's training size; the same resize `predict` applies to a run's
inputs, so training and prediction see photos alike). `transfer_decision` is the rule that sends a `train` here.
"""
from __future__ import annotations

import io
import os
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.backbones.inference import extract_features, optimize_for_inference
from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.folders import cache as folder_cache
from cnnlab.datasets.folders.load import load_folder, stratified_split
from cnnlab.datasets.folders.scan import scan
from cnnlab.fsutil import atomic_write_bytes
from cnnlab.runs import run_folder
from cnnlab.spec import layers as L
from cnnlab.spec.build import new_module
from cnnlab.train.config import TrainConfig
from cnnlab.train.fine_tune import FineTuneOptions, Photos, fine_tune
from cnnlab.train.fit import History, loss_and_accuracy

PHOTO_MIN_SIDE = 64  # median short side above this: photos (digits, icons and CIFAR-like thumbnails are 28-64 px)
SIZE = (224, 224)  # EfficientNet-Lite0's training resolution
FEATURES_VERSION = 1
STD_FLOOR = 0.1  # of the median feature spread, when the head standardises its features (see `fit_head`)


@dataclass(frozen=True)
class HeadOptions:
    """How the softmax head is fitted on the pooled features (full batch: a few thousand rows x 1280 take ms a step)."""
    lr: float = 0.01  # Adam on standardised features; converges in ~100-300 steps on 2-10 classes
    weight_decay: float = 1e-3  # L2 on the weights: 1280 features for ~100 photos a class would overfit without
    max_steps: int = 2000  # a ceiling, not a target: the validation plateau stops it
    eval_every: int = 10  # steps between validation checks (one "epoch" in the history)
    patience: int = 10  # checks without a better validation loss before stopping (100 steps)
    holdout: float = 0.2  # of train/ held out for the plateau when the folder has no val/


def is_photo_folder(path: str | os.PathLike, sample: int = 200) -> tuple[bool, str]:
    """(photos?, why): the median short side of (up to `sample` of) the images is over PHOTO_MIN_SIDE pixels.

    Only headers are read; whether they are colour is known after decoding (see `train_photos`).
    """
    files = scan(path).files()
    step = max(1, len(files) // sample)
    sides = [s for s in (_short_side(p) for _, _, p in files[::step]) if s]
    if not sides:
        return False, "no readable images"
    median = statistics.median(sides)
    if median > PHOTO_MIN_SIDE:
        return True, f"photos: median short side {median:g} px > {PHOTO_MIN_SIDE}"
    return False, f"small images: median short side {median:g} px <= {PHOTO_MIN_SIDE}"


@dataclass(frozen=True)
class TransferRequest:
    """What a `train` asked for, as far as the photos-or-scratch rule cares; front ends fill it from their options.

    transfer: True forces the pretrained backbone, False refuses it, None lets the rule decide. fine_tune: also
    train the top of the backbone (implies transfer). chosen: the user's settings that pick a from-scratch model
    or recipe, named as the user gave them (("--model", "--epochs")): they keep the from-scratch path, and
    contradict a forced transfer.
    """
    data: str
    transfer: bool | None = None
    fine_tune: bool = False
    chosen: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransferDecision:
    use: bool  # train on the pretrained backbone (`train_photos`)
    reason: str  # the line to print; "" when there is nothing to say (not an image folder)


def transfer_decision(request: TransferRequest, gray: bool = False) -> TransferDecision:
    """Whether a `train` uses the pretrained backbone, and why. The default: a folder of photos (median short
    side over PHOTO_MIN_SIDE) with no model or recipe chosen. `gray`: the folder turned out all gray once
    decoded (`train_photos` returned None), which falls back to the seed CNN. ValueError on contradictions."""
    flag = "--fine-tune" if request.fine_tune else "--transfer"
    forced = request.fine_tune or request.transfer is True
    if request.fine_tune and request.transfer is False:
        raise ValueError("--fine-tune trains the pretrained backbone, so it cannot go with --no-transfer")
    if not Path(request.data).is_dir():
        if forced:
            raise ValueError(f"{flag} trains on a folder of photos; {request.data!r} is not a folder")
        return TransferDecision(False, "")
    if request.transfer is False:
        return TransferDecision(False, "model: trained from scratch (--no-transfer)")
    if request.chosen:
        chosen = ", ".join(request.chosen)
        if forced:
            raise ValueError(f"{flag} trains the pretrained EfficientNet-Lite0 with its own recipe, which {chosen} "
                             "would change; drop them, or add --no-transfer to train from scratch")
        return TransferDecision(False, f"model: trained from scratch as chosen ({chosen}; --transfer uses the "
                                       "pretrained backbone)")
    if gray:
        return TransferDecision(False, "the images are all gray: training the seed CNN from scratch instead"
                                + (" (--color rgb gives the pretrained backbone three equal channels)" if forced else ""))
    what = "pretrained EfficientNet-Lite0 (ImageNet) + a new softmax head" + (
        ", then its top stages fine-tuned" if request.fine_tune else "")
    if forced:
        return TransferDecision(True, f"model: {what} ({flag})")
    photos, why = is_photo_folder(request.data)
    if not photos:
        return TransferDecision(False, f"model: the seed CNN from scratch ({why}; --transfer uses the pretrained backbone)")
    return TransferDecision(True, f"model: {what} ({why}; --no-transfer trains the seed CNN from scratch)")


def _short_side(path: Path) -> int | None:
    try:
        with Image.open(path) as img:
            return min(img.size)
    except Exception:  # noqa: BLE001 - the loader reports unreadable files with their reason
        return None


def photo_spec(n_classes: int, trainable: bool = False) -> L.ModelSpec:
    """The transfer model; `trainable` records a fine-tuned backbone (its weights then count as trainable)."""
    return L.ModelSpec((L.EfficientNetLite0(weights="imagenet", include_top=False, trainable=trainable),
                        L.GlobalAveragePooling2D(), L.Dense(n_classes, activation="softmax")), (*SIZE, 3))


def pooled_features(fast: torch.nn.Module, images: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """uint8 (N, 224, 224, 3) -> (N, 1280) float32: the feature map averaged over space; `fast` is the backbone
    as `optimize_for_inference` makes it (folded BN, channels_last, bf16 where native)."""
    if len(images) == 0:
        return torch.zeros((0, 1280))
    return extract_features(fast, torch.from_numpy(np.ascontiguousarray(images)), batch_size, pool=True)


def _feature_cache(path: str | os.PathLike, seed: int, color: str) -> Path:
    layout = scan(path)
    options = {"image_size": list(SIZE), "color": color, "features": "efficientnet_lite0-avg",
               "version": FEATURES_VERSION, "seed": seed}
    return folder_cache.cache_file(layout, layout.files(), options).with_suffix(".features.npz")


def dataset_features(data: Dataset, net: torch.nn.Module, cache: Path | None,
                     say: Callable[[str], None]) -> dict[str, torch.Tensor]:
    """{"train", "val", "test"} pooled features, read from `cache` when it holds them for these images."""
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            found = {k: torch.from_numpy(z[k]) for k in z.files}
        if {k: len(v) for k, v in found.items()} == _counts(data):
            say(f"features: read from the cache {cache}")
            return found
    started = time.perf_counter()
    splits = {"train": data.x_train, "val": data.x_val, "test": data.x_test}
    fast = optimize_for_inference(net)  # one copy for every split
    out = {k: pooled_features(fast, x) for k, x in splits.items() if x is not None}
    seconds = time.perf_counter() - started
    n = sum(len(v) for v in out.values())
    say(f"features: EfficientNet-Lite0 on {n:,} images in {seconds:.1f}s ({n / max(seconds, 1e-9):.1f} images/s)")
    if cache is not None:
        buf = io.BytesIO()
        np.savez(buf, **{k: v.numpy() for k, v in out.items()})
        atomic_write_bytes(cache, buf.getvalue())
    return out


def _counts(data: Dataset) -> dict[str, int]:
    return {k: len(x) for k, x in (("train", data.x_train), ("val", data.x_val), ("test", data.x_test)) if x is not None}


def fit_head(f_train: torch.Tensor, y_train: np.ndarray, f_val: torch.Tensor, y_val: np.ndarray, n_classes: int,
             options: HeadOptions = HeadOptions(), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, History]:
    """Dense(K) weights (K, 1280) and bias (K,) on raw pooled features; stops on the validation-loss plateau.

    Trains on standardised features and folds the standardisation back, so the layer works on the raw ones.
    """
    torch.manual_seed(seed)
    mean, std = f_train.mean(0), f_train.std(0)
    # A floor at STD_FLOOR x the median spread: a feature nearly constant on the training photos (a ReLU6 channel that
    # fires on one of them) would get a raw weight of w / std ~ 1e5 and swing the logits on any new photo where it
    # fires a little (a 32-photo folder: test loss 2.15 and one error with 1e-6 as the floor, 0.00 and none with it).
    std = std.clamp_min(max(STD_FLOOR * float(std.median()), 1e-6))
    z_train, z_val = (f_train - mean) / std, (f_val - mean) / std
    t_train, t_val = torch.as_tensor(y_train, dtype=torch.long), torch.as_tensor(y_val, dtype=torch.long)
    w = torch.zeros((n_classes, f_train.shape[1]), requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=options.lr)
    history, best, best_state, waited = History(), float("inf"), (w.detach().clone(), b.detach().clone()), 0
    started = time.perf_counter()
    for step in range(1, options.max_steps + 1):
        logits = z_train @ w.T + b
        loss = F.cross_entropy(logits, t_train) + options.weight_decay * (w * w).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % options.eval_every:
            continue
        with torch.no_grad():
            train_loss, train_acc = loss_and_accuracy(logits, t_train)
            val_loss, val_acc = loss_and_accuracy(z_val @ w.T + b, t_val)
            history.append(step // options.eval_every, {
                "loss": train_loss, "accuracy": train_acc, "val_loss": val_loss, "val_accuracy": val_acc,
                "seconds": time.perf_counter() - started})
        started = time.perf_counter()
        if val_loss < best - 1e-4:
            best, best_state, waited, history.best_epoch = val_loss, (w.detach().clone(), b.detach().clone()), 0, len(history.epoch)
        else:
            waited += 1
            if waited >= options.patience:
                history.stopped_early = True
                break
    w_best, b_best = best_state
    weight = w_best / std  # (K, 1280) on raw features
    return weight, b_best - weight @ mean, history


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
    report = data.report and replace(data.report, size_note=f"image size {SIZE[0]}x{SIZE[1]}: the pretrained "
                                     "network's input size")  # load_folder would call it "as asked"
    for line in report.lines() if report else []:
        say(line)
    k = len(data.class_names)
    module = new_module(photo_spec(k), seed)  # the ImageNet weights
    net = module[0].net
    feats = dataset_features(data, net, _feature_cache(path, seed, color) if cache else None, say)
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
