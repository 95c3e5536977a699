"""Keras's general training loop: several inputs and outputs, any `cnnlab.losses` loss per output with loss
weights, `cnnlab.metrics` objects, per-pixel targets (segmentation).

`cnnlab.train.fit.fit` stays the fast path for the common case (one image input, one classification output,
cross-entropy and accuracy); `Trainer` sends everything else here. Logs are named as Keras 3 names them:
"loss" and the metrics by name for one output; for several, also "<output>_loss" and "<output>_<metric>";
validation adds "val_". The training metrics are the running values over the epoch's batches, as Keras's.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from cnnlab import losses as LS
from cnnlab import metrics as MS
from cnnlab.datasets.arrays import as_images
from cnnlab.train.device_data import scale


@dataclass
class Plan:
    """What compile chose, output by output: the loss, its weight in the total, the metrics."""
    names: list[str]
    losses: list[LS.Loss]
    weights: list[float]
    metrics: list[list[MS.Metric]]

    def log_names(self) -> list[str]:
        """Keras's order of evaluate()'s list: loss, each output's loss (several outputs), then the metrics."""
        many = len(self.names) > 1
        out = ["loss", *(f"{n}_loss" for n in self.names if many)]
        return out + [self._metric_key(j, m) for j in range(len(self.names)) for m in self.metrics[j]]

    def _metric_key(self, j: int, metric: MS.Metric) -> str:
        return f"{self.names[j]}_{metric.name}" if len(self.names) > 1 else metric.name


