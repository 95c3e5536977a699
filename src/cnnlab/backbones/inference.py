"""Fast inference with EfficientNet-Lite: a frozen copy (BN folded, channels_last, bf16 where native,
oneDNN-fused ReLU6 and skip adds) and feature extraction from uint8 batches."""
from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.backbones.efficientnet_lite import ConvBNAct, EfficientNetLite, MBConv, same_padding
from cnnlab.backbones.preprocess import scale_batch


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
                            groups=conv.groups, bias=True, device=conv.weight.device,  # a GPU model stays there
                            dtype=conv.weight.dtype)
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

    Lite0 features at 224, batch 32, images/s, on an earlier machine of this project (2 shared Sapphire Rapids
    cores with AMX; later ones were AMD EPYC with AVX512-BF16 and no AMX). The machine's load
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


def extract_features(model: EfficientNetLite, images: torch.Tensor, batch_size: int = 32, pool: bool = False
                     ) -> torch.Tensor:
    """uint8 (N, H, W, 3) images -> float32 model outputs, batch by batch, under ``inference_mode``.

    ``model`` is typically ``optimize_for_inference(...)``; its parameter dtype sets the compute dtype.
    Outputs: (N, 1280, ceil(H/32), ceil(W/32)) without top, (N, 1000) logits with it; ``pool``: the maps
    averaged over space batch by batch, (N, 1280), so the full maps (49x larger at 224 px) are never all held.
    """
    param = next(model.parameters())
    outputs = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(param.device, non_blocking=True)
            out = model(scale_batch(batch, param.dtype)).float()
            outputs.append(out.mean(dim=(2, 3)) if pool else out)
    return torch.cat(outputs)
