"""Model summary as Keras prints it: layer names and types, output shapes, parameter counts (and for
functional models the inputs, and the "Connected to" column where Keras shows it)."""
from __future__ import annotations

from typing import Any, Callable

from cnnlab.spec.graph import AnySpec, GraphSpec
from cnnlab.spec.layers import Layer, Shape

BYTES_PER_PARAM = 4  # float32, as Keras assumes for its size column


def _params(layer: Layer, shape: Any) -> tuple[int, int]:
    """(trainable, non-trainable): a frozen layer's weights all count as non-trainable, as in Keras."""
    t, nt = layer.params(shape)
    return (t, nt) if layer.trainable else (0, t + nt)


def summary_dict(spec: AnySpec) -> dict[str, Any]:
    """`{"layers": [{"name", "type", "output_shape": [None, ...], "params"}], "total_params", ...}`; graph
    models list their inputs too, and each row's `connected_to` (["conv2d[0][0]", ...])."""
    if isinstance(spec, GraphSpec):
        return _graph_dict(spec)
    rows, trainable, frozen = [], 0, 0
    shape = spec.input_shape
    shapes = spec.shapes()
    for layer, name, out in zip(spec.layers, spec.names, shapes):
        t, nt = _params(layer, shape)
        trainable, frozen = trainable + t, frozen + nt
        rows.append({"name": name, "type": layer.type, "output_shape": [None, *out], "params": t + nt})
        shape = out
    return {"input_shape": [None, *spec.input_shape], "layers": rows, "total_params": trainable + frozen,
            "trainable_params": trainable, "non_trainable_params": frozen, "output_shapes": [shapes[-1]]}


def _graph_dict(spec: GraphSpec) -> dict[str, Any]:
    layers = {node.layer.name: node.layer for node in spec.nodes}
    rows, trainable, frozen = [], 0, 0
    for name in spec.layer_order():
        out = [None, *spec.output_shapes(name)]
        if name not in layers:
            rows.append({"name": name, "type": "InputLayer", "output_shape": out, "params": 0, "connected_to": []})
            continue
        t, nt = _params(layers[name], spec.input_shapes(name))
        trainable, frozen = trainable + t, frozen + nt
        rows.append({"name": name, "type": layers[name].type, "output_shape": out, "params": t + nt,
                     "connected_to": spec.connections(name)})
    return {"input_shape": [None, *spec.input_shape] if spec.input_shape else None, "layers": rows,
            "total_params": trainable + frozen, "trainable_params": trainable, "non_trainable_params": frozen,
            "output_shapes": [spec.shapes[ref] for ref in spec.outputs], "connected": not spec.sequential_like()}


def _size(n_params: int) -> str:
    """Keras's human size: '217.75 KB' (1 KB = 1024 B)."""
    size = float(n_params * BYTES_PER_PARAM)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _shape_text(shape: list[Any] | Shape) -> str:
    return "(" + ", ".join("None" if v is None else str(v) for v in shape) + ")"


def summary_text(spec: AnySpec, name: str = "sequential", style: str = "keras3") -> str:
    """The table `model.summary()` prints: Keras 3's box table, or Keras 2's with style='keras2'."""
    if style not in ("keras3", "keras2"):
        raise ValueError(f"summary style must be 'keras3' or 'keras2', got {style!r}")
    info = summary_dict(spec)
    connected = info.get("connected", False)
    cells = []
    for r in info["layers"]:
        links = r.get("connected_to", [])
        cell = [f"{r['name']} ({r['type']})", _shape_text(r["output_shape"]), f"{r['params']:,}"]
        if connected:  # one tensor a line, as Keras wraps them
            cell.append("\n".join(f"{c}," for c in links[:-1]) + ("\n" if len(links) > 1 else "") +
                        (links[-1] if links else "-"))
        cells.append(cell)
    totals = [("Total params", info["total_params"]), ("Trainable params", info["trainable_params"]),
              ("Non-trainable params", info["non_trainable_params"])]
    if style == "keras2":
        return _keras2(name, cells, totals)
    header = ["Layer (type)", "Output Shape", "Param #", "Connected to"][:len(cells[0]) if cells else 3]
    mins = [31, 22, 13, 26]
    w = [max(mins[i], *(max(map(len, c[i].split("\n"))) + 2 for c in cells)) for i in range(len(header))]
    w[2] = 13 if not connected else 15

    def line(left: str, mid: str, right: str, fill: str) -> str:
        return left + mid.join(fill * (x + 2) for x in w) + right

    def row(values: list[str], bar: str) -> list[str]:
        parts = [v.split("\n") for v in values]
        out = []
        for k in range(max(map(len, parts))):
            texts = [p[k] if k < len(p) else "" for p in parts]
            out.append(bar + bar.join(f" {t:>{x}} " if i == 2 else f" {t:<{x}} "
                                      for i, (t, x) in enumerate(zip(texts, w))) + bar)
        return out

    out = [f'Model: "{name}"', line("┏", "┳", "┓", "━"), *row(header, "┃"), line("┡", "╇", "┩", "━")]
    for i, cell in enumerate(cells):
        if i:
            out.append(line("├", "┼", "┤", "─"))
        out += row(cell, "│")
    out.append(line("└", "┴", "┘", "─"))
    out += [f" {label}: {n:,} ({_size(n)})" for label, n in totals]
    return "\n".join(out)


def _keras2(name: str, cells: list[list[str]], totals: list[tuple[str, int]]) -> str:
    w = (29, 26, 10)
    fmt = lambda a, b, c, *rest: f" {a:<{w[0] - 1}}{b:<{w[1]}}{c:<{w[2]}}".rstrip()  # noqa: E731
    rule = 65
    out = [f'Model: "{name}"', "_" * rule, fmt("Layer (type)", "Output Shape", "Param #"), "=" * rule]
    for i, cell in enumerate(cells):
        out += _keras2_wrapped(fmt, cell, (w[0] - 3, w[1] - 1, w[2]))
        out.append("" if i < len(cells) - 1 else "=" * rule)
    out += [f"{label}: {n:,}" for label, n in totals] + ["_" * rule]
    return "\n".join(out)


def _keras2_wrapped(fmt: Callable[..., str], cell: list[str], fits: tuple[int, int, int]) -> list[str]:
    """A row whose text would run into the next column continues on the next line, as Keras 2.12+ printed
    `max_pooling2d_1 (MaxPoolin` / `g2D)`: the columns stay aligned, with at least two spaces between them."""
    chunks = [[text[i:i + fit] for i in range(0, max(len(text), 1), fit)] for text, fit in zip(cell, fits)]
    depth = max(len(c) for c in chunks)
    return [fmt(*(c[k] if k < len(c) else "" for c in chunks)) for k in range(depth)]
