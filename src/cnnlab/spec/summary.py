"""Model summary as Keras prints it: layer names and types, output shapes, parameter counts."""
from __future__ import annotations

from typing import Any, Callable

from cnnlab.spec.layers import ModelSpec

BYTES_PER_PARAM = 4  # float32, as Keras assumes for its size column


def summary_dict(spec: ModelSpec) -> dict[str, Any]:
    """`{"layers": [{"name", "type", "output_shape": [None, ...], "params"}], "total_params", ...}`."""
    rows, trainable, frozen = [], 0, 0
    shape = spec.input_shape
    for layer, name, out in zip(spec.layers, spec.names, spec.shapes()):
        t, nt = layer.params(shape)
        trainable, frozen = trainable + t, frozen + nt
        rows.append({"name": name, "type": layer.type, "output_shape": [None, *out], "params": t + nt})
        shape = out
    return {"input_shape": [None, *spec.input_shape], "layers": rows, "total_params": trainable + frozen,
            "trainable_params": trainable, "non_trainable_params": frozen}


def _size(n_params: int) -> str:
    """Keras's human size: '217.75 KB' (1 KB = 1024 B)."""
    size = float(n_params * BYTES_PER_PARAM)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _shape_text(shape: list[Any]) -> str:
    return "(" + ", ".join("None" if v is None else str(v) for v in shape) + ")"


def summary_text(spec: ModelSpec, name: str = "sequential", style: str = "keras3") -> str:
    """The table `model.summary()` prints: Keras 3's box table, or Keras 2's with style='keras2'."""
    if style not in ("keras3", "keras2"):
        raise ValueError(f"summary style must be 'keras3' or 'keras2', got {style!r}")
    info = summary_dict(spec)
    cells = [(f"{r['name']} ({r['type']})", _shape_text(r["output_shape"]), f"{r['params']:,}") for r in info["layers"]]
    totals = [("Total params", info["total_params"]), ("Trainable params", info["trainable_params"]),
              ("Non-trainable params", info["non_trainable_params"])]
    if style == "keras2":
        return _keras2(name, cells, totals)
    w = [max(31, *(len(c[0]) + 2 for c in cells)), max(22, *(len(c[1]) + 2 for c in cells)), 13]

    def line(left: str, mid: str, right: str, fill: str) -> str:
        return left + mid.join(fill * (x + 2) for x in w) + right

    def row(a: str, b: str, c: str, bar: str) -> str:
        return f"{bar} {a:<{w[0]}} {bar} {b:<{w[1]}} {bar} {c:>{w[2]}} {bar}"

    out = [f'Model: "{name}"', line("┏", "┳", "┓", "━"), row("Layer (type)", "Output Shape", "Param #", "┃"),
           line("┡", "╇", "┩", "━")]
    for i, cell in enumerate(cells):
        if i:
            out.append(line("├", "┼", "┤", "─"))
        out.append(row(*cell, "│"))
    out.append(line("└", "┴", "┘", "─"))
    out += [f" {label}: {n:,} ({_size(n)})" for label, n in totals]
    return "\n".join(out)


def _keras2(name: str, cells: list[tuple[str, str, str]], totals: list[tuple[str, int]]) -> str:
    w = (29, 26, 10)
    fmt = lambda a, b, c: f" {a:<{w[0] - 1}}{b:<{w[1]}}{c:<{w[2]}}".rstrip()  # noqa: E731
    rule = 65
    out = [f'Model: "{name}"', "_" * rule, fmt("Layer (type)", "Output Shape", "Param #"), "=" * rule]
    for i, cell in enumerate(cells):
        out += _keras2_wrapped(fmt, cell, (w[0] - 3, w[1] - 1, w[2]))
        out.append("" if i < len(cells) - 1 else "=" * rule)
    out += [f"{label}: {n:,}" for label, n in totals] + ["_" * rule]
    return "\n".join(out)


def _keras2_wrapped(fmt: Callable[[str, str, str], str], cell: tuple[str, str, str], fits: tuple[int, int, int]) -> list[str]:
    """A row whose text would run into the next column continues on the next line, as Keras 2.12+ printed
    `max_pooling2d_1 (MaxPoolin` / `g2D)`: the columns stay aligned, with at least two spaces between them."""
    chunks = [[text[i:i + fit] for i in range(0, max(len(text), 1), fit)] for text, fit in zip(cell, fits)]
    depth = max(len(c) for c in chunks)
    return [fmt(*(c[k] if k < len(c) else "" for c in chunks)) for k in range(depth)]
