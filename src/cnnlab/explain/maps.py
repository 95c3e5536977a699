"""Look inside a trained network: response maps, learned kernels, Grad-CAM, saliency, top losses.

Compute only: every function returns numpy arrays in the channels-last layout users see, and
`plots.py` draws them. The functions take the plain `torch.nn.Sequential` the model facade builds:
children named like Keras layers (`conv2d`, `max_pooling2d_1`, `dense` ...), float32 input
(B, C, H, W) scaled to [0, 1], logits out.

Images may be given as users hold them (numpy uint8 (H, W), (H, W, C) or (1, H, W, C), scaled here
by 1/255; float numpy arrays are taken as already in [0, 1]) or as a prepared model input
(a torch tensor (C, H, W) or (1, C, H, W)), which is used as it is.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Children whose 4-D output repeats the one before it; not worth a figure of their own.
_SKIP_KINDS = ("dropout", "spatial_dropout2d", "gaussian_noise")
STAGE_SEP = "/"  # 'efficientnet_lite0/block3': a stage inside a backbone layer, as Keras writes nested layers


def layer_kind(name: str) -> str:
    """Keras layer kind from a child name: 'conv2d_2' -> 'conv2d', 'max_pooling2d' -> 'max_pooling2d'."""
    head, sep, tail = name.rpartition("_")
    return head if sep and tail.isdigit() else name


def conv_layers(module: nn.Sequential) -> list[str]:
    """Names of the children that hold an `nn.Conv2d`, in forward order."""
    return [name for name, child in module.named_children() if _conv_in(child) is not None]


def feature_maps(
    module: nn.Sequential, x: np.ndarray | torch.Tensor, layers: Sequence[str] | str | None = None
) -> list[tuple[str, np.ndarray]]:
    """Response maps of one image: [(name, array (H, W, C))] in forward order.

    `layers=None` or `"all"` takes every child with a spatial (4-D) output except dropout-like
    ones: convolutions (post-activation, as Keras reports them), pooling, batch norm, activations.
    A pretrained backbone child stands for its stages, named 'efficientnet_lite0/stem' ...
    '/block1' ... '/block7', '/top' (see `backbone_stages`), rather than one opaque map.
    A list of names takes those children (a backbone's name: all its stages; 'child/stage': one),
    and each must have a spatial output.
    """
    inp = _as_input(module, x)
    every = _map_targets(module)
    if layers is None or layers == "all":
        wanted = [(n, m) for n, m in every if layer_kind(n.partition(STAGE_SEP)[0]) not in _SKIP_KINDS]
        strict = False
    else:
        names = {n for name in ([layers] if isinstance(layers, str) else layers) for n in _map_names(module, name)}
        wanted = [(n, m) for n, m in every if n in names]  # forward order, whatever order they were asked in
        strict = True

    with _eval_mode(module), torch.no_grad(), _capture(wanted) as outputs:
        module(inp)

    maps = []
    for name, _ in wanted:
        out = outputs[name]
        if out.ndim != 4:
            if strict:
                raise ValueError(
                    f"layer {name!r} has output shape {tuple(out.shape)}, not a spatial map; "
                    f"choose one of {[n for n, _ in feature_maps(module, inp)]}"
                )
            continue
        maps.append((name, out[0].permute(1, 2, 0).cpu().numpy()))  # (C, H, W) -> (H, W, C)
    return maps


def backbone_stages(module: nn.Sequential) -> dict[str, str]:
    """What each backbone stage's map shows: {'efficientnet_lite0/block3': '2 MBConv 5x5, stride 2', ...}."""
    return {f"{name}{STAGE_SEP}{stage}": what for name, child in module.named_children()
            if hasattr(child, "named_stages") for stage, what, _ in child.named_stages()}


def filters(module: nn.Sequential, layer_name: str) -> np.ndarray:
    """Learned kernels of a Conv2D child as (kh, kw, in_ch, out_ch), Keras's layout."""
    conv = _conv_in(_child(module, layer_name))
    if conv is None:
        raise ValueError(
            f"layer {layer_name!r} is not a Conv2D layer; conv layers: {conv_layers(module)}"
        )
    # torch stores (out_ch, in_ch / groups, kh, kw)
    return conv.weight.detach().permute(2, 3, 1, 0).cpu().numpy().copy()


def grad_cam(
    module: nn.Sequential,
    x: np.ndarray | torch.Tensor,
    class_index: int | None = None,
    layer: str | None = None,
) -> np.ndarray:
    """Grad-CAM heat map (H, W) at the input's size, in [0, 1] (Selvaraju et al. 2017).

    Each channel k of the layer's response map A gets the weight mean(d logit_c / d A_k); the map is
    relu(sum_k weight_k * A_k), resized bilinearly to the input and divided by its maximum (all zeros
    when nothing speaks for the class). Uses the class logit, not its softmax probability, so other
    classes do not leak in. Defaults: the last Conv2D child (a backbone's: its last conv block) and
    the predicted class; `layer` may also name a backbone stage ('efficientnet_lite0/block6').
    """
    inp = _as_input(module, x).requires_grad_(True)  # a frozen backbone's maps need a graph too
    if layer is None:
        convs = conv_layers(module)
        if not convs:
            raise ValueError("grad_cam needs a Conv2D layer, and this model has none")
        layer = convs[-1]
    target = _cam_target(module, layer)

    with _eval_mode(module), torch.enable_grad(), _capture([(layer, target)]) as outputs:
        logits = module(inp)  # (1, n_classes)
    acts = outputs[layer]
    if acts.ndim != 4:
        raise ValueError(f"layer {layer!r} has output shape {tuple(acts.shape)}, not a spatial map")
    c = _class_index(logits, class_index)
    (grads,) = torch.autograd.grad(logits[0, c], acts)

    weights = grads.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True))  # (1, 1, h, w)
    cam = F.interpolate(cam, size=inp.shape[-2:], mode="bilinear", align_corners=False)
    return _unit_scale(cam[0, 0].detach())


