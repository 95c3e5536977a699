"""Torch modules of the preprocessing layers: Rescaling, and random flips, rotations and zooms in training only.

They run on the device inside the model, on the (B, C, H, W) batch, one random draw per image from
torch's global generator (which `fit` seeds), and are the identity in eval mode, as Keras's are.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.spec import layers as L
from cnnlab.spec.nested import passes_pixels

_PADDING = {"reflect": "reflection", "constant": "zeros", "nearest": "border"}


class Rescale(nn.Module):
    def __init__(self, scale: float, offset: float):
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


class Flip(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.axes = {"horizontal": [3], "vertical": [2], "horizontal_and_vertical": [3, 2]}[mode]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        for axis in self.axes:
            flip = torch.rand(len(x), device=x.device) < 0.5  # (B,)
            x = torch.where(flip[:, None, None, None], x.flip(axis), x)
        return x


class Affine(nn.Module):
    """Random rotation (fractions of a turn) and zoom (1 + factor) about the image centre, bilinear."""

    def __init__(self, turn: tuple[float, float] = (0.0, 0.0), zoom_h: tuple[float, float] = (0.0, 0.0),
                 zoom_w: tuple[float, float] | None = None, fill_mode: str = "reflect"):
        super().__init__()
        self.turn, self.zoom_h, self.zoom_w, self.padding = turn, zoom_h, zoom_w, _PADDING[fill_mode]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        b, dev = len(x), x.device

        def draw(lo_hi: tuple[float, float]) -> torch.Tensor:
            return torch.empty(b, device=dev).uniform_(*lo_hi) if lo_hi != (0.0, 0.0) else torch.zeros(b, device=dev)

        angle = draw(self.turn) * 2 * math.pi
        zh = 1 + draw(self.zoom_h)
        zw = zh if self.zoom_w is None else 1 + draw(self.zoom_w)
        cos, sin = torch.cos(angle), torch.sin(angle)
        h, w = x.shape[2], x.shape[3]
        # a rotation in pixels, in grid_sample's [-1, 1] units (x spans W, y spans H): conjugated by diag(W/2, H/2),
        # as cnnlab.train.augment.affine does, or a non-square image would be sheared instead of turned
        theta = torch.stack([torch.stack([cos * zw, -sin * zh * (h / w), torch.zeros_like(cos)], 1),
                             torch.stack([sin * zw * (w / h), cos * zh, torch.zeros_like(cos)], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
        return out.to(x.dtype).contiguous(memory_format=torch.channels_last)


RANDOM_MODULES = (Flip, Affine)  # the modules that draw random numbers in training mode


def rescaling(spec: L.Rescaling, at_pixels: bool) -> nn.Module:
    """cnnlab feeds the module pixels / 255, so a Rescaling that sees the raw image (only preprocessing
    layers before it) multiplies by 255 first: Rescaling(1/255) then gives Keras's [0, 1], and
    Rescaling(1/127.5, offset=-1) Keras's [-1, 1]. Deeper in the network it is plain x * scale + offset."""
    return Rescale(spec.scale * (255.0 if at_pixels else 1.0), spec.offset)


def at_pixels(spec: L.ModelSpec, index: int) -> bool:
    """True when layer `index` sees the input image's values: only preprocessing layers come before it."""
    return all(passes_pixels(layer) for layer in spec.layers[:index])


BUILDERS = {
    L.RandomFlip: lambda spec, shape: Flip(spec.mode),
    L.RandomRotation: lambda spec, shape: Affine(turn=spec.factor, fill_mode=spec.fill_mode),
    L.RandomZoom: lambda spec, shape: Affine(zoom_h=spec.height_factor, zoom_w=spec.width_factor,
                                             fill_mode=spec.fill_mode),
}
