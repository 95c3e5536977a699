"""Run folders, the unit of work: train into `runs/<name>/`, then evaluate, explain or predict from it.

A run folder holds model.safetensors, config.json, history.json/.csv, metrics.json, summary.txt and
figures. While training, `runs/<name>.partial/` holds the checkpoints that `--resume` continues from
(cnnlab.train.checkpoints); the finished folder is assembled in a hidden temporary folder and renamed into
place when complete, so a crash or Ctrl-C never leaves a half-written run, and an existing run is
never overwritten.
"""
from __future__ import annotations

import datetime as dt
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cnnlab.datasets import registry
from cnnlab.datasets.dataset import Dataset
from cnnlab.explain import metrics, plots
from cnnlab.fsutil import atomic_dir
from cnnlab.runs import model_file
from cnnlab.runs.predict import probabilities
from cnnlab.spec.build import new_module
from cnnlab.spec.layers import ModelSpec
from cnnlab.spec.memory import check_memory
from cnnlab.spec.summary import summary_dict, summary_text
from cnnlab.train import progress
from cnnlab.train.config import TrainConfig
from cnnlab.train.device_data import eval_images, targets_tensor
from cnnlab.train.fit import (
    EpochCallback,
    History,
    StepCallback,
    fit,
    loss_and_accuracy,
    predict_logits,
    resolve_device,
)

if TYPE_CHECKING:
    from cnnlab.datasets.folders.load import FolderFiles
    from cnnlab.train.checkpoints import Checkpointer
    from cnnlab.train.distributed import Distributed


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    probs: np.ndarray  # (N, classes)
    y_true: np.ndarray
    confusion: np.ndarray
    report: metrics.ClassReport

    def to_dict(self) -> dict[str, Any]:
        return {"test_loss": self.loss, "test_accuracy": self.accuracy, "n_test": int(len(self.y_true)),
                "per_class": self.report.to_dict(), "confusion_matrix": self.confusion.tolist()}


def default_run_dir(data: str, model: str, root: str | Path = "runs") -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in f"{model}-{data}")[:60].strip("-")
    return Path(root) / f"{safe}-{stamp}"


def evaluate(module: torch.nn.Module, spec: ModelSpec, x: np.ndarray, y: np.ndarray, class_names: list[str],
             batch_size: int = 2000) -> Evaluation:
    """Test loss, accuracy, probabilities, confusion matrix and per-class report in one pass."""
    if spec.input_shape is not None and tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise ValueError(f"the model takes {'x'.join(map(str, spec.input_shape))} images, but the test images are "
                         f"{'x'.join(map(str, x.shape[1:]))}: give --data a dataset the model was made for")
    device = next(module.parameters()).device
    return evaluation_of(predict_logits(module, eval_images(x, device), batch_size), y, class_names)


def evaluation_of(logits: torch.Tensor, y: np.ndarray, class_names: list[str]) -> Evaluation:
    """The `Evaluation` of logits (N, K) already computed (a transfer run's head on cached features)."""
    loss, accuracy = loss_and_accuracy(logits, targets_tensor(y, logits.device))
    probs = probabilities(logits).cpu().numpy()
    pred = probs.argmax(1)
    y = np.asarray(y)
    cm = metrics.confusion_matrix(y, pred, len(class_names))
    return Evaluation(loss, accuracy, probs, y, cm, metrics.classification_report(y, pred, class_names))


