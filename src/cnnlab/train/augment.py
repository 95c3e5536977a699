"""Random data augmentation of a whole batch on the device: shifts, rotations, zooms, flips, brightness, contrast.

One affine transform per image, all applied by a single `F.affine_grid` + `F.grid_sample` call per
batch, so augmentation costs one extra kernel launch, not a Python loop over images.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

FILLS = ("reflection", "zeros", "border")  # grid_sample's padding modes


@dataclass(frozen=True)
class AugmentOptions:
    """How much to change each training image at random; 0 (or False) turns a change off.

    shift: largest translation as a fraction of the width and height (0.1 = up to 10% either way).
    rotation: largest rotation in degrees, either way. zoom: largest zoom in or out as a fraction
    (0.1 = scale between 0.9 and 1.1). horizontal_flip: mirror half the images (wrong for digits and
    text, right for most photos). brightness: largest value added to pixels in [0, 1]. contrast:
    largest fractional change of contrast around each image's mean. fill: what appears where the
    transformed image uncovers the frame ("reflection" as Keras's default, "zeros" or "border").
    """
    shift: float = 0.0
    rotation: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    fill: str = "reflection"

    def __post_init__(self) -> None:
        for name, top in (("shift", 1.0), ("zoom", 1.0), ("brightness", 1.0), ("contrast", 1.0)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < top):
                raise ValueError(f"augmentation {name} must be a fraction in [0, {top:g}), got {value!r}")
        if not (isinstance(self.rotation, (int, float)) and 0 <= self.rotation <= 180):
            raise ValueError(f"augmentation rotation must be degrees in [0, 180], got {self.rotation!r}")
        if self.fill not in FILLS:
            raise ValueError(f"augmentation fill must be {', '.join(FILLS)}, got {self.fill!r}")

    @property
    def geometric(self) -> bool:
        return bool(self.shift or self.rotation or self.zoom or self.horizontal_flip)

    def describe(self) -> str:
        parts = [f"shift {self.shift:.0%}" if self.shift else "", f"rotation ±{self.rotation:g}°" if self.rotation else "",
                 f"zoom ±{self.zoom:.0%}" if self.zoom else "", "horizontal flips" if self.horizontal_flip else "",
                 f"brightness ±{self.brightness:g}" if self.brightness else "",
                 f"contrast ±{self.contrast:.0%}" if self.contrast else ""]
        return ", ".join(p for p in parts if p) or "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, AugmentOptions] = {
    "digits": AugmentOptions(shift=0.1, rotation=10, zoom=0.1, fill="zeros"),
    "photos": AugmentOptions(shift=0.1, rotation=10, zoom=0.1, horizontal_flip=True, brightness=0.1, contrast=0.1),
}


def affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor,
           flip: torch.Tensor, fill: str = "zeros") -> torch.Tensor:
    """Transform each image of x (N, C, H, W): mirror (flip True), zoom by `scale` and rotate by `angle`
    (radians, clockwise on screen) about the centre, then move by (dx, dy) pixels. All arguments are (N,).
    """
    n, _, h, w = x.shape
    cos, sin = torch.cos(angle), torch.sin(angle)
    mirror = 1.0 - 2.0 * flip.to(x.dtype)
    # theta maps output to input coordinates in grid_sample's [-1, 1] units, where x spans W and y spans
    # H; so the pixel-space inverse rotation R(-angle)/scale is conjugated by diag(W/2, H/2).
    a00, a01 = mirror * cos / scale, mirror * sin / scale * (h / w)
    a10, a11 = -sin / scale * (w / h), cos / scale
    tx, ty = 2 * dx / w, 2 * dy / h  # pixels -> grid units
    theta = torch.stack([torch.stack([a00, a01, -(a00 * tx + a01 * ty)], 1),
                         torch.stack([a10, a11, -(a10 * tx + a11 * ty)], 1)], 1).to(x.dtype)  # (N, 2, 3)
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=fill, align_corners=False)


def augment_batch(x: torch.Tensor, options: AugmentOptions, generator: torch.Generator | None = None) -> torch.Tensor:
    """A randomly changed copy of the float batch x (N, C, H, W) with pixels in [0, 1]; same shape and device.

    The random numbers come from `generator` (on its own device, CPU by default), so a seeded run repeats.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"augment_batch takes a float (N, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
    n, _, h, w = x.shape
    device = generator.device if generator is not None else torch.device("cpu")
    u = (torch.rand((n, 7), generator=generator, device=device) * 2 - 1).to(x.device)  # uniform in [-1, 1)
    out = x
    if options.geometric:
        out = affine(x, u[:, 0] * math.radians(options.rotation), 1 + u[:, 1] * options.zoom,
                     u[:, 2] * options.shift * w, u[:, 3] * options.shift * h,
                     (u[:, 4] < 0) if options.horizontal_flip else torch.zeros(n, dtype=torch.bool, device=x.device),
                     options.fill)
    if options.brightness or options.contrast:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        gain = (1 + u[:, 5] * options.contrast).view(n, 1, 1, 1)
        shift = (u[:, 6] * options.brightness).view(n, 1, 1, 1)
        out = ((out - mean) * gain + mean + shift).clamp_(0, 1)
    if x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def random_resized_crop(x: torch.Tensor, min_area: float = 0.35, ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        flip: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of the float batch x (N, C, H, W): a random crop resized back to (H, W), mirrored half the time.

    The crop covers a uniform fraction in [min_area, 1] of the image's area with a log-uniform aspect ratio
    (width / height) in `ratio`, clamped to fit, anywhere inside the frame: torchvision's RandomResizedCrop and
    RandomHorizontalFlip as one bilinear `grid_sample` for the whole batch. Random numbers come from `generator`.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"random_resized_crop takes a float (N, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
    if not 0 < min_area <= 1:
        raise ValueError(f"random_resized_crop min_area must be a fraction in (0, 1], got {min_area!r}")
    n, c, h, w = x.shape
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((n, 5), generator=generator, device=device).to(x.device)
    area = min_area + (1 - min_area) * u[:, 0]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    # crop sides as fractions of the image's: width * height = area, (width * w) / (height * h) = aspect
    cw = torch.sqrt(area * aspect * h / w).clamp(max=1.0)
    ch = torch.sqrt(area / aspect * w / h).clamp(max=1.0)
    cx, cy = (1 - cw) * (2 * u[:, 2] - 1), (1 - ch) * (2 * u[:, 3] - 1)  # centre, in grid_sample's [-1, 1] units
    mirror = 1.0 - 2.0 * (u[:, 4] < 0.5).to(x.dtype) if flip else torch.ones(n, dtype=x.dtype, device=x.device)
    zero = torch.zeros_like(cw)
    theta = torch.stack([torch.stack([cw * mirror, zero, cx], 1), torch.stack([zero, ch, cy], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)  # (N, H, W, 2): output pixel -> input point
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
