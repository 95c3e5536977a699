"""EfficientNet-Lite0/1/2 as a torch module: ImageNet classifier or (N, 1280, h, w) feature extractor.

EfficientNet-Lite is EfficientNet-B0's block table without squeeze-excitation, with ReLU6 instead of
swish and with the stem (32 channels) and head (1280 channels) kept fixed when the variant scales width
and depth. Strided convolutions pad like TensorFlow's "same" (the odd extra row/column goes at the
bottom/right), which the pretrained weights need: symmetric padding moves the logits by up to ~5.

Module layout (the names are what hooks and the state dict use)::

    stem                 ConvBNAct 3 -> 32, 3x3 stride 2
    stages[0..6]         nn.Sequential of MBConv blocks; hook stages[i] for stage outputs
    head                 ConvBNAct -> 1280, 1x1;  head.conv is "the last convolution" (Grad-CAM)
    pool, dropout, classifier   only when include_top (classifier: nn.Linear(1280, 1000))

``head`` output, after its BN and ReLU6, is the (N, 1280, H/32, W/32) map Keras gives with
``include_top=False``. ``blocks()`` lists the MBConv blocks in forward order, for "train the top N".
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.backbones.preprocess import scale_batch

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


def fold_batchnorm(model: EfficientNetLite) -> EfficientNetLite:
    """An eval-mode copy with each BatchNorm folded into its convolution (conv gets a bias).

    Same outputs in eval to float rounding (~1e-6), one fewer pass over every activation map.
    The copy cannot be fine-tuned (its BN statistics are gone); the original is not changed.
    """
    fused = copy.deepcopy(model).eval()
    for m in fused.modules():
        if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
            bn, conv = m.bn, m.conv
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
            new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            groups=conv.groups, bias=True)
            with torch.no_grad():
                new.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                new.bias.copy_(bn.bias - bn.running_mean * scale)
            m.conv, m.bn = new, nn.Identity()
    return fused.requires_grad_(False)


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (CPU: AMX or AVX512-BF16; CUDA: Ampere+)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(probe is not None for probe in probes):
        return any(probe() for probe in probes if probe is not None)
    try:  # older torch: ask the kernel
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF "same" zero padding in one pass: an empty tensor, zeros on the border only, the interior copied.

    F.pad fills the whole output with zeros and then copies: two passes over the largest maps.
    """
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    n, c, h, w = x.shape
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = torch.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    out[:, :, :top].zero_()
    out[:, :, top + h:].zero_()
    out[:, :, top:top + h, :left].zero_()
    out[:, :, top:top + h, left + w:].zero_()
    out[:, :, top:top + h, left:left + w].copy_(x)
    return out


class FusedConv(nn.Module):
    """Inference-only ConvBNAct with BN already folded: conv + bias + ReLU6 (or + residual) in one call.

    With ``mkldnn`` the ReLU6 or the residual add runs inside the oneDNN convolution (a post-op), saving
    a pass over the output; otherwise conv2d then an in-place clamp/add. ``conv`` holds the weights, but
    forward hooks on it do not fire: hook the plain model for Grad-CAM.
    """

    def __init__(self, block: ConvBNAct, mkldnn: bool):
        super().__init__()
        if not isinstance(block.bn, nn.Identity):
            raise TypeError(f"FusedConv needs a ConvBNAct whose BN is folded, got bn={type(block.bn).__name__}")
        self.conv, self.kernel, self.stride = block.conv, block.kernel, block.stride
        self.relu6 = isinstance(block.act, nn.ReLU6)
        self.mkldnn = mkldnn

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.stride > 1:
            x = _pad_same(x, self.kernel, self.stride)
        c = self.conv
        if self.mkldnn and (residual is None or not self.relu6):
            geometry = (list(c.padding), list(c.stride), list(c.dilation), c.groups)
            if residual is not None:  # conv(x) + residual
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, c.weight, c.bias, *geometry, "add", None, None, [], None)
            act, bounds = ("hardtanh", [0.0, 6.0]) if self.relu6 else ("none", [])
            return torch.ops.mkldnn._convolution_pointwise(x, c.weight, c.bias, *geometry, act, bounds, None)
        y = F.conv2d(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)
        if self.relu6:
            y = y.clamp_(0.0, 6.0)  # in place: y is fresh
        return y if residual is None else y.add_(residual)