def saliency(
    module: nn.Sequential, x: np.ndarray | torch.Tensor, class_index: int | None = None
) -> np.ndarray:
    """Gradient magnitude |d logit_c / d pixel| as (H, W), max over channels (Simonyan et al. 2014).

    Raw magnitudes in the model's input units ([0, 1] pixels), not rescaled; default class: the
    predicted one.
    """
    inp = _as_input(module, x).clone().requires_grad_(True)
    with _eval_mode(module), torch.enable_grad():
        logits = module(inp)
    c = _class_index(logits, class_index)
    (grads,) = torch.autograd.grad(logits[0, c], inp)  # (1, C, H, W)
    return grads[0].abs().amax(dim=0).cpu().numpy()


@dataclass(frozen=True)
class TopLosses:
    """The most confidently wrong examples, worst first; all arrays have length <= k."""

    index: np.ndarray  # position in the evaluated set
    y_true: np.ndarray
    y_pred: np.ndarray
    prob: np.ndarray  # probability given to the predicted (wrong) class
    loss: np.ndarray  # cross-entropy -log p(true class)

    def __len__(self) -> int:
        return len(self.index)


def top_losses(probs: np.ndarray, y_true: np.ndarray, k: int = 16) -> TopLosses:
    """Misclassified examples ranked by cross-entropy loss, highest first (ties: lower index first).

    `probs` is (N, n_classes) softmax output. Returns fewer than k when fewer are wrong.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, n_classes), got shape {probs.shape}")
    if y_true.shape != (probs.shape[0],):
        raise ValueError(f"y_true must have shape ({probs.shape[0]},), got {y_true.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if y_true.size and (y_true.min() < 0 or y_true.max() >= probs.shape[1]):
        raise ValueError(f"y_true holds labels outside 0..{probs.shape[1] - 1}")

    y_true = y_true.astype(np.int64)
    y_pred = probs.argmax(axis=1)
    rows = np.arange(len(y_true))
    loss = -np.log(np.clip(probs[rows, y_true], 1e-12, None))
    wrong = np.flatnonzero(y_pred != y_true)
    order = wrong[np.argsort(-loss[wrong], kind="stable")][:k]
    return TopLosses(
        index=order,
        y_true=y_true[order],
        y_pred=y_pred[order],
        prob=probs[order, y_pred[order]],
        loss=loss[order],
    )


# --- helpers ---------------------------------------------------------------------------------


def _conv_in(child: nn.Module) -> nn.Conv2d | None:
    return next((m for m in child.modules() if isinstance(m, nn.Conv2d)), None)


def _child(module: nn.Sequential, name: str) -> nn.Module:
    children = dict(module.named_children())
    if name not in children:
        raise ValueError(f"no layer named {name!r}; layers: {list(children)}")
    return children[name]


def _map_targets(module: nn.Sequential) -> list[tuple[str, nn.Module]]:
    """(map name, module whose output it is) for every child in forward order; a backbone child is its stages."""
    targets: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        if hasattr(child, "named_stages"):
            targets += [(f"{name}{STAGE_SEP}{stage}", sub) for stage, _, sub in child.named_stages()]
        else:
            targets.append((name, child))
    return targets


def _map_names(module: nn.Sequential, name: str) -> list[str]:
    """The maps one name asks for: a child, a backbone child's every stage, or one stage ('child/stage')."""
    child_name, sep, stage = name.partition(STAGE_SEP)
    child = _child(module, child_name)
    stages = [s for s, _, _ in child.named_stages()] if hasattr(child, "named_stages") else []
    if not sep:
        return [f"{name}{STAGE_SEP}{s}" for s in stages] or [name]
    if stage not in stages:
        known = f"its stages: {stages}" if stages else "only a pretrained backbone layer has stages"
        raise ValueError(f"layer {child_name!r} has no stage {stage!r}; {known}")
    return [name]


