"""Fine-tuning the top of a pretrained EfficientNet-Lite after its head was fitted: `train_photos`'s second stage.

The bottom of the backbone stays frozen and runs as a fast inference copy (BN folded, channels_last, bf16 where
native) under no_grad; only the top stages, the head conv and the Dense head get gradients. BatchNorm stays in
eval mode with ImageNet's statistics and its scale/shift frozen (as Keras's fine-tuning guide does: a few
photos a class would give batch statistics far noisier than ImageNet's). The validation loss is checked before
the first epoch and after each; the best weights are kept, and when no epoch beats the head alone the head's
weights come back, so the stage never ends worse on validation than where it started.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.backbones.efficientnet_lite import EfficientNetLite
from cnnlab.backbones.inference import optimize_for_inference
from cnnlab.backbones.preprocess import from_unit
from cnnlab.spec.memory import memory_limit
from cnnlab.train.augment import random_resized_crop
from cnnlab.train.early_stopping import Improvement
from cnnlab.train.fit import loss_and_accuracy

MIN_EPOCHS, MAX_EPOCHS = 2, 10
IMAGES_SEEN = 2000  # augmented images in all for a small folder: ~60 steps of 32, enough at lr 1e-4 to move the top
MIN_GAIN = 1e-4  # an epoch is kept when it lowers the validation loss by more than this (not by float noise)


@dataclass(frozen=True)
class FineTuneOptions:
    """How the second stage trains the top of the backbone (see the module docstring for what stays frozen).

    stages: how many of the last stages train, with the head conv. 2 for Lite0 is stages 6-7 (5 MBConv blocks,
    112 -> 320 channels) + the 1x1 head conv: 2.6M of the backbone's 3.4M weights, the most ImageNet-specific
    features, yet they run at 14x14 and 7x7, so back-propagating through them costs a fraction of the frozen
    forward pass below (the stem and stages 1-5 at 112-14 px hold the generic edges and textures, kept as they are).
    """
    stages: int = 2
    lr: float = 1e-4  # the backbone's: pretrained weights need small steps, or the first epochs undo ImageNet
    head_lr: float = 1e-3  # the head is already fitted, so 10x the backbone's, not the 1e-2 it was fitted with
    epochs: int | None = None  # None: from the data size (`fine_tune_epochs`)
    batch_size: int = 32  # the bottom runs without gradients, so memory is ~batch x the top's 14x14 and 7x7 maps
    min_area: float = 0.35  # random resized crops keep at least a third of the photo: a user's objects are rarely
    # centred like ImageNet's, and a few epochs cannot average out crops that miss them

    def __post_init__(self) -> None:
        for name in ("lr", "head_lr"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                raise ValueError(f"fine-tune {name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("stages", "batch_size") + (("epochs",) if self.epochs is not None else ()):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"fine-tune {name} must be a positive whole number, got {value!r}")


class Photos(NamedTuple):
    """Rows `rows` of uint8 images (N, H, W, 3) and their labels: a split without copying the images."""
    images: np.ndarray
    labels: np.ndarray
    rows: np.ndarray


@dataclass
class FineTuneResult:
    improved: bool  # False: no epoch beat the head alone, whose weights were put back
    val_before: tuple[float, float]  # (loss, accuracy) with the head alone
    val_after: tuple[float, float]  # with the kept weights (== val_before when not improved)
    epochs: int
    kept_epoch: int  # 0: the head alone
    unfrozen: str
    trainable_weights: int
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"improved": self.improved, "val_loss_before": self.val_before[0], "val_accuracy_before": self.val_before[1],
                "val_loss_after": self.val_after[0], "val_accuracy_after": self.val_after[1], "epochs": self.epochs,
                "kept_epoch": self.kept_epoch, "unfrozen": self.unfrozen, "trainable_weights": self.trainable_weights,
                "seconds": self.seconds, "history": self.history}


def fine_tune_epochs(n_fit: int) -> int:
    """About IMAGES_SEEN augmented images in all, within [MIN_EPOCHS, MAX_EPOCHS] passes: small folders get
    more passes over their few photos, large ones two (each pass is a full backbone forward per image)."""
    return max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(IMAGES_SEEN / max(n_fit, 1))))


def top_layers(net: EfficientNetLite, stages: int) -> list[nn.Module]:
    """The last `stages` stages and the head conv block: the part that fine-tuning trains."""
    if not 1 <= stages <= len(net.stages):
        raise ValueError(f"fine-tune stages must be between 1 and {len(net.stages)}, got {stages}")
    return [*net.stages[len(net.stages) - stages:], net.head]


def conv_weights(layers: list[nn.Module]) -> list[nn.Parameter]:
    """Every parameter of `layers` except BatchNorm's scale and shift."""
    return [p for layer in layers for m in layer.modules() if not isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False)]