def train_run(data: Dataset, spec: ModelSpec, config: TrainConfig, out: str | Path, *, model_name: str = "model",
              on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None,
              should_stop: Any = None, figures: bool = True, step_every: int | None = None,
              checkpoint: Checkpointer | None = None, dist: Distributed | None = None
              ) -> tuple[Path, History, Evaluation | None]:
    """Build, train, evaluate on the test split, and write the run folder. Returns (folder, history, evaluation).

    `on_step` is called every `step_every` steps (see `fit`; default: about 20 times an epoch, see
    `progress.step_every`); the web page asks for more points than the progress bar. Those reports are also
    kept in history.json under "steps": [epochs done (1.5 = half-way through the second), loss, accuracy], the
    loss and accuracy so far in that epoch, for curves.png. With `checkpoint` the run can be resumed after a crash (cnnlab.train.checkpoints); with `dist`
    this is one of several DDP processes (cnnlab.train.distributed), and only rank 0 evaluates and writes (the
    others return evaluation None).
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"run folder {out} already exists; choose another --out")
    resolve_device(config.device)  # fail on a bad device before any work
    check_memory(spec, config.batch_size, True, f"training {model_name}")  # before any weights are allocated
    module = new_module(spec, config.seed)
    started = time.perf_counter()
    validation = (data.x_val, data.y_val) if data.x_val is not None else None  # an image folder's val/
    if step_every is None:
        step_every = progress.step_every(round(len(data.x_train) * (1 - config.validation_split)), config.batch_size)
    steps: list[list[float]] = []

    def record_step(epoch: int, step: int, logs: dict[str, float]) -> None:
        steps.append([round(epoch + step / logs["steps"], 5), round(logs["loss"], 5), round(logs["accuracy"], 5)])
        if on_step:
            on_step(epoch, step, logs)

    history = fit(module, data.x_train, data.y_train, config, validation_data=validation, on_step=record_step,
                  on_epoch=on_epoch, should_stop=should_stop, step_every=step_every, checkpoint=checkpoint, dist=dist)
    train_seconds = time.perf_counter() - started
    distributed = dist.finish(module, config.batch_size) if dist else None  # every rank takes part; the weights must agree
    if dist and not dist.is_main:
        return out, history, None
    evaluation = evaluate(module, spec, data.x_test, data.y_test, list(data.class_names))
    write_run(out, data, spec, module, config, history, evaluation, train_seconds, model_name=model_name,
              figures=figures, extra={"distributed": distributed} if distributed else {}, steps=steps)
    if checkpoint:
        checkpoint.finish()  # the run folder is complete; its checkpoint is no longer needed
    return out, history, evaluation


def write_run(out: Path, data: Dataset | FolderFiles, spec: ModelSpec, module: torch.nn.Module, config: TrainConfig,
              history: History, evaluation: Evaluation, train_seconds: float, *, model_name: str = "model",
              figures: bool = True, extra: dict[str, Any] | None = None,
              steps: list[list[float]] | None = None) -> None:
    """Write run folder `out` atomically: model file, config, history, metrics, summary and figures (`data`: its
    names, input shape and report; a photo run's `FolderFiles` has no pixels); `steps` are the within-epoch points of the training curve (see `train_run`)."""
    with atomic_dir(out) as tmp:
        model_file.save_model(tmp / model_file.MODEL_FILE, spec, module, list(data.class_names), preprocessing(data))
        model_file.write_json(tmp / "config.json", {
            "model": model_name, "data": data.name, "data_source": data.source, "spec": spec.to_dict(),
            "train": config.to_dict(), "resolved": {"schedule": config.resolved_schedule, "peak_lr": config.peak_lr(),
                                                    "device": str(resolve_device(config.device))},
            "created": dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), **(extra or {})})
        model_file.write_json(tmp / "history.json", {"epoch": history.epoch, **history.history,
                                             "stopped_early": history.stopped_early, "best_epoch": history.best_epoch,
                                             "steps": steps or []})
        (tmp / "history.csv").write_text(model_file.history_csv(history.history))
        model_file.write_json(tmp / "metrics.json", {**evaluation.to_dict(), "train_seconds": train_seconds})
        (tmp / "summary.txt").write_text(summary_text(spec) + "\n")
        model_file.write_json(tmp / "summary.json", summary_dict(spec))
        if figures:
            write_figures(tmp, history.history, evaluation, list(data.class_names), steps)


def write_figures(folder: Path, history: dict[str, list[float]], evaluation: Evaluation, class_names: list[str],
                  steps: list[list[float]] | None = None) -> None:
    plots.save_png(plots.training_curves(history, steps=steps), folder / "curves.png")
    plots.save_png(plots.confusion(evaluation.confusion, class_names), folder / "confusion.png")
    plots.save_png(plots.confusion(evaluation.confusion, class_names, normalize=True), folder / "confusion_normalized.png")


def preprocessing(data: Dataset | FolderFiles) -> dict[str, Any]:
    """What `predict` must do to a new image so that it looks like the training data (`model_file.model_preprocessing`)."""
    resize_to = getattr(getattr(data, "report", None), "resize_to", None)  # a folder read with a backbone's crop
    return model_file.model_preprocessing(data.input_shape, data.name, resize_to)


def read_history(run: str | Path) -> dict[str, list[float]]:
    raw = model_file.read_json(Path(run) / "history.json")
    return {k: v for k, v in raw.items() if isinstance(v, list) and k not in ("epoch", "steps")}