def _per_output(value: Any, names: list[str], what: str) -> list[Any]:
    """A compile argument for every output: one value for all, a list in output order, or a dict by output name."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{what} names output(s) {unknown}; the model's outputs are {names}")
        return [value.get(n) for n in names]
    if isinstance(value, (list, tuple)) and len(names) > 1:
        if len(value) != len(names):
            raise ValueError(f"{what} has {len(value)} entries for {len(names)} outputs {names}")
        return list(value)
    return [copy.deepcopy(value) if i else value for i in range(len(names))]


def make_plan(names: list[str], loss: Any, loss_weights: Any, metrics: Any) -> Plan:
    losses = [LS.get(x) if x is not None else None for x in _per_output(loss, names, "loss")]
    weights = [1.0 if w is None else float(w) for w in _per_output(loss_weights, names, "loss_weights")]
    if metrics is None:
        per = [[] for _ in names]
    elif isinstance(metrics, dict) or (len(names) > 1 and metrics and isinstance(metrics[0], (list, tuple))):
        per = _per_output(metrics, names, "metrics")
    else:
        per = [list(metrics) for _ in names]
    chosen = []
    for j, entries in enumerate(per):
        entries = [] if entries is None else list(entries) if isinstance(entries, (list, tuple)) else [entries]
        loss_name = losses[j].default_name if losses[j] else ""
        made = [MS.get(e, loss_name) for e in entries]
        chosen.append([copy.deepcopy(m) if j and any(m is o for o in entries) and len(names) > 1 else m for m in made])
    if all(x is None for x in losses):
        raise ValueError("compile needs a loss for at least one output")
    return Plan(names, losses, weights, chosen)


def inputs_of(model: Any, x: Any, what: str = "x", pixels_only: bool = True) -> list[Any]:
    """The model's input arrays: one array, a list in input order, or a dict keyed by input name.
    `pixels_only`: floats must be scaled to [0, 1] (fit, predict); an eager call takes any floats."""
    names = [t._keras_history[0].name for t in model.inputs]
    if isinstance(x, dict):
        missing = [n for n in names if n not in x]
        if missing:
            raise ValueError(f"{what} has no array for input(s) {missing}; the model's inputs are {names}")
        x = [x[n] for n in names]
    elif not isinstance(x, (list, tuple)) or len(names) == 1:
        x = [x]
    if len(x) != len(names):
        raise ValueError(f"{what} has {len(x)} arrays for {len(names)} model inputs {names}")
    arrays = [(as_images if pixels_only or _is_uint8(a) else _float_images)(
        a, tuple(t.shape[1:]), what=f"{what}[{n!r}]" if len(names) > 1 else what) for a, t, n in zip(x, model.inputs, names)]
    if len({len(a) for a in arrays}) > 1:
        raise ValueError(f"{what}: the inputs hold different numbers of images {[len(a) for a in arrays]}")
    return arrays


def _is_uint8(a: Any) -> bool:
    return getattr(a, "dtype", None) in (np.uint8, torch.uint8)


def _float_images(a: Any, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """Float images of any range for an eager call, checked against the input shape."""
    t = (a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))).float()
    if t.ndim == 3 and shape[-1] == 1:
        t = t[..., None]
    if tuple(t.shape[1:]) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(t.shape)}, expected (N, {', '.join(map(str, shape))})")
    return t


def targets_of(plan: Plan, y: Any, n: int, what: str = "y") -> list[np.ndarray | None]:
    """Targets per output, as numpy: one array, a list in output order, or a dict keyed by output name."""
    if y is None:
        raise ValueError(f"{what} is missing: give the targets, one array per output")
    if len(plan.names) > 1 and not isinstance(y, (list, tuple, dict)):
        raise ValueError(f"{what} must be a list or dict of {len(plan.names)} targets, one per output {plan.names}; "
                         f"got {type(y).__name__}")
    ys = _per_output(y, plan.names, what) if len(plan.names) > 1 or isinstance(y, dict) else [y]
    out = []
    for name, target in zip(plan.names, ys):
        if target is None:
            out.append(None)
            continue
        arr = target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
        if len(arr) != n:
            raise ValueError(f"{what} for output {name!r} has {len(arr)} rows for {n} images")
        out.append(arr)
    return out


def check_targets(model: Any, plan: Plan, ys: list[np.ndarray | None], what: str = "y") -> None:
    """Targets that fit their output and loss, checked before training: a clear error, not a failure mid-epoch."""
    for name, loss, y, t in zip(plan.names, plan.losses, ys, model.outputs):
        if y is None or loss is None:
            continue
        out = tuple(t.shape[1:])
        where = f"{what} for output {name!r}" if len(plan.names) > 1 else what
        if isinstance(loss, LS.SparseCategoricalCrossentropy):
            labels = y[..., 0] if y.ndim == len(out) + 1 and y.shape[-1] == 1 else y
            if tuple(labels.shape[1:]) != out[:-1]:
                raise ValueError(f"{where} has shape {y.shape}; sparse_categorical_crossentropy takes integer labels "
                                 f"of shape (N, {', '.join(map(str, out[:-1]))}) for outputs (N, {', '.join(map(str, out))})")
            if labels.size and (labels.min() < 0 or labels.max() >= out[-1] or not np.all(labels == np.round(labels))):
                raise ValueError(f"{where} holds labels from {labels.min()} to {labels.max()}, but the output has "
                                 f"{out[-1]} classes (integers 0 to {out[-1] - 1})")
        elif int(np.prod(y.shape[1:])) != int(np.prod(out)):
            raise ValueError(f"{where} has shape {y.shape}, but the output is (N, {', '.join(map(str, out))})")


class Heads:
    """The module's outputs in Keras's layout, and which final activation the module left to the loss."""

    def __init__(self, model: Any, activation: str | None):
        self.perms = [None if t._perm is None else torch.as_tensor(np.argsort(t._perm)) for t in model.outputs]
        self.activation = activation  # "softmax" / "sigmoid" when a one-output module returns logits

    def keras(self, raw: Any) -> list[torch.Tensor]:
        outs = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        outs = [o.float().movedim(1, -1) if o.ndim == 4 else o.float() for o in outs]
        return [o if p is None else o[:, p.to(o.device)] for o, p in zip(outs, self.perms)]

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        if self.activation == "softmax":
            return out.softmax(-1)
        return out.sigmoid() if self.activation == "sigmoid" else out


def _losses(plan: Plan, heads: Heads, outs: list[torch.Tensor], ys: list[torch.Tensor | None]
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(weighted total, each output's mean loss)."""
    parts = []
    for loss, out, y in zip(plan.losses, outs, ys):
        if loss is None or y is None:
            parts.append(torch.zeros((), device=out.device))
            continue
        logits = heads.activation is not None and loss.activation == heads.activation
        parts.append(loss.per_value(y, out if logits else heads.probabilities(out), logits=logits).mean())
    return sum(w * p for w, p in zip(plan.weights, parts)), parts  # type: ignore[return-value]


