"""The training loop: `fit` a torch module on in-memory uint8 images, fast by default.

Why it is fast (see also bench/speed.py): the whole dataset lives on the device as uint8 and every
batch is one index into a per-epoch permutation (no DataLoader, no per-sample Python); scaling to
[0, 1] happens on the device; convolutions run channels_last; running sums of loss and accuracy stay
on the device so the loop never waits for the GPU except to report progress; bf16 autocast where
the hardware does bf16 natively (CUDA, recent x86 CPUs). Images in a disk-backed `numpy.memmap`
(an image folder too large for memory, see cnnlab.datasets.folders.stream) stay on the host instead, and each
batch's rows are read and moved to the device when it is needed (`HostBatches`).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.spec.build import place
from cnnlab.train.augment import augment_batch
from cnnlab.train.config import TrainConfig
from cnnlab.train.device_data import HostBatches, batches, check_finite, eval_images, scale, targets_tensor
from cnnlab.train.early_stopping import KeepBest
from cnnlab.train.optim import make_optimizer, make_schedule
from cnnlab.train.short_runs import settle_batchnorm

if TYPE_CHECKING:
    from cnnlab.train.checkpoints import Checkpointer
    from cnnlab.train.distributed import Distributed

StepCallback = Callable[[int, int, dict[str, float]], None]  # (epoch, step, logs)
EpochCallback = Callable[[int, dict[str, float]], None]  # (epoch, logs)

@dataclass
class History:
    """Per-epoch logs, Keras-shaped: `history.history["loss"]`, `["val_accuracy"]`, ..."""
    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def configure_cpu_threads() -> None:
    """Use every core we are allowed (affinity-aware), unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def seed_everything(seed: int | None) -> None:
    if seed is not None:  # numpy's global generator is the user's: fit draws nothing from it
        torch.manual_seed(seed)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast for "bf16", and for "auto" on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX):
    there it runs the seed CNN's training steps 1.7-2x faster than fp32 for the same accuracy."""
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:  # a binary head (one sigmoid unit): class 1 when the logit is positive
        return ((logits[:, 0] > 0).long() == y.reshape(len(y), -1)[:, 0].long()).sum()
    labels = y if y.ndim == 1 else y.argmax(1)
    return (logits.argmax(1) == labels).sum()