def fine_tune(net: EfficientNetLite, dense: nn.Linear, fit: Photos, val: Photos, options: FineTuneOptions = FineTuneOptions(),
              seed: int = 0, say: Callable[[str], None] = print, where: str = "validation") -> FineTuneResult:
    """Train the top of `net` and `dense` (the fitted head, on pooled features) in place; keep the best by val loss."""
    started = time.perf_counter()
    split = len(net.stages) - options.stages
    top = top_layers(net, options.stages)
    weights = conv_weights(top)
    net.requires_grad_(False)
    for p in weights:
        p.requires_grad_(True)
    net.set_freeze_bn(True)
    bottom = optimize_for_inference(net)  # a frozen copy; only its stem and first `split` stages run
    dtype = next(bottom.parameters()).dtype
    run_bottom = _bottom(bottom, split, dtype)
    val_batches = _val_batches(run_bottom, val, options.batch_size)
    trained = [*weights, *dense.parameters()]
    epochs = options.epochs or fine_tune_epochs(len(fit.rows))
    steps = epochs * math.ceil(len(fit.rows) / options.batch_size)
    opt = torch.optim.Adam([{"params": weights, "lr": options.lr}, {"params": list(dense.parameters()), "lr": options.head_lr}])
    # cosine to 0: big enough early to move, small at the end so the kept epoch is a settled one
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)  # the order and the crops
    # stochastic depth draws from torch's global generator, which building the fast copy may or may not have used
    # (its one-off fusion probe): seed it here so a run repeats whether the features came from the cache or not
    torch.manual_seed(seed)
    before = _evaluate(net, split, dense, val_batches, val)
    best, kept, snapshot = before, 0, [p.detach().clone() for p in trained]
    keep = Improvement("min", MIN_GAIN, best=before[0])  # the one keep-best rule, on the validation loss
    head_only = snapshot
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [before[0]], "val_accuracy": [before[1]]}
    unfrozen = _unfrozen_text(net, split, weights)
    if not keep.improves(0.0):  # no epoch could be kept: a loss is never below 0
        net.requires_grad_(False)
        say(f"fine-tune: skipped, the head alone already has val loss {before[0]:.4f} (accuracy {before[1]:.4f}) on "
            f"{where}, which no epoch can lower by {MIN_GAIN:g}; kept the head alone, backbone unchanged")
        return FineTuneResult(False, before, before, 0, 0, unfrozen, sum(p.numel() for p in weights),
                              time.perf_counter() - started, history)
    say(f"fine-tune: {unfrozen} (BatchNorm frozen: ImageNet statistics); Adam lr {options.lr:g} backbone, "
        f"{options.head_lr:g} head, cosine; {epochs} epoch{'s' * (epochs != 1)} of batch {options.batch_size}, "
        f"random resized crops "
        f"({options.min_area:.0%}-100% of the area) + flips; val loss {before[0]:.4f} (accuracy {before[1]:.4f}) before")
    for epoch in range(1, epochs + 1):
        tick = time.perf_counter()
        loss, acc = _train_epoch(net, split, dense, run_bottom, fit, options, opt, schedule, gen)
        val_loss, val_acc = _evaluate(net, split, dense, val_batches, val)
        for key, value in (("loss", loss), ("accuracy", acc), ("val_loss", val_loss), ("val_accuracy", val_acc)):
            history[key].append(value)
        better = keep.update(val_loss)
        if better:
            best, kept, snapshot = (val_loss, val_acc), epoch, [p.detach().clone() for p in trained]
        say(f"fine-tune epoch {epoch}/{epochs}: loss {loss:.4f} accuracy {acc:.4f}  val_loss {val_loss:.4f} "
            f"val_accuracy {val_acc:.4f}{'  (best)' if better else ''}  {time.perf_counter() - tick:.1f}s")
    with torch.no_grad():
        for p, saved in zip(trained, snapshot if kept else head_only):
            p.copy_(saved)
    net.requires_grad_(False)
    net.eval()
    say(_outcome_text(kept, epochs, before, best, min(history["val_loss"][1:]), where))
    return FineTuneResult(bool(kept), before, best, epochs, kept, unfrozen, sum(p.numel() for p in weights),
                          time.perf_counter() - started, history)


