"""Where a convolution or pooling window lands, how big its output is, and why: Keras's rules, no model.

Output side along one axis, for input n, window k, stride s (Keras / TensorFlow):
  valid: floor((n - k) / s) + 1     (windows stay inside the input)
  same:  ceil(n / s)                (zeros added around the input; total pad = max((out - 1) * s + k - n, 0),
                                     half before, the odd one after, i.e. bottom/right)
Window positions are the top-left corners of the windows in input coordinates (row, col), listed
row by row in the order of the output cells; with 'same' they can be negative (inside the padding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

_PADDINGS = ("valid", "same")


@dataclass(frozen=True)
class Windows:
    """Geometry of a sliding window over an input; pairs are (rows, cols)."""

    kind: str  # "conv" or "pool", for wording only
    input_size: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: str
    pad: tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right)) zeros added
    output_size: tuple[int, int]

    @property
    def positions(self) -> list[tuple[int, int]]:
        """Top-left corner (row, col) of every window, in output-cell order."""
        (top, _), (left, _) = self.pad
        oh, ow = self.output_size
        sh, sw = self.stride
        return [(i * sh - top, j * sw - left) for i in range(oh) for j in range(ow)]

    @property
    def count(self) -> int:
        return self.output_size[0] * self.output_size[1]


MAX_EXPLAIN_SIDE = 256


def conv_output_size(n: int, k: int, padding: str = "valid", stride: int = 1) -> int:
    """Output side along one axis under Keras's rule (see the module docstring)."""
    _check(n, k, padding, stride)
    if padding == "same":
        return math.ceil(n / stride)
    if k > n:
        raise ValueError(f"a {k}-wide window does not fit a {n}-wide input with padding 'valid'")
    return (n - k) // stride + 1


def same_padding(n: int, k: int, stride: int = 1) -> tuple[int, int]:
    """Zeros added (before, after) along one axis by padding 'same'; TensorFlow puts the odd one after."""
    total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
    return total // 2, total - total // 2


def conv_windows(
    input_size: int | tuple[int, int],
    kernel: int | tuple[int, int],
    padding: str = "valid",
    stride: int | tuple[int, int] = 1,
    kind: str = "conv",
) -> Windows:
    """Full geometry of a Conv2D (or, with kind='pool', a pooling) window sweep."""
    size, k, s = _pair(input_size, "input_size"), _pair(kernel, "kernel"), _pair(stride, "stride")
    if max(size) > MAX_EXPLAIN_SIDE:  # every window is listed and drawn: keep the work and the figure small
        raise ValueError(f"input size {_x(size)} is too large to explain window by window: "
                         f"at most {MAX_EXPLAIN_SIDE} a side")
    out = tuple(conv_output_size(size[a], k[a], padding, s[a]) for a in (0, 1))
    if padding == "same":
        pad = (same_padding(size[0], k[0], s[0]), same_padding(size[1], k[1], s[1]))
    else:
        pad = ((0, 0), (0, 0))
    return Windows(kind, size, k, s, padding, pad, out)  # type: ignore[arg-type]


def conv_positions(
    input_size: int | tuple[int, int],
    kernel: int | tuple[int, int],
    padding: str = "valid",
    stride: int | tuple[int, int] = 1,
) -> list[tuple[int, int]]:
    """Top-left (row, col) of every Conv2D window, in input coordinates, in output-cell order."""
    return conv_windows(input_size, kernel, padding, stride).positions


def pool_positions(
    input_size: int | tuple[int, int],
    pool_size: int | tuple[int, int] = 2,
    padding: str = "valid",
    strides: int | tuple[int, int] | None = None,
) -> list[tuple[int, int]]:
    """Like `conv_positions` for MaxPooling2D / AveragePooling2D; strides default to pool_size."""
    return pool_windows(input_size, pool_size, padding, strides).positions


def pool_windows(
    input_size: int | tuple[int, int],
    pool_size: int | tuple[int, int] = 2,
    padding: str = "valid",
    strides: int | tuple[int, int] | None = None,
) -> Windows:
    """Geometry of a pooling sweep; as Keras, strides=None means strides = pool_size."""
    return conv_windows(input_size, pool_size, padding, pool_size if strides is None else strides, "pool")