def loss_of(logits: torch.Tensor, y: torch.Tensor, binary: bool = False, weight: torch.Tensor | None = None,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy: softmax over classes, or (`binary`) sigmoid of one logit (B, 1) against 0/1 labels.

    Binary label smoothing is Keras's: targets y * (1 - s) + s / 2.
    """
    if not binary:
        return F.cross_entropy(logits, y, weight=weight, label_smoothing=label_smoothing)
    target = y.reshape(len(y), -1)[:, :1].float()
    target = target * (1 - label_smoothing) + label_smoothing / 2
    per_class = weight[y.reshape(len(y), -1)[:, 0].long()][:, None] if weight is not None else None
    return F.binary_cross_entropy_with_logits(logits[:, :1], target, weight=per_class)


def check_trainable(config: TrainConfig, has_validation: bool) -> None:
    """Settings that can only fail against the data: checked before training, not after an epoch."""
    if config.early_stopping_patience is not None and config.monitor.startswith("val_") and not (
            has_validation or config.validation_split > 0):
        raise ValueError(f"early stopping monitors {config.monitor!r} but there is no validation data; "
                         "give a validation split (--validation-split 0.1) or monitor 'loss'")


def fit(module: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, config: TrainConfig = TrainConfig(),
        *, validation_data: tuple[Any, Any] | None = None, on_step: StepCallback | None = None,
        on_epoch: EpochCallback | None = None, step_every: int = 20, should_stop: Callable[[], bool] | None = None,
        checkpoint: Checkpointer | None = None, dist: Distributed | None = None,
        lr_for_epoch: Callable[[int, float], float] | None = None) -> History:
    """Train `module` in place on images `x` uint8 (N, H, W, C) and labels `y`; return the History.

    `validation_data` (x_val, y_val) wins over `config.validation_split`, which (as in Keras) holds
    out the *last* fraction of `x` before any shuffling. `on_step` is called every `step_every` steps
    (each call waits for the device), `on_epoch` after each epoch; `should_stop` is polled each step.
    `checkpoint` saves (and on resume restores) the loop's state, see cnnlab.train.checkpoints; `dist` trains
    this process's shard of every batch under DDP, see cnnlab.train.distributed. `lr_for_epoch(epoch,
    lr)` is asked before each epoch for its learning rate (Keras's LearningRateScheduler, ReduceLROnPlateau);
    it sets the rate the schedule scales, so use it with the constant schedule.
    """
    device = _prepare_device(config.device)
    seed_everything(config.seed)
    xs, ys, val = _data_on_device(x, y, validation_data, config, device)
    place(module, device)
    if config.deterministic:
        from cnnlab.train.reproducible import deterministic_mode
        deterministic_mode(device, module)

    steps_per_epoch = math.ceil(len(xs) / config.batch_size)
    opt = make_optimizer(module.parameters(), config, device)
    sched = make_schedule(opt, config, steps_per_epoch * config.epochs)
    gen = torch.Generator().manual_seed(config.seed if config.seed is not None else torch.seed())
    step = _Stepper(dist.wrap(module) if dist else module, opt, sched, config, gen, device)  # DDP combines gradients
    history = History()
    stopper = KeepBest(config.monitor, config.early_stopping_patience, config.restore_best_weights)
    resumed = checkpoint.attach(module, opt, sched, gen, history, steps_per_epoch) if checkpoint else None
    if resumed:
        stopper.restore(resumed)

    first_epoch = 0 if resumed is None else config.epochs if resumed.finished else resumed.epoch
    for epoch in range(first_epoch, config.epochs):
        module.train()
        if lr_for_epoch and (lr := lr_for_epoch(epoch, step.last_lr)) != step.last_lr:
            step.set_lr(lr)
        start = time.perf_counter()
        sums = (_EpochSums.resume(resumed, device) if resumed and resumed.step
                else _EpochSums.start(len(xs), config.shuffle, gen, device))
        resumed = None
        step_no = _epoch_steps(epoch, step, xs, ys, sums, steps_per_epoch, config.batch_size,
                               _Reports(on_step, step_every, should_stop, checkpoint, dist, stopper))
        if dist:
            sums.seen = dist.reduce_epoch(module, sums.loss_sum, sums.correct, sums.seen)
        logs = {**sums.logs(f"epoch {epoch + 1}, step {step_no + 1}", checkpoint), **_validation_logs(module, val, config),
                "lr": step.last_lr, "seconds": time.perf_counter() - start}
        history.append(epoch + 1, logs)
        if on_epoch:
            on_epoch(epoch, logs)
        stop = bool(should_stop and should_stop())
        if not stop:
            stop = history.stopped_early = stopper.update(epoch + 1, logs, module)
            history.best_epoch = stopper.best_epoch or history.best_epoch
        if checkpoint:
            checkpoint.epoch_done(_loop_state(epoch + 1, 0, sums, stopper, finished=stop or epoch + 1 == config.epochs))
        if stop:
            break
    stopper.finish(module)
    settle_batchnorm(module, xs, config.seed)  # a short run's BatchNorm statistics are still near their start
    module.eval()
    return history


@dataclass
class _Reports:
    """Who hears from the steps of an epoch, and who may stop them."""
    on_step: StepCallback | None
    every: int
    should_stop: Callable[[], bool] | None
    checkpoint: Checkpointer | None
    dist: Distributed | None
    stopper: KeepBest


def _epoch_steps(epoch: int, step: _Stepper, xs: Any, ys: torch.Tensor, sums: _EpochSums, steps_per_epoch: int,
                 batch_size: int, reports: _Reports) -> int:
    """The steps of one epoch (from where a resumed one left off); returns the index of the last step taken."""
    checkpoint, dist = reports.checkpoint, reports.dist
    step_no = sums.first_step
    for step_no in range(sums.first_step, steps_per_epoch):
        idx = sums.order[step_no * batch_size:(step_no + 1) * batch_size]
        sums.add(*step(xs, ys, dist.shard(idx) if dist else idx))
        if checkpoint:  # saves every N steps; on Ctrl-C / SIGTERM saves and raises TrainingInterrupted
            checkpoint.step_done(epoch, step_no + 1, partial(_loop_state, epoch, step_no + 1, sums, reports.stopper))
        if (step_no + 1) % reports.every == 0 or step_no + 1 == steps_per_epoch:  # one wait for the device
            logs = sums.logs(f"epoch {epoch + 1}, step {step_no + 1}", checkpoint)
            if reports.on_step:
                reports.on_step(epoch, step_no + 1, {**logs, "steps": steps_per_epoch, "seen": sums.seen})
        if reports.should_stop and reports.should_stop():
            break
    return step_no


def _data_on_device(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, validation_data: tuple[Any, Any] | None,
                    config: TrainConfig, device: torch.device) -> tuple[Any, torch.Tensor, tuple[Any, torch.Tensor] | None]:
    """(training images, labels, validation pair or None) on the device, after Keras's hold-out and the input checks."""
    x, y, validation_data = hold_out(x, y, config.validation_split, validation_data)
    check_trainable(config, validation_data is not None)
    xs, ys = batches(x, device), targets_tensor(y, device)
    check_finite(xs if isinstance(xs, torch.Tensor) else torch.zeros(0, dtype=torch.uint8), ys)  # HostBatches checks its own
    val = (eval_images(validation_data[0], device), targets_tensor(validation_data[1], device)) if validation_data else None
    return xs, ys, val


def _validation_logs(module: nn.Module, val: tuple[Any, torch.Tensor] | None, config: TrainConfig) -> dict[str, float]:
    if val is None:
        return {}
    val_loss, val_acc = evaluate_tensors(module, *val, batch_size=config.eval_batch_size, binary=config.loss == "binary")
    return {"val_loss": val_loss, "val_accuracy": val_acc}


def _loop_state(epoch: int, step: int, sums: _EpochSums, stopper: KeepBest, finished: bool = False
                ) -> dict[str, Any]:
    """What a checkpoint holds besides module, optimiser, schedule and generator (epochs done, steps into the next)."""
    return dict(epoch=epoch, step=step, order=sums.order if step else None, loss_sum=sums.loss_sum,
                correct=sums.correct, seen=sums.seen, best=stopper.best, best_state=stopper.best_state,
                waited=stopper.waited, finished=finished)


def _prepare_device(name: str) -> torch.device:
    device = resolve_device(name)
    if device.type == "cpu":
        configure_cpu_threads()
    else:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    return device


def hold_out(x: Any, y: Any, validation_split: float, validation_data: tuple[Any, Any] | None
             ) -> tuple[Any, Any, tuple[Any, Any] | None]:
    """(x, y, validation_data): the last `validation_split` of the images held out, as Keras does."""
    if validation_data is None and validation_split > 0:
        n_val = int(len(x) * validation_split)
        if n_val < 1:
            raise ValueError(f"validation_split {validation_split} leaves no validation images out of {len(x)}")
        validation_data = (x[-n_val:], y[-n_val:])
        x, y = x[:-n_val], y[:-n_val]
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need as many labels as images, and at least one: got {len(x)} images, {len(y)} labels")
    return x, y, validation_data


class _Stepper:
    """One optimiser step on a batch of indices: scale, augment, forward (bf16 where native), loss, update."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, config: TrainConfig,
                 gen: torch.Generator, device: torch.device):
        self.model, self.opt, self.sched, self.config, self.gen = model, opt, sched, config, gen
        self.class_weight = torch.tensor(config.class_weight, device=device) if config.class_weight else None
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16(config.precision, device)
                         else contextlib.nullcontext())
        self.last_lr = opt.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        """A new base rate: the schedule's multiplier now applies to it (1 for the constant schedule)."""
        self.sched.base_lrs = [float(lr)] * len(self.opt.param_groups)
        for group in self.opt.param_groups:
            group["lr"] = group["initial_lr"] = float(lr)
        self.last_lr = float(lr)

    def __call__(self, xs: Any, ys: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(loss summed over the batch, correct predictions, batch size); neither waits for the device."""
        xb, yb = scale(xs[idx]), ys[idx]
        if self.config.augment is not None:
            xb = augment_batch(xb, self.config.augment, self.gen)
        with self.autocast:
            logits = self.model(xb)
            loss = loss_of(logits.float(), yb, self.config.loss == "binary", self.class_weight,
                           self.config.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.last_lr = self.opt.param_groups[0]["lr"]
        self.sched.step()
        return loss.detach() * len(idx), _correct(logits.detach(), yb), len(idx)


@dataclass
class _EpochSums:
    """An epoch's batch order and running sums; the sums stay on the device until a report reads them."""
    order: torch.Tensor
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    first_step: int = 0

    @classmethod
    def start(cls, n: int, shuffle: bool, gen: torch.Generator, device: torch.device) -> "_EpochSums":
        order = torch.randperm(n, generator=gen).to(device) if shuffle else torch.arange(n, device=device)
        return cls(order, torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long))

    @classmethod
    def resume(cls, state: Any, device: torch.device) -> "_EpochSums":
        """A mid-epoch checkpoint's permutation and running sums."""
        return cls(state.order.to(device), torch.tensor(state.loss_sum, device=device),
                   torch.tensor(state.correct, device=device, dtype=torch.long), state.seen, state.step)

    def add(self, loss_sum: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.seen += n

    def logs(self, where: str, checkpoint: Checkpointer | None) -> dict[str, float]:
        """Mean loss and accuracy so far (waits for the device); a diverged loss is an error saying where."""
        loss = self.loss_sum.item() / max(self.seen, 1)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged: loss is {loss} at {where}"
                                     + (f"; the last good checkpoint is kept in {checkpoint.folder}" if checkpoint else ""))
        return {"loss": loss, "accuracy": self.correct.item() / max(self.seen, 1)}


@torch.inference_mode()
def predict_logits(module: nn.Module, x: torch.Tensor | np.memmap, batch_size: int = 2000) -> torch.Tensor:
    """Logits for device images x (N, C, H, W), or a host memmap (N, H, W, C) read batch by batch, in large batches."""
    module.eval()
    params = list(module.parameters())
    device = params[0].device if params else getattr(x, "device", torch.device("cpu"))
    if isinstance(x, np.memmap):
        x = HostBatches(x, device)  # type: ignore[assignment]
    out = [module(scale(x[i:i + batch_size].to(device))).float() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def evaluate_tensors(module: nn.Module, x: torch.Tensor | np.memmap, y: torch.Tensor, batch_size: int = 2000,
                     binary: bool = False) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `module` on device tensors (or host memmap images, see predict_logits)."""
    logits = predict_logits(module, x, batch_size)
    return loss_and_accuracy(logits, y.to(logits.device), binary)


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor, binary: bool = False) -> tuple[float, float]:
    """(mean loss, accuracy) of logits against integer, one-hot or (binary) 0/1 targets: every evaluation's rule."""
    return loss_of(logits, y, binary).item(), _correct(logits, y).item() / max(len(y), 1)