def read_steps(run: str | Path) -> list[list[float]]:
    """The per-step points of history.json ([epochs done, loss, accuracy]); [] for runs made before they were kept."""
    steps = model_file.read_json(Path(run) / "history.json").get("steps", [])
    return steps if isinstance(steps, list) else []


def read_config(run: str | Path) -> dict[str, Any]:
    return model_file.read_json(Path(run) / "config.json")


def folder_of(run: str | Path) -> Path | None:
    """The run folder of a run folder or of the model file inside one; None for a bare model file."""
    path = Path(run)
    folder = path if path.is_dir() else path.parent
    return folder if (folder / "config.json").is_file() else None


def folder_options_for(preprocessing: dict[str, Any]) -> dict[str, Any]:
    """How to read an image folder again exactly as the model was trained on it (size, colour, crop)."""
    if "size" not in preprocessing:
        return {}
    crop = {"resize_to": int(preprocessing["resize_to"])} if preprocessing.get("resize_to") else {}
    return {"image_size": tuple(preprocessing["size"]), "color": preprocessing.get("color", "auto"), **crop}


def data_of_run(run: str | Path | None, data: str | None = None, data_dir: str | None = None,
                preprocessing: dict[str, Any] | None = None) -> tuple[str, str | None, dict[str, Any]]:
    """Where a run's dataset is (or `data`'s, to test it on another): `registry.load_any` arguments.

    A built-in dataset is looked for where it was found at training time, then in the usual places;
    an image folder is read from the path its config.json records, at the model's size and colour.
    """
    folder = folder_of(run) if run is not None else None
    config = read_config(folder) if folder else {}
    name = data or config.get("data")
    if name is None:
        raise ValueError("only a run folder says which dataset its model was trained on: give --data")
    if data_dir is None and name == config.get("data"):
        source = config.get("data_source")
        data_dir = source if source and Path(source).is_dir() else None
    if name in registry.names():
        return name, data_dir, {}
    if preprocessing is None:
        if run is None:
            raise ValueError(f"the model's preprocessing is needed to read the image folder {name}")
        preprocessing = model_file.read_model(run).preprocessing
    return name, None, folder_options_for(preprocessing)


def dataset_of_run(run: str | Path | None, data: str | None = None, data_dir: str | None = None,
                   preprocessing: dict[str, Any] | None = None) -> Dataset:
    """The dataset a run was trained on, read as the model expects it (see `data_of_run`)."""
    name, data_dir, options = data_of_run(run, data, data_dir, preprocessing)
    return registry.load_any(name, data_dir, **options)


def metrics_text(evaluation: Evaluation) -> str:
    return (f"test accuracy {evaluation.accuracy:.4f}  test loss {evaluation.loss:.4f}  "
            f"({len(evaluation.y_true):,} images)\n" + evaluation.report.format() + "\n\nconfusion matrix "
            "(rows: true class, columns: predicted class)\n"
            + metrics.confusion_text(evaluation.confusion, evaluation.report.class_names))


def describe_run(folder: str | Path) -> dict[str, Any]:
    """Key facts of one run folder for listings: model, data, epochs, test accuracy and loss, size, time."""
    folder = Path(folder)
    info: dict[str, Any] = {"name": folder.name}
    if not (folder / model_file.MODEL_FILE).is_file():
        return {**info, "error": f"no {model_file.MODEL_FILE} in this folder"}
    try:
        config = read_config(folder)
        m = model_file.read_json(folder / "metrics.json")
        epochs = len(read_history(folder).get("loss", []))
        total = summary_dict(ModelSpec.from_dict(config["spec"]))["total_params"]
    except (ValueError, KeyError, AttributeError, TypeError) as exc:  # damaged JSON: list it, flagged
        return {**info, "error": f"{type(exc).__name__}: {exc}"}
    return {**info, "model": config.get("model"), "data": config.get("data"), "epochs": epochs,
            "test_accuracy": m.get("test_accuracy"), "test_loss": m.get("test_loss"), "n_test": m.get("n_test"),
            "params": total, "train_seconds": m.get("train_seconds"), "created": config.get("created")}


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """`describe_run` of every run folder under `root`, newest first; half-written (hidden) and interrupted
    (`.partial`) folders are left out."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.suffix != ".partial"]
    return [describe_run(p) for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]
