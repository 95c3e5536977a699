"""The training loop: `fit` a torch module on in-memory uint8 images, fast by default.

Why it is fast (see also bench/speed.py): the whole dataset lives on the device as uint8 and every
batch is one index into a per-epoch permutation (no DataLoader, no per-sample Python); scaling to
[0, 1] happens on the device; convolutions run channels_last; running sums of loss and accuracy stay
on the device so the loop never waits for the GPU except to report progress; bf16 autocast where
the hardware does bf16 natively (CUDA, recent x86 CPUs). Images in a disk-backed `numpy.memmap`
(an image folder too large for memory, see cnnlab.datasets.stream) stay on the host instead, and each
batch's rows are read and moved to the device when it is needed (`HostBatches`).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.augment import augment_batch
from cnnlab.device_data import HostBatches, batches, check_finite, eval_images, scale, targets_tensor
from cnnlab.model import place
from cnnlab.train_config import TrainConfig

if TYPE_CHECKING:
    from cnnlab.checkpoint import Checkpointer
    from cnnlab.distributed import Distributed

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


def make_optimizer(params: Any, config: TrainConfig, device: torch.device = torch.device("cpu")) -> torch.optim.Optimizer:
    lr, wd = config.peak_lr(), config.weight_decay
    # On CUDA the fused kernels update every tensor in one launch: small nets are launch-bound there.
    fused = {"fused": True} if device.type == "cuda" else {}
    if config.optimizer == "adam":  # Keras's epsilon, so the lecture's Adam and ours match
        return torch.optim.Adam(params, lr=lr, eps=1e-7, weight_decay=wd, **fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=1e-7, weight_decay=wd or 0.01, **fused)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, weight_decay=wd)


def make_schedule(opt: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if config.resolved_schedule == "onecycle":
        # Short warm-up then a long cosine anneal: large early steps, a fine finish in few epochs.
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.peak_lr(), total_steps=total_steps, pct_start=0.2,
            div_factor=10, final_div_factor=100, cycle_momentum=config.optimizer == "sgd")
    if config.resolved_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast for "bf16", and for "auto" on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX):
    there it runs the seed CNN's training steps 1.7-2x faster than fp32 for the same accuracy."""
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    labels = y if y.ndim == 1 else y.argmax(1)
    return (logits.argmax(1) == labels).sum()


def check_trainable(config: TrainConfig, has_validation: bool) -> None:
    """Settings that can only fail against the data: checked before training, not after an epoch."""
    if config.early_stopping_patience is not None and config.monitor.startswith("val_") and not (
            has_validation or config.validation_split > 0):
        raise ValueError(f"early stopping monitors {config.monitor!r} but there is no validation data; "
                         "give a validation split (--validation-split 0.1) or monitor 'loss'")