class FusedMBConv(nn.Module):
    """Inference-only MBConv of FusedConvs; the skip connection is fused into the project conv."""

    def __init__(self, block: MBConv, mkldnn: bool):
        super().__init__()
        self.expand = None if block.expand is None else FusedConv(block.expand, mkldnn)
        self.depthwise = FusedConv(block.depthwise, mkldnn)
        self.project = FusedConv(block.project, mkldnn)
        self.residual = block.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        return self.project(self.depthwise(y), x if self.residual else None)


@functools.cache
def mkldnn_fusion_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused conv ops (torch.ops.mkldnn._convolution_pointwise) exist and agree with conv2d.

    They are PyTorch internals (what torch.compile uses on CPU), so each process checks them once on a
    tiny input and falls back to plain ops if they are missing or disagree.
    """
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 8, 9, 9, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
        tol = 1e-4 if dtype == torch.float32 else 0.1
        for groups, kernel in ((1, 1), (8, 3)):
            block = ConvBNAct(8, 8, kernel, groups=groups)
            block.bn = nn.Identity()
            block.conv = nn.Conv2d(8, 8, kernel, 1, kernel // 2, groups=groups, bias=True)
            block = block.to(dtype=dtype, memory_format=torch.channels_last).eval()
            fused, plain = FusedConv(block, mkldnn=True), FusedConv(block, mkldnn=False)
            with torch.inference_mode():
                plain.relu6 = fused.relu6 = False
                ok = (fused(x, x) - plain(x, x.clone())).abs().max().item() < tol
                plain.relu6 = fused.relu6 = True
                ok = ok and (fused(x) - plain(x)).abs().max().item() < tol
            if not ok:
                return False
        return True
    except (RuntimeError, AttributeError, NotImplementedError, TypeError):
        return False


def optimize_for_inference(model: EfficientNetLite, dtype: torch.dtype | None = None,
                           fuse: bool = True) -> EfficientNetLite:
    """A frozen, eval-only copy for fast inference: BN folded, channels_last, ``dtype``, fused activations.

    ``dtype=None`` picks bfloat16 where the device has native bf16 (see ``native_bf16``), else float32.
    float32 stays within ~1e-4 of the plain model; bfloat16 moves logits by ~0.1-0.5 but kept top-1 on
    the test photos. ``fuse`` runs ReLU6 and the skip adds inside oneDNN's convolutions on CPU (where
    ``mkldnn_fusion_works``). Feed it ``scale_batch(images, dtype)`` (channels_last already). The copy
    keeps the module names (``stages[i]`` hooks still work) but its convs are ``FusedConv``s.

    Lite0 features at 224, batch 32, 2 shared Sapphire Rapids cores (AMX), images/s. The machine's load
    moves absolute numbers 3x, so compare within one run (bench/photos.py interleaves): reference eager
    fp32 NCHW 1.0x; ours plain ~1.2x; + inference_mode ~1.4x; + folded BN ~1.5x; + channels_last
    ~2-2.7x; + in-place ReLU6 ~+3%; + oneDNN post-ops (ReLU6, skip add) ~+20%, one-pass padding
    ~+5%: fp32 3.2-3.5x (reference 17.9 vs ours 63 on a quiet machine). bfloat16 weights 4-9x
    (165 img/s quiet); bf16 autocast instead of cast weights was ~25% slower. torch.jit.freeze +
    optimize_for_inference gave nothing at 224 and took ~12 s to warm up, so it is not used.
    """
    device = next(model.parameters()).device
    dtype = (torch.bfloat16 if native_bf16(device) else torch.float32) if dtype is None else dtype
    mkldnn = fuse and device.type == "cpu" and mkldnn_fusion_works(dtype)
    fast = fold_batchnorm(model).to(dtype=dtype, memory_format=torch.channels_last)
    fast.stem = FusedConv(fast.stem, mkldnn)
    for stage in fast.stages:
        for i, block in enumerate(stage):
            stage[i] = FusedMBConv(block, mkldnn)
    fast.head = FusedConv(fast.head, mkldnn)
    return fast


def extract_features(model: EfficientNetLite, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """uint8 (N, H, W, 3) images -> float32 model outputs, batch by batch, under ``inference_mode``.

    ``model`` is typically ``optimize_for_inference(...)``; its parameter dtype sets the compute dtype.
    Outputs: (N, 1280, ceil(H/32), ceil(W/32)) without top, (N, 1000) logits with it.
    """
    param = next(model.parameters())
    outputs = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(param.device, non_blocking=True)
            outputs.append(model(scale_batch(batch, param.dtype)).float())
    return torch.cat(outputs)