class _Tracker:
    """Keras's running loss means (weighted by batch size) and the metric states over an epoch."""

    def __init__(self, plan: Plan):
        self.plan, self.sums, self.seen = plan, np.zeros(1 + len(plan.names)), 0
        for ms in plan.metrics:
            for m in ms:
                m.reset_state()

    def add(self, total: torch.Tensor, parts: list[torch.Tensor], probs: list[torch.Tensor],
            ys: list[torch.Tensor | None]) -> None:
        n = len(probs[0])
        self.sums += n * np.array([float(total), *(float(p) for p in parts)])
        self.seen += n
        for ms, p, y in zip(self.plan.metrics, probs, ys):
            for m in ms:
                if y is not None:
                    m.update_state(y.cpu().numpy(), p.detach().cpu().numpy())

    def logs(self, prefix: str = "") -> dict[str, float]:
        means = self.sums / max(self.seen, 1)
        if not math.isfinite(means[0]):
            raise FloatingPointError(f"training diverged: loss is {means[0]}")
        out = {f"{prefix}loss": float(means[0])}
        if len(self.plan.names) > 1:
            out.update({f"{prefix}{n}_loss": float(v) for n, v in zip(self.plan.names, means[1:])})
        for j, ms in enumerate(self.plan.metrics):
            out.update({f"{prefix}{self.plan._metric_key(j, m)}": float(m.result()) for m in ms})
        return out


def _batch(arrays: list[Any], idx: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    return [scale(torch.as_tensor(np.asarray(a[idx]) if not isinstance(a, torch.Tensor) else a[idx])
                  .permute(0, 3, 1, 2).to(device)) for a in arrays]


def _targets(ys: list[np.ndarray | None], idx: np.ndarray, device: torch.device) -> list[torch.Tensor | None]:
    return [None if y is None else torch.as_tensor(y[idx]).to(device) for y in ys]


def run_epoch(module: nn.Module, plan: Plan, heads: Heads, xs: list[Any], ys: list[np.ndarray | None],
              batch_size: int, order: np.ndarray, opt: torch.optim.Optimizer | None,
              on_step: Callable[[int, dict[str, float]], None] | None = None,
              should_stop: Callable[[], bool] | None = None, prefix: str = "") -> dict[str, float]:
    """One pass over `order` in batches: training steps with `opt`, else an evaluation (no gradients)."""
    device = next(module.parameters(), torch.zeros(0)).device
    tracker = _Tracker(plan)
    module.train(opt is not None)
    for step, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start:start + batch_size]
        inputs, targets = _batch(xs, idx, device), _targets(ys, idx, device)
        with torch.set_grad_enabled(opt is not None):
            outs = heads.keras(module(*inputs))
            total, parts = _losses(plan, heads, outs, targets)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
        tracker.add(total.detach(), [p.detach() for p in parts], [heads.probabilities(o.detach()) for o in outs],
                    targets)
        if on_step:
            on_step(step + 1, tracker.logs(prefix))
        if should_stop and should_stop():
            break
    module.eval()
    return tracker.logs(prefix)


