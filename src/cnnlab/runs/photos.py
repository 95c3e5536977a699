"""A photo folder's run: candidate backbones (and mirror images) each with a logistic-regression head whose L2 is
chosen by cross-validation on the training photos; the winner saved as a run folder like any other, so
evaluate/predict/explain/export/serve treat it alike. Features stream from disk (`cnnlab.runs.photo_stream`): memory
does not grow with the photos. Its test photos are scored once, from fp32 features through the saved head, what the
saved model computes, so metrics.json is what `cnnlab evaluate` gets. The rule that sends a `train` here and the
model's spec live in `cnnlab.train.transfer`.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from cnnlab.datasets.folders.load import FolderFiles, stratified_split
from cnnlab.runs import run_folder
from cnnlab.runs.photo_stream import PhotoFeatures, held_out_logits, stream_features, with_mirrors
from cnnlab.spec import layers as L
from cnnlab.spec.build import new_module
from cnnlab.train.config import TrainConfig
from cnnlab.train.fine_tune import FineTuneOptions, Photos, fine_tune
from cnnlab.train.fit import History, resolve_device
from cnnlab.train.head import Head, HeadOptions, fit_head
from cnnlab.train.photo_features import crop_of, fit_images, fit_labels, load_photos
from cnnlab.train.transfer import BACKBONES, photo_spec

# Per-photo feature cost relative to Lite2 at its size (bf16 fast copy, measured on 3,409 photos: Lite0 0.53);
# Lite1 from its FLOPs (0.63 of Lite2's 0.9 GFLOPs).
COST = {"lite0": 0.53, "lite1": 0.7, "lite2": 1.0}


@dataclass(frozen=True)
class PhotoOptions:
    """What `train_photos` chooses between by cross-validation; the defaults need no flag.

    steps: the candidates in the order they are tried, each a backbone or "flip" (mirror images of the best
    backbone so far as extra training rows). The first always runs; a later one only when the feature time it
    would add (estimated from COST and the first's measured time) keeps the total within `budget` x the first's
    time or `min_seconds`, whichever is larger. flip: False leaves the "flip" steps out, True makes mirror images
    part of every candidate (no choice).

    The default budget tries Lite2 alone: on 2 cores Lite2's fp32 features (the test photos' too) already take
    ~0.6 of the practitioner's eager Lite0 time (clothing, measured 2026-12-04), and Lite0 would add
    ~0.25 more (x0.97 measured with it), while Lite2 won on every real collection measured (issue 22: +1-5 points).
    Raise `budget` (e.g. 3.0) to let cross-validation compare Lite0, mirror images and Lite1 too.
    """
    steps: tuple[str, ...] = ("lite2", "lite0", "flip", "lite1")
    flip: bool | None = None
    budget: float = 1.0
    min_seconds: float = 0.0
    head: HeadOptions = HeadOptions()
    holdout: float = 0.2  # of train/ held out as --fine-tune's validation when the folder has no val/ beside test/

    def __post_init__(self) -> None:
        known = (*BACKBONES, "flip")
        if not self.steps or self.steps[0] == "flip" or any(step not in known for step in self.steps):
            raise ValueError(f"steps must start with a backbone and be some of {', '.join(known)}, got {self.steps!r}")

    def planned(self) -> list[str]:
        return [s for s in self.steps if not (s == "flip" and self.flip is not None)]


@dataclass
class Candidate:
    """One backbone and mirror-image setting, with the head cross-validation fitted for it."""
    variant: str
    flip: bool
    head: Head
    seconds: float  # reading the photos and computing their features

    @property
    def log_loss(self) -> float:
        return self.head.cv.log_loss[self.head.cv.best]

    def line(self) -> str:
        cv = self.head.cv
        name = f"EfficientNet-{self.variant.capitalize()} {crop_of(self.variant)[0]}px" + (" + mirrored" if self.flip else "")
        return f"  {name:<36} CV accuracy {cv.accuracy[cv.best]:.4f}  log loss {self.log_loss:.4f}  (C {cv.c:.3g})"

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.variant, "flip": self.flip, "feature_seconds": self.seconds, **self.head.cv.to_dict()}


@dataclass
class Chosen:
    """The winning candidate with what the rest of training needs, and every candidate's scores."""
    best: Candidate
    feats: PhotoFeatures  # of the winner's backbone
    rows: np.ndarray  # of feats.fit: the head's photos
    tune: np.ndarray  # of feats.fit: --fine-tune's validation photos (empty without it)
    candidates: list[Candidate] = field(default_factory=list)


def head_for(feats: dict[str, torch.Tensor], y: np.ndarray, k: int, flip: bool, options: HeadOptions,
             seed: int) -> Head:
    """The head with C chosen by CV, scored on the photos as they are; with `flip` a photo and its mirror image
    share a fold, so no photo is ever scored by a head that saw its twin."""
    if not flip:
        return fit_head(feats["plain"], y, k, options, seed)
    n = len(y)
    return fit_head(torch.cat([feats["plain"], feats["flip"]]), np.concatenate([y, y]), k, options, seed,
                    groups=np.tile(np.arange(n), 2), scored=np.arange(2 * n) < n)