def _cam_target(module: nn.Sequential, name: str) -> nn.Module:
    """The module whose output Grad-CAM weighs: a child (a backbone: its last conv block) or a named stage."""
    child_name, sep, _ = name.partition(STAGE_SEP)
    child = _child(module, child_name)
    if not sep:
        return getattr(child, "cam_target", child)
    _map_names(module, name)
    return dict(_map_targets(module))[name]


@contextmanager
def _capture(targets: Sequence[tuple[str, nn.Module]]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of each (name, module) during the forward passes run inside the block.

    The hook handles are context managers too, so they are removed on leaving the block, also
    when the forward pass raises; the model keeps no hooks.
    """
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            outputs[name] = out

        return hook

    with ExitStack() as stack:
        for name, target in targets:
            stack.enter_context(target.register_forward_hook(keep(name)))
        yield outputs


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Inference behaviour (dropout off, batch-norm running statistics), restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _as_input(module: nn.Module, x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """One image -> float (1, C, H, W) on the module's device."""
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32

    if isinstance(x, torch.Tensor):
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"a tensor input must be (C, H, W) or (1, C, H, W), got {tuple(x.shape)}")
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim == 4:
            if arr.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of shape {arr.shape}")
            arr = arr[0]
        if arr.ndim != 3:
            raise ValueError(f"an image must be (H, W), (H, W, C) or (1, H, W, C), got {arr.shape}")
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        elif not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"an image must be uint8 or float in [0, 1], got dtype {arr.dtype}")
        t = torch.tensor(arr.transpose(2, 0, 1))[None]  # copies: the caller's array may be read-only

    first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and t.shape[1] != first.in_channels:
        raise ValueError(
            f"the model expects {first.in_channels} channel(s), the image has {t.shape[1]} "
            f"(input shape {tuple(t.shape)} as (1, C, H, W))"
        )
    return t.to(device=device, dtype=dtype)


def _class_index(logits: torch.Tensor, class_index: int | None) -> int:
    n = logits.shape[1]
    if class_index is None:
        return int(logits[0].argmax())
    if not 0 <= class_index < n:
        raise ValueError(f"class_index must be in 0..{n - 1}, got {class_index}")
    return int(class_index)


def _unit_scale(t: torch.Tensor) -> np.ndarray:
    arr = t.clamp_min(0).cpu().numpy().astype(np.float32)
    peak = float(arr.max()) if arr.size else 0.0
    return arr / peak if peak > 0 else np.zeros_like(arr)