def predict_outputs(model: Any, xs: list[Any], batch_size: int) -> list[np.ndarray]:
    """Every output for the inputs `xs`, in Keras's layout, the final softmax/sigmoid applied."""
    module = model.module
    heads = Heads(model, _head_activation(model))
    device = next(module.parameters(), torch.zeros(0)).device
    module.eval()
    parts: list[list[torch.Tensor]] = []
    with torch.inference_mode():
        for start in range(0, len(xs[0]), batch_size):
            idx = np.arange(start, min(start + batch_size, len(xs[0])))
            parts.append([heads.probabilities(o).cpu() for o in heads.keras(module(*_batch(xs, idx, device)))])
    return [torch.cat([p[j] for p in parts]).numpy() for j in range(len(model.outputs))]


def _head_activation(model: Any) -> str | None:
    """The final activation a one-output model's module leaves out (see cnnlab.spec.build.assemble)."""
    from cnnlab.spec.build import ends_in_sigmoid, ends_in_softmax
    if len(model.outputs) != 1:
        return None
    return "softmax" if ends_in_softmax(model.spec) else "sigmoid" if ends_in_sigmoid(model.spec) else None


def output_names(model: Any) -> list[str]:
    return [t._keras_history[0].name for t in model.outputs]


def evaluate(model: Any, plan: Plan, x: Any, y: Any, batch_size: int) -> dict[str, float]:
    xs = inputs_of(model, x)
    ys = targets_of(plan, y, len(xs[0]))
    check_targets(model, plan, ys)
    heads = Heads(model, _head_activation(model))
    return run_epoch(model.module, plan, heads, xs, ys, batch_size, np.arange(len(xs[0])), None)


def fit(model: Any, plan: Plan, x: Any, y: Any, *, epochs: int, batch_size: int, shuffle: bool, seed: int | None,
        validation_split: float, validation_data: Any, opt: torch.optim.Optimizer, hooks: Any,
        print_epoch: Callable[[int, dict[str, float]], None] | None) -> None:
    """Train `model` with `plan`; each epoch's logs go to `hooks` (cnnlab.callbacks.CallbackList)."""
    xs = inputs_of(model, x)
    ys = targets_of(plan, y, len(xs[0]))
    check_targets(model, plan, ys)
    val = None
    if validation_data is not None:
        vx, vy = validation_data[:2] if isinstance(validation_data, (tuple, list)) else (validation_data, None)
        vxs = inputs_of(model, vx, "validation x")
        val = (vxs, targets_of(plan, vy, len(vxs[0]), "validation y"))
        check_targets(model, plan, val[1], "validation y")
    elif validation_split:
        n_val = int(len(xs[0]) * validation_split)
        if n_val < 1:
            raise ValueError(f"validation_split {validation_split} leaves no validation images out of {len(xs[0])}")
        val = ([a[-n_val:] for a in xs], [None if t is None else t[-n_val:] for t in ys])
        xs, ys = [a[:-n_val] for a in xs], [None if t is None else t[:-n_val] for t in ys]
    heads = Heads(model, _head_activation(model))
    rng = np.random.default_rng(seed)
    lr = opt.param_groups[0]["lr"]
    for epoch in range(epochs):
        if hooks.callbacks and (new := hooks.lr_for_epoch(epoch, lr)) != lr:
            lr = float(new)
            for group in opt.param_groups:
                group["lr"] = lr
        order = rng.permutation(len(xs[0])) if shuffle else np.arange(len(xs[0]))
        logs = run_epoch(model.module, plan, heads, xs, ys, batch_size, order, opt,
                         on_step=partial(hooks.on_step, epoch) if hooks.wants_batches else None,
                         should_stop=hooks.should_stop)
        if val is not None:
            logs.update(run_epoch(model.module, plan, heads, val[0], val[1], batch_size, np.arange(len(val[0][0])),
                                  None, prefix="val_"))
        if print_epoch:
            print_epoch(epoch, logs)
        hooks.on_epoch(epoch, {**logs, "lr": lr})
        if hooks.should_stop():
            break