def split_rows(files: FolderFiles, fit: np.ndarray, tuning: bool, holdout: float, seed: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(rows the head is fitted on, rows --fine-tune validates on) of `fit` (positions of the files); all and
    none without it."""
    n_train, n = len(files.parts["train"]), len(fit)
    if not tuning:
        return np.arange(n), np.arange(0)
    if n > n_train:  # val/ beside test/ validates the fine-tune
        return np.arange(n_train), np.arange(n_train, n)
    return stratified_split(files.labels[fit], holdout, seed)


def choose(path: str | os.PathLike, options: PhotoOptions, tuning: bool, device: torch.device, seed: int,
           color: str, cache: bool, say: Callable[[str], None], progress: bool = True) -> Chosen | None:
    """The candidates `options` plans, within its time budget, each with a CV-fitted head; the one of lowest CV
    log loss (it rewards honest probabilities, accuracy alone does not). None when the photos are all gray."""
    chosen: Chosen | None = None
    candidates: list[Candidate] = []
    first_seconds, spent, skipped = 0.0, 0.0, []
    for step in options.planned():
        if candidates:
            variant = chosen.best.variant if step == "flip" else step
            # mirror images: the files are decoded again and the network runs on both
            estimate = first_seconds * COST[variant] / COST[candidates[0].variant] * (2 if step == "flip" else 1)
            if spent + estimate > max(options.budget * first_seconds, options.min_seconds):
                skipped.append(f"{step} (~{estimate:.0f}s)")
                continue
        tick = time.perf_counter()
        if step == "flip":
            feats, rows, tune = with_mirrors(chosen.feats, cache, progress), chosen.rows, chosen.tune
        else:
            feats = stream_features(path, step, color, seed, device, bool(options.flip), cache, progress)
            if feats is None:
                return None
            if not candidates:
                for line in feats.files.report.lines():
                    say(line)
            rows, tune = split_rows(feats.files, feats.fit, tuning, options.holdout, seed)
        flip = step == "flip" or bool(options.flip)
        say(feats.line(flip))
        found = _candidate(feats, flip, rows, options, seed)
        found.seconds = time.perf_counter() - tick
        first_seconds = first_seconds or found.seconds
        spent += found.seconds
        candidates.append(found)
        if chosen is None or found.log_loss < chosen.best.log_loss:
            chosen = Chosen(found, feats, rows, tune)
    assert chosen is not None
    chosen.candidates = candidates
    say(f"choice by {chosen.best.head.cv.folds}-fold cross-validation on {len(chosen.rows):,} training photos "
        f"(lowest log loss){'; over the time budget: ' + ', '.join(skipped) if skipped else ''}:")
    for cand in candidates:
        say(cand.line() + ("  <- chosen" if cand is chosen.best else ""))
    return chosen


def _candidate(feats: PhotoFeatures, flip: bool, rows: np.ndarray, options: PhotoOptions, seed: int) -> Candidate:
    """The head cross-validation fits on `feats` of the rows `rows` of its fit photos (with mirror images: `flip`)."""
    at = torch.from_numpy(feats.fit[rows])
    chosen = {"plain": feats.plain[at], **({"flip": feats.mirrored[at]} if flip else {})}
    y = feats.files.labels[feats.fit[rows]]
    head = head_for(chosen, y, len(feats.files.class_names), flip, options.head, seed)
    return Candidate(feats.variant, flip, head, 0.0)


class PhotoTrainingInterrupted(KeyboardInterrupt):
    """Photo training stopped by Ctrl-C or SIGTERM; the message says what was (not) written."""


@contextlib.contextmanager
def stops_cleanly(out: Path) -> Iterator[None]:
    """Within the block SIGTERM stops training as Ctrl-C does: the run folder is only ever renamed into place
    complete (`run_folder.write_run`), so a stop leaves none, and the message says so."""
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")
    main = threading.current_thread() is threading.main_thread()  # signals can only be caught there
    previous = signal.signal(signal.SIGTERM, on_term) if main else None
    try:
        yield
    except KeyboardInterrupt as exc:
        how = "SIGTERM" if str(exc) == "SIGTERM" else "Ctrl-C"
        where = (f"the run folder {out} was already complete" if out.exists() else
                 f"no run folder was written ({out} does not exist; features already computed stay cached)")
        raise PhotoTrainingInterrupted(f"photo training stopped by {how}; {where}") from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def train_photos(path: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0, color: str = "auto",
                 options: PhotoOptions = PhotoOptions(), fine_tune_options: FineTuneOptions | None = None,
                 cache: bool = True, say: Callable[[str], None] = print, device: str = "auto", progress: bool = True,
                 ) -> tuple[Path, History, run_folder.Evaluation] | None:
    """Train the photo classifier of folder `path` into run folder `out`; None when the images turn out gray.

    `fine_tune_options`: after the head, train the top of the backbone too (`cnnlab.train.fine_tune`), validated
    on val/ (or a held-out part of train/) that the head and the choices then do not see; kept only when it
    lowered that validation loss. Ctrl-C or SIGTERM raise PhotoTrainingInterrupted and leave no run folder.
    `progress`: a bar with the ETA of the features on stderr.
    """
    with stops_cleanly(Path(out)):
        return _train_photos(path, out, seed, color, options, fine_tune_options, cache, say, device, progress)


def _train_photos(path: str | os.PathLike, out: str | os.PathLike, seed: int, color: str, options: PhotoOptions,
                  fine_tune_options: FineTuneOptions | None, cache: bool, say: Callable[[str], None], device: str,
                  progress: bool) -> tuple[Path, History, run_folder.Evaluation] | None:
    started = time.perf_counter()
    torch.manual_seed(seed)
    where = resolve_device(device)
    chosen = choose(path, options, fine_tune_options is not None, where, seed, color, cache, say, progress)
    if chosen is None:
        return None
    best, files = chosen.best, chosen.feats.files
    k = len(files.class_names)
    cv = best.head.cv
    say(f"head: Dense({k}, softmax), multinomial logistic regression on {len(chosen.rows) * (1 + best.flip):,} "
        f"pooled features by full-batch L-BFGS, L2 C {cv.c:.3g} by {cv.folds}-fold CV, refitted on all of them")
    module = new_module(photo_spec(k, best.variant), seed)  # the ImageNet weights
    dense = module[2].linear
    with torch.no_grad():
        dense.weight.copy_(best.head.weight)
        dense.bias.copy_(best.head.bias)
    extra: dict[str, Any] = {"transfer": {
        "backbone": f"efficientnet_{best.variant}", "weights": "imagenet", "flip_features": best.flip,
        "c": cv.c, "cv_folds": cv.folds, "cv_accuracy": cv.accuracy[cv.best], "cv_log_loss": best.log_loss,
        "fit_photos": int(len(chosen.rows)), "candidates": [c.to_dict() for c in chosen.candidates]}}
    spec = photo_spec(k, best.variant)
    if fine_tune_options is not None:
        module.to(where)
        spec = _fine_tune(path, color, seed, cache, chosen, module, fine_tune_options, say, extra)
    tuned = module[0].net if spec.layers[0].trainable else None
    test = files.parts["test"]
    logits = held_out_logits(chosen.feats, dense, tuned, cache, progress)
    evaluation = run_folder.evaluation_of(logits, files.labels[test], list(files.class_names))
    module.cpu()
    say(f"cross-validation estimate: accuracy {cv.accuracy[cv.best]:.4f}, log loss {best.log_loss:.4f}; "
        f"test ({len(test):,} photos, the saved model in fp32): accuracy {evaluation.accuracy:.4f}, "
        f"log loss {evaluation.loss:.4f}")
    config = TrainConfig(epochs=1, batch_size=max(1, len(chosen.rows)), lr=1.0, weight_decay=1.0 / cv.c,
                         schedule="constant", label_smoothing=0.0, seed=seed, device=str(where))
    history = History()  # one "epoch": the cross-validated estimate is the run's validation figure
    history.append(1, {"val_loss": best.log_loss, "val_accuracy": cv.accuracy[cv.best],
                       "seconds": time.perf_counter() - started})
    seconds = time.perf_counter() - started
    extra["transfer"]["seconds"] = seconds
    name = f"efficientnet_{best.variant}-" + ("fine-tuned" if spec.layers[0].trainable else "transfer")
    run_folder.write_run(Path(out), files, spec, module, config, history, evaluation, seconds, model_name=name,
                         extra=extra)
    return Path(out), history, evaluation


def _fine_tune(path: str | os.PathLike, color: str, seed: int, cache: bool, chosen: Chosen, module: torch.nn.Module,
               options: FineTuneOptions, say: Callable[[str], None], extra: dict[str, Any]) -> L.ModelSpec:
    """The second stage on the chosen backbone, on its photos decoded into memory (the same files and order as
    the features'); the spec to save (a trainable backbone when it paid)."""
    data = load_photos(path, chosen.best.variant, color, seed, cache)
    images, labels = fit_images(data), fit_labels(data)
    if not np.array_equal(labels, chosen.feats.files.labels[chosen.feats.fit]):
        raise ValueError(f"the files of {path} changed during training (the photos read for --fine-tune are not the "
                         "ones whose features were computed); run it again")
    fit, val = Photos(images, labels, chosen.rows), Photos(images, labels, chosen.tune)
    where = f"{len(chosen.tune):,} photos the head did not see"
    net = module[0].net
    tuned = fine_tune(net, module[2].linear, fit, val, options, seed, say, where)
    extra["transfer"]["fine_tune"] = {**tuned.to_dict(), "lr": options.lr, "head_lr": options.head_lr,
                                      "batch_size": options.batch_size}
    return photo_spec(len(chosen.feats.files.class_names), chosen.best.variant, trainable=tuned.improved)