def fit(module: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, config: TrainConfig = TrainConfig(),
        *, validation_data: tuple[Any, Any] | None = None, on_step: StepCallback | None = None,
        on_epoch: EpochCallback | None = None, step_every: int = 20, should_stop: Callable[[], bool] | None = None,
        checkpoint: Checkpointer | None = None, dist: Distributed | None = None) -> History:
    """Train `module` in place on images `x` uint8 (N, H, W, C) and labels `y`; return the History.

    `validation_data` (x_val, y_val) wins over `config.validation_split`, which (as in Keras) holds
    out the *last* fraction of `x` before any shuffling. `on_step` is called every `step_every` steps
    (each call waits for the device), `on_epoch` after each epoch; `should_stop` is polled each step.
    `checkpoint` saves (and on resume restores) the loop's state, see cnnlab.checkpoint; `dist` trains
    this process's shard of every batch under DDP, see cnnlab.distributed.
    """
    device = resolve_device(config.device)
    if device.type == "cpu":
        configure_cpu_threads()
    else:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    seed_everything(config.seed)
    if validation_data is None and config.validation_split > 0:
        n_val = int(len(x) * config.validation_split)
        if n_val < 1:
            raise ValueError(f"validation_split {config.validation_split} leaves no validation images out of {len(x)}")
        validation_data = (x[-n_val:], y[-n_val:])
        x, y = x[:-n_val], y[:-n_val]

    check_trainable(config, validation_data is not None)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need as many labels as images, and at least one: got {len(x)} images, {len(y)} labels")
    xs, ys = batches(x, device), targets_tensor(y, device)
    check_finite(xs if isinstance(xs, torch.Tensor) else torch.zeros(0, dtype=torch.uint8), ys)  # HostBatches checks its own
    val = (eval_images(validation_data[0], device), targets_tensor(validation_data[1], device)) if validation_data else None
    place(module, device)
    if config.deterministic:
        from cnnlab.reproducible import deterministic_mode
        deterministic_mode(device, module)
    model = dist.wrap(module) if dist else module  # DDP: gradients are combined across ranks in backward()
    n = len(xs)
    steps_per_epoch = math.ceil(n / config.batch_size)
    opt = make_optimizer(module.parameters(), config, device)
    sched = make_schedule(opt, config, steps_per_epoch * config.epochs)
    gen = torch.Generator().manual_seed(config.seed if config.seed is not None else torch.seed())
    class_weight = torch.tensor(config.class_weight, device=device) if config.class_weight else None
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16(config.precision, device)
                else contextlib.nullcontext())

    history, best, best_state, waited = History(), None, None, 0
    resumed = checkpoint.attach(module, opt, sched, gen, history, steps_per_epoch) if checkpoint else None
    if resumed:
        best, best_state, waited = resumed.best, resumed.best_state, resumed.waited

    def loop_state(epochs_done: int, steps_done: int, finished: bool = False) -> dict[str, Any]:  # for checkpoints
        return dict(epoch=epochs_done, step=steps_done, order=order if steps_done else None, loss_sum=loss_sum,
                    correct=correct, seen=seen, best=best, best_state=best_state, waited=waited, finished=finished)

    first_epoch = 0 if resumed is None else config.epochs if resumed.finished else resumed.epoch
    for epoch in range(first_epoch, config.epochs):
        module.train()
        start = time.perf_counter()
        if resumed and resumed.step:  # a mid-epoch checkpoint: its permutation and running sums
            order, first_step, seen = resumed.order.to(device), resumed.step, resumed.seen
            loss_sum = torch.tensor(resumed.loss_sum, device=device)
            correct = torch.tensor(resumed.correct, device=device, dtype=torch.long)
        else:
            order = torch.randperm(n, generator=gen).to(device) if config.shuffle else torch.arange(n, device=device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen, first_step = 0, 0
        resumed = None
        for step in range(first_step, steps_per_epoch):
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            if dist:
                idx = dist.shard(idx)
            xb, yb = scale(xs[idx]), ys[idx]
            if config.augment is not None:
                xb = augment_batch(xb, config.augment, gen)
            with autocast:
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb, weight=class_weight, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last_lr = opt.param_groups[0]["lr"]
            sched.step()
            loss_sum += loss.detach() * len(idx)
            correct += _correct(logits.detach(), yb)
            seen += len(idx)
            if checkpoint:  # saves every N steps; on Ctrl-C / SIGTERM saves and raises TrainingInterrupted
                checkpoint.step_done(epoch, step + 1, lambda: loop_state(epoch, step + 1))
            if (step + 1) % step_every == 0 or step + 1 == steps_per_epoch:  # one wait for the device per step_every
                loss_now = loss_sum.item() / seen
                if not math.isfinite(loss_now):
                    raise FloatingPointError(f"training diverged: loss is {loss_now} at epoch {epoch + 1}, step {step + 1}"
                                             + (f"; the last good checkpoint is kept in {checkpoint.folder}" if checkpoint else ""))
                if on_step:
                    on_step(epoch, step + 1, {"loss": loss_now, "accuracy": correct.item() / seen,
                                              "steps": steps_per_epoch, "seen": seen})
            if should_stop and should_stop():
                break
        if dist:
            seen = dist.reduce_epoch(module, loss_sum, correct, seen)
        logs = {"loss": loss_sum.item() / max(seen, 1), "accuracy": correct.item() / max(seen, 1)}
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"training diverged: loss is {logs['loss']} at epoch {epoch + 1}, step {step + 1}"
                                     + (f"; the last good checkpoint is kept in {checkpoint.folder}" if checkpoint else ""))
        if val is not None:
            val_loss, val_acc = evaluate_tensors(module, *val, batch_size=config.eval_batch_size)
            logs.update(val_loss=val_loss, val_accuracy=val_acc)
        logs.update(lr=last_lr, seconds=time.perf_counter() - start)
        history.append(epoch + 1, logs)
        if on_epoch:
            on_epoch(epoch, logs)
        stop = bool(should_stop and should_stop())
        if config.early_stopping_patience is not None and not stop:
            if config.monitor not in logs:
                raise ValueError(f"early stopping monitors {config.monitor!r} but there is no validation data; "
                                 "give validation_split or validation_data, or monitor 'loss'")
            value = logs[config.monitor] * (-1 if "accuracy" in config.monitor else 1)
            if best is None or value < best:
                best, waited, history.best_epoch = value, 0, epoch + 1
                best_state = copy.deepcopy(module.state_dict()) if config.restore_best_weights else None
            else:
                waited += 1
                history.stopped_early = stop = waited > config.early_stopping_patience
        if checkpoint:
            checkpoint.epoch_done(loop_state(epoch + 1, 0, finished=stop or epoch + 1 == config.epochs))
        if stop:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history


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


def evaluate_tensors(module: nn.Module, x: torch.Tensor | np.memmap, y: torch.Tensor, batch_size: int = 2000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `module` on device tensors (or host memmap images, see predict_logits)."""
    logits = predict_logits(module, x, batch_size)
    y = y.to(logits.device)
    loss = F.cross_entropy(logits, y).item()
    return loss, _correct(logits, y).item() / max(len(y), 1)
