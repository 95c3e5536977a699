"""Graph specs for functional models: named inputs, nodes (a layer spec called on earlier tensors), outputs.

A tensor of the graph is a `Ref`, (layer or input name, node index): the output of that layer's
k-th call in the graph, as Keras's `keras_history` names it. Nodes are listed in an order that
computes every tensor before its use. `layer_order` is the order of Keras's `model.layers`
(deepest first, ties in the order a walk back from the outputs meets them), which the summary uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from cnnlab.spec import layers as L
from cnnlab.spec.merge import MERGE_TYPES, Merge

Ref = tuple[str, int]
GRAPH_TYPES: dict[str, type[L.Layer]] = {**L.LAYER_TYPES, **MERGE_TYPES}


@dataclass(frozen=True)
class Node:
    """One call of a layer: `layer` (named) on the tensors `inbound`."""
    layer: L.Layer
    inbound: tuple[Ref, ...]


@dataclass(frozen=True)
class GraphSpec:
    inputs: tuple[L.Input, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Ref, ...]
    shapes: dict[Ref, L.Shape] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "nodes", tuple(Node(n.layer, tuple(map(tuple, n.inbound))) for n in self.nodes))
        object.__setattr__(self, "outputs", tuple(map(tuple, self.outputs)))
        if not self.inputs or not self.outputs:
            raise L.SpecError("a functional model needs at least one input and one output")
        shapes: dict[Ref, L.Shape] = {}
        for inp in self.inputs:
            if not isinstance(inp, L.Input) or not inp.name or (inp.name, 0) in shapes:
                raise L.SpecError(f"graph inputs must be Input(shape, name) with unique names, got {inp!r}")
            shapes[(inp.name, 0)] = inp.shape
        specs: dict[str, L.Layer] = {}
        input_names = {inp.name for inp in self.inputs}
        for node, ref in zip(self.nodes, self.refs()):
            layer = node.layer
            if not isinstance(layer, L.Layer) or not layer.name:
                raise L.SpecError(f"every graph node needs a named layer spec, got {layer!r}")
            if layer.name in input_names:
                raise L.SpecError(f"layer name {layer.name!r} is also the name of an input")
            if specs.setdefault(layer.name, layer) != layer:
                raise L.SpecError(f"layer name {layer.name!r} is used for two different layers")
            missing = [r for r in node.inbound if r not in shapes]
            if missing or not node.inbound:
                raise L.SpecError(f"layer {layer.name!r} takes tensor(s) {missing or 'none'} that no earlier "
                                  "node or input makes")
            ins = [shapes[r] for r in node.inbound]
            if isinstance(layer, Merge):
                out = layer.output_shapes(ins)
            elif len(ins) == 1:
                out = layer.output_shape(ins[0])
            else:
                raise L.SpecError(f"{layer.type} layer {layer.name!r} takes one input, got {len(ins)}")
            shapes[ref] = out
        for ref in self.outputs:
            if ref not in shapes:
                raise L.SpecError(f"output {ref!r} is not a tensor of the graph")
        object.__setattr__(self, "shapes", shapes)

    def refs(self) -> list[Ref]:
        """The tensor each node makes: (its layer's name, how many calls of that layer come before it)."""
        counts: dict[str, int] = {}
        out = []
        for node in self.nodes:
            k = counts[node.layer.name] = counts.get(node.layer.name, -1) + 1
            out.append((node.layer.name, k))
        return out

    # --- what ModelSpec has too, so training, summary and files can take either -----------
    @property
    def input_shape(self) -> L.Shape | None:
        return self.inputs[0].shape if len(self.inputs) == 1 else None

    @property
    def layers(self) -> tuple[L.Layer, ...]:
        """Every layer spec once, in Keras's `model.layers` order (inputs left out)."""
        specs = {n.layer.name: n.layer for n in self.nodes}
        return tuple(specs[name] for name in self.layer_order() if name in specs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def input_shapes(self, name: str) -> L.Shape | list[L.Shape]:
        """The input shape of layer `name`'s first call (a list for a merge layer)."""
        node = next(n for n in self.nodes if n.layer.name == name)
        ins = [self.shapes[r] for r in node.inbound]
        return ins if isinstance(node.layer, Merge) else ins[0]

    def output_shapes(self, name: str) -> L.Shape:
        """The output shape of layer or input `name`'s last call, as Keras's summary shows it."""
        return self.shapes[max((r for r in self.shapes if r[0] == name), key=lambda r: r[1])]

    # --- Keras's order and summary details ------------------------------------------------
    def _walk(self) -> tuple[list[Ref], dict[str, int]]:
        """(nodes as a walk back from the outputs finishes them, layers in the order it first meets them)."""
        by_ref = dict(zip(self.refs(), self.nodes))
        finished: set[Ref] = set()
        order: list[Ref] = []
        first_met: dict[str, int] = {}

        def visit(ref: Ref) -> None:
            if ref in finished:
                return
            first_met.setdefault(ref[0], len(first_met))
            for parent in by_ref[ref].inbound if ref in by_ref else ():
                visit(parent)
            finished.add(ref)
            order.append(ref)

        for out in self.outputs:
            visit(out)
        return order, first_met

    def node_depths(self) -> tuple[dict[Ref, int], dict[str, int]]:
        """Keras's depths (calls between a node and an output) of nodes and of layers (`functional.map_graph`)."""
        by_ref = dict(zip(self.refs(), self.nodes))
        order, _ = self._walk()
        nodes: dict[Ref, int] = {}
        ops: dict[str, int] = {}
        for ref in reversed(order):
            depth = max(nodes.setdefault(ref, 0), ops.get(ref[0], 0))
            ops[ref[0]] = nodes[ref] = depth
            for parent in by_ref[ref].inbound if ref in by_ref else ():
                nodes[parent] = max(depth + 1, nodes.get(parent, 0))
        for inp in self.inputs:
            ops.setdefault(inp.name, 0)
            nodes.setdefault((inp.name, 0), 0)
        return nodes, ops

    def layer_order(self) -> list[str]:
        """Input and layer names in the order of Keras's `model.layers`."""
        _, first_met = self._walk()
        _, ops = self.node_depths()
        return sorted(ops, key=lambda name: (-ops[name], first_met.get(name, -1)))

    def sequential_like(self) -> bool:
        """Keras's test for leaving out the summary's "Connected to" column: one node per depth,
        each with one input, and no layer called twice."""
        nodes, _ = self.node_depths()
        per_depth = list(nodes.values())
        if len(set(per_depth)) != len(per_depth) or any(len(n.inbound) > 1 for n in self.nodes):
            return False
        names = [n.layer.name for n in self.nodes]
        return len(set(names)) == len(names)

    def connections(self, name: str) -> list[str]:
        """`["conv2d[0][0]", ...]`: the tensors every call of layer `name` takes, as Keras's summary lists them."""
        return [f"{src}[{k}][0]" for n in self.nodes if n.layer.name == name for src, k in n.inbound]

    # --- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [{"name": i.name, "shape": list(i.shape)} for i in self.inputs],
                "nodes": [{"layer": n.layer.to_dict(), "inbound": [list(r) for r in n.inbound]} for n in self.nodes],
                "outputs": [list(r) for r in self.outputs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphSpec:
        try:
            inputs = tuple(L.Input(tuple(i["shape"]), i["name"]) for i in d["inputs"])
            nodes = tuple(Node(L.from_dict(n["layer"], GRAPH_TYPES), tuple((str(s), int(k)) for s, k in n["inbound"]))
                          for n in d["nodes"])
            outputs = tuple((str(s), int(k)) for s, k in d["outputs"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, L.SpecError):
                raise
            raise L.SpecError(f'a graph model must be {{"inputs": [...], "nodes": [...], "outputs": [...]}} '
                              f"({type(exc).__name__}: {exc})") from None
        return cls(inputs, nodes, outputs)


AnySpec = Union[L.ModelSpec, GraphSpec]


def spec_from_dict(d: Any) -> AnySpec:
    """A model spec from JSON: a graph (`"nodes"` key) or a layer list."""
    return GraphSpec.from_dict(d) if isinstance(d, dict) and "nodes" in d else L.ModelSpec.from_dict(d)
