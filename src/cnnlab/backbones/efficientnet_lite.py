"""EfficientNet-Lite0/1/2 as a torch module: ImageNet classifier or (N, 1280, h, w) feature extractor.

EfficientNet-Lite is EfficientNet-B0's block table without squeeze-excitation, with ReLU6 instead of
swish and with the stem (32 channels) and head (1280 channels) kept fixed when the variant scales width
and depth. Strided convolutions pad like TensorFlow's "same" (the odd extra row/column goes at the
bottom/right), which the pretrained weights need: symmetric padding moves the logits by up to ~5.

Module layout (the names are what hooks and the state dict use)::

    stem                 ConvBNAct 3 -> 32, 3x3 stride 2
    stages[0..6]         nn.Sequential of MBConv blocks; hook stages[i] for stage outputs (``named_stages``)
    head                 ConvBNAct -> 1280, 1x1;  head.conv is "the last convolution" (Grad-CAM)
    pool, dropout, classifier   only when include_top (classifier: nn.Linear(1280, 1000))

``head`` output, after its BN and ReLU6, is the (N, 1280, H/32, W/32) map Keras gives with
``include_top=False``. ``blocks()`` lists the MBConv blocks in forward order, for "train the top N".

For inference only, ``cnnlab.backbones.inference`` makes a fast frozen copy and runs it on uint8 batches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # TensorFlow's value; PyTorch's 1e-5 shifts the logits of the pretrained weights
BN_MOMENTUM = 0.01  # PyTorch convention (1 - TensorFlow's 0.99)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class StageSpec:
    """One row of EfficientNet-B0's block table (channels before width scaling)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-B0's table, which every Lite variant scales.
B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class Variant:
    """Compound-scaling coefficients of one Lite variant and its training resolution."""

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS: dict[str, Variant] = {
    "lite0": Variant("lite0", 1.0, 1.0, 224, 0.2),
    "lite1": Variant("lite1", 1.0, 1.1, 240, 0.2),
    "lite2": Variant("lite2", 1.1, 1.2, 260, 0.3),
}


def get_variant(name: str) -> Variant:
    """The Variant called ``name`` ("lite0", "lite1", "lite2"; "efficientnet-lite0" works too)."""
    key = name.lower().removeprefix("efficientnet-").removeprefix("efficientnet_")
    if key not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[key]


def scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Width scaling as in the TF reference: round to a multiple of ``divisor``, never below 90%."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def stage_plan(variant: Variant) -> list[tuple[StageSpec, int]]:
    """(spec, scaled output channels) per stage, repeats already depth-scaled.

    Lite keeps the first and last stage at one block each (the TF builder's ``fix_head_stem``).
    """
    plan = []
    last = len(B0_STAGES) - 1
    for i, spec in enumerate(B0_STAGES):
        repeats = spec.repeats if i in (0, last) else math.ceil(spec.repeats * variant.depth)
        scaled = StageSpec(repeats, spec.kernel, spec.stride, spec.expand, spec.out_channels)
        plan.append((scaled, scale_channels(spec.out_channels, variant.width)))
    return plan


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) for one axis: output is ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def layer_names(variant: str) -> list[str]:
    """Names of `EfficientNetLite.layers()` as Keras names EfficientNet's parts: stem, block1a, block2a, block2b,
    ..., top (a letter per block of a stage)."""
    names = ["stem"]
    for i, (spec, _) in enumerate(stage_plan(get_variant(variant))):
        names += [f"block{i + 1}{chr(ord('a') + j)}" for j in range(spec.repeats)]
    return [*names, "top"]


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> ReLU6 (or nothing); strided convs pad like TF "same".

    ``fold_batchnorm`` turns ``bn`` into Identity and gives ``conv`` a bias, for inference.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # Stride 1 with an odd kernel is symmetric "same" padding, which Conv2d does without a copy.
        pad = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        # Not in place: a hook on conv (or bn) output must see the value before the clamp.
        self.act: nn.Module = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            top, bottom = same_padding(x.shape[-2], self.kernel, self.stride)
            left, right = same_padding(x.shape[-1], self.kernel, self.stride)
            x = F.pad(x, (left, right, top, bottom))
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (absent when expand == 1) -> depthwise kxk -> 1x1 project (+ skip).

    ``drop_path`` is the stochastic-depth rate: in training a whole sample's residual branch is
    dropped with that probability (the TF reference's drop_connect); it does nothing in eval.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float = 0.0):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1) if expand != 1 else None
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBNAct(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        if not self.residual:
            return y
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand((y.shape[0], 1, 1, 1), dtype=y.dtype, device=y.device) < keep  # (B, 1, 1, 1)
            y = y * mask / keep
        return y + x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite; ``forward`` gives (N, 1000) logits, or the (N, 1280, H/32, W/32) head map.

    Input: (N, 3, H, W) float RGB scaled as ``(x - 127) / 128`` (see ``cnnlab.backbones.preprocess``).
    Any H, W work (padding is computed per input); the weights were trained at ``variant.resolution``.
    """

    def __init__(self, variant: str = "lite0", include_top: bool = True, drop_path_rate: float = 0.2,
                 dropout: float | None = None):
        super().__init__()
        self.variant = get_variant(variant)
        self.include_top = include_top
        self.freeze_bn = False
        self.stem = ConvBNAct(3, STEM_CHANNELS, 3, 2)
        plan = stage_plan(self.variant)
        total = sum(spec.repeats for spec, _ in plan)
        stages, cin, index = [], STEM_CHANNELS, 0
        for spec, cout in plan:
            blocks = []
            for r in range(spec.repeats):
                # Stochastic depth grows linearly with depth, as in the TF reference.
                rate = drop_path_rate * index / total
                blocks.append(MBConv(cin, cout, spec.kernel, spec.stride if r == 0 else 1, spec.expand, rate))
                cin, index = cout, index + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.head = ConvBNAct(cin, HEAD_CHANNELS, 1)
        if include_top:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(self.variant.dropout if dropout is None else dropout)
            self.classifier = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    @property
    def last_conv(self) -> nn.Conv2d:
        """The last convolution (``head.conv``), 1x1 -> 1280 channels: the Grad-CAM target layer."""
        return self.head.conv

    def named_stages(self) -> list[tuple[str, str, nn.Module]]:
        """(name, what it is, module) per stage in forward order, named as Keras names EfficientNet's parts:
        stem, block1 ... block7 (the MBConv stages), top (``head``, the map ``include_top=False`` gives)."""
        blocks = [(f"block{i + 1}", f"{spec.repeats} MBConv {spec.kernel}x{spec.kernel} block{'s' * (spec.repeats > 1)}"
                   + (f", stride {spec.stride}" if spec.stride > 1 else ""), stage)
                  for i, ((spec, _), stage) in enumerate(zip(stage_plan(self.variant), self.stages))]
        return [("stem", "Conv 3x3, stride 2", self.stem), *blocks, ("top", "Conv 1x1", self.head)]

    def blocks(self) -> list[nn.Module]:
        """The MBConv blocks in forward order (16 for Lite0, 21 for Lite1/2)."""
        return [block for stage in self.stages for block in stage]

    def layers(self) -> list[nn.Module]:
        """Feature layers in forward order: stem, every MBConv block, head (the units of ``set_trainable``)."""
        return [self.stem, *self.blocks(), self.head]

    def set_trainable(self, top: int | None) -> None:
        """Only the last ``top`` entries of ``layers()`` (and the classifier) train; None: everything.

        ``top=0`` trains only the classifier (a linear probe); ``top=1`` adds the head conv.
        """
        layers = self.layers()
        if top is not None and not 0 <= top <= len(layers):
            raise ValueError(f"top must be between 0 and {len(layers)} (layers of {self.variant.name}), got {top}")
        first = 0 if top is None else len(layers) - top
        for i, layer in enumerate(layers):
            layer.requires_grad_(i >= first)
        if self.include_top:
            self.classifier.requires_grad_(True)

    def set_freeze_bn(self, frozen: bool = True) -> None:
        """Keep every BatchNorm in eval mode (running statistics fixed) even under ``model.train()``."""
        self.freeze_bn = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> EfficientNetLite:
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 1280, ceil(H/32), ceil(W/32)), after the head's BN and ReLU6."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if not self.include_top:
            return x
        x = self.pool(x).flatten(1)  # (N, 1280)
        return self.classifier(self.dropout(x))