def _unfrozen_text(net: EfficientNetLite, split: int, weights: list[nn.Parameter]) -> str:
    n = len(net.stages)
    return (f"stage{'s' * (split + 1 < n)} {split + 1}{f'-{n}' * (split + 1 < n)} "
            f"({sum(len(s) for s in net.stages[split:])} MBConv blocks) + head conv, "
            f"{sum(p.numel() for p in weights):,} weights")


def _outcome_text(kept: int, epochs: int, before: tuple[float, float], best: tuple[float, float], lowest: float,
                  where: str) -> str:
    if kept:
        return (f"fine-tune: val loss {before[0]:.4f} -> {best[0]:.4f}, accuracy {before[1]:.4f} -> {best[1]:.4f} on "
                f"{where}; kept epoch {kept} of {epochs}")
    return (f"fine-tune: no epoch lowered the val loss on {where} below the head alone's {before[0]:.4f} (best "
            f"{lowest:.4f}): kept the head alone, backbone unchanged")


def _bottom(fast: EfficientNetLite, split: int, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """float (B, 3, H, W) in [0, 1] -> float32 input of stage `split` on the network's device, without gradients."""
    device = next(fast.parameters()).device

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # not inference_mode: the top saves this tensor for its backward pass
            h = from_unit(x.to(device)).to(dtype).contiguous(memory_format=torch.channels_last)
            h = fast.stem(h)
            for stage in fast.stages[:split]:
                h = stage(h)
            return h.float()
    return run


def _top(net: EfficientNetLite, split: int, dense: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    for stage in net.stages[split:]:
        h = stage(h)
    return dense(net.head(h).mean(dim=(2, 3)))  # (B, K) logits


def _pixels(photos: Photos, rows: np.ndarray) -> torch.Tensor:
    """uint8 rows -> float (B, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(photos.images[rows])).permute(0, 3, 1, 2).float().div_(255.0)


def _val_batches(run_bottom: Callable, val: Photos, batch_size: int) -> Callable[[], Iterable[torch.Tensor]]:
    """The bottom's outputs on the validation photos, batch by batch: computed once and kept (they never change)
    when they fit in a quarter of the memory budget, else recomputed at every check."""
    if len(val.rows) == 0:
        raise ValueError("fine-tuning needs validation photos (a val/ folder or a held-out part of train/)")

    def compute() -> Iterator[torch.Tensor]:
        return (run_bottom(_pixels(val, val.rows[i:i + batch_size])) for i in range(0, len(val.rows), batch_size))
    first = run_bottom(_pixels(val, val.rows[:1]))
    if first.numel() * first.element_size() * len(val.rows) > memory_limit() // 4:
        return compute
    kept = list(compute())
    return lambda: kept


def _evaluate(net: EfficientNetLite, split: int, dense: nn.Linear, batches: Callable[[], Iterable[torch.Tensor]],
              val: Photos) -> tuple[float, float]:
    net.eval()  # no stochastic depth
    with torch.no_grad():
        logits = torch.cat([_top(net, split, dense, h) for h in batches()])
    return loss_and_accuracy(logits, torch.as_tensor(val.labels[val.rows], dtype=torch.long, device=logits.device))


def _train_epoch(net: EfficientNetLite, split: int, dense: nn.Linear, run_bottom: Callable, fit: Photos,
                 options: FineTuneOptions, opt: torch.optim.Optimizer, schedule, gen: torch.Generator
                 ) -> tuple[float, float]:
    net.train()  # stochastic depth on in the top blocks; BatchNorm stays in eval (set_freeze_bn)
    order = fit.rows[torch.randperm(len(fit.rows), generator=gen).numpy()]
    total_loss, correct = 0.0, 0
    for start in range(0, len(order), options.batch_size):
        rows = order[start:start + options.batch_size]
        x = random_resized_crop(_pixels(fit, rows), options.min_area, generator=gen)
        logits = _top(net, split, dense, run_bottom(x))
        y = torch.as_tensor(fit.labels[rows], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        total_loss += loss.item() * len(rows)
        correct += int((logits.argmax(1) == y).sum())
    return total_loss / len(order), correct / len(order)