def pool_output_size(n: int, pool_size: int = 2, padding: str = "valid", strides: int | None = None) -> int:
    return conv_output_size(n, pool_size, padding, pool_size if strides is None else strides)


def conv_params(kh: int, kw: int, in_ch: int, filters: int, use_bias: bool = True) -> int:
    """Trainable parameters of a Conv2D layer: (kh * kw * in_ch + bias) * filters."""
    for name, v in (("kh", kh), ("kw", kw), ("in_ch", in_ch), ("filters", filters)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return (kh * kw * in_ch + int(use_bias)) * filters


def explain(w: Windows, in_channels: int | None = None, filters: int | None = None) -> str:
    """The arithmetic behind `w` in words, with the numbers filled in."""
    layer = "Conv2D" if w.kind == "conv" else "Pooling"
    win = "kernel" if w.kind == "conv" else "pool window"
    lines = [
        f"{layer}: {_x(w.input_size)} input, {_x(w.kernel)} {win}, "
        f"stride {_x(w.stride, ', ')}, padding {w.padding!r}"
    ]
    axes = ["side"] if _square(w) else ["rows", "cols"]
    for a, axis in enumerate(axes):
        n, k, s, out = w.input_size[a], w.kernel[a], w.stride[a], w.output_size[a]
        if w.padding == "valid":
            lines.append(f"  output {axis} = floor(({n} - {k}) / {s}) + 1 = {out}")
        else:
            before, after = w.pad[a]
            lines.append(f"  output {axis} = ceil({n} / {s}) = {out}")
            what = "zero padding" if w.kind == "conv" else "padding (cells the pooling ignores)"
            lines.append(
                f"  {what}: max(({out} - 1) * {s} + {k} - {n}, 0) = {before + after} in total, "
                f"{before} before and {after} after"
            )
    oh, ow = w.output_size
    lines.append(f"  -> {oh}x{ow} = {w.count} window positions, so the output map is {oh}x{ow}")
    if w.kind == "conv" and in_channels is not None and filters is not None:
        kh, kw = w.kernel
        p = conv_params(kh, kw, in_channels, filters)
        lines.append(
            f"  parameters = ({kh} * {kw} * {in_channels} + 1) * {filters} = {p}"
            "  (one weight per kernel cell and input channel, plus one bias, per filter)"
        )
        lines.append(f"  output shape: (None, {oh}, {ow}, {filters})")
    elif w.kind == "pool":
        lines.append("  parameters = 0  (pooling only picks or averages; nothing is learned)")
    return "\n".join(lines)


def explain_conv(
    input_size: int | tuple[int, int],
    kernel: int | tuple[int, int],
    padding: str = "valid",
    stride: int | tuple[int, int] = 1,
    in_channels: int | None = None,
    filters: int | None = None,
) -> str:
    """Text for `cnnlab explain conv`: output size formula, positions, and parameters if given."""
    return explain(conv_windows(input_size, kernel, padding, stride), in_channels, filters)


def explain_pool(
    input_size: int | tuple[int, int],
    pool_size: int | tuple[int, int] = 2,
    padding: str = "valid",
    strides: int | tuple[int, int] | None = None,
) -> str:
    return explain(pool_windows(input_size, pool_size, padding, strides))


def _check(n: int, k: int, padding: str, stride: int) -> None:
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    for name, v in (("input size", n), ("kernel size", k), ("stride", stride)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a (rows, cols) pair, got {v!r}")
    return t  # type: ignore[return-value]


def _x(p: tuple[int, int], sep: str = "x") -> str:
    return str(p[0]) if p[0] == p[1] and sep != "x" else f"{p[0]}{sep}{p[1]}"


def _square(w: Windows) -> bool:
    """True when rows and cols follow the same arithmetic, so one formula line covers both."""
    return (
        w.input_size[0] == w.input_size[1]
        and w.kernel[0] == w.kernel[1]
        and w.stride[0] == w.stride[1]
        and w.pad[0] == w.pad[1]
    )
