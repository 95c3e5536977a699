"""Merge layer specs for functional graphs: `Add` and `Concatenate` take a list of input shapes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cnnlab.spec.base import Layer, Shape, _fmt
from cnnlab.spec.checks import SpecError


@dataclass(frozen=True)
class Merge(Layer):
    """A layer called on a list of tensors, `layers.Add()([x, y])`; it has no weights."""

    def output_shapes(self, shapes: list[Shape]) -> Shape:
        if not isinstance(shapes, (list, tuple)) or len(shapes) < 2:
            raise SpecError(f"{self.type} layer {self.name!r} takes a list of at least 2 inputs. "
                            f"Received: {len(shapes) if isinstance(shapes, (list, tuple)) else 1} input")
        return self._merged([tuple(s) for s in shapes])

    def _merged(self, shapes: list[Shape]) -> Shape:
        raise NotImplementedError

    def output_shape(self, shape: Shape) -> Shape:
        raise SpecError(f"{self.type} layer {self.name!r} takes a list of inputs, got one of shape {_fmt(shape)}")


@dataclass(frozen=True)
class Add(Merge):
    keras_name: ClassVar[str] = "add"

    def _merged(self, shapes: list[Shape]) -> Shape:
        if len(set(shapes)) != 1:
            raise SpecError(f"Add layer {self.name!r} needs inputs of one shape. "
                            f"Received: {', '.join(map(_fmt, shapes))}")
        return shapes[0]


@dataclass(frozen=True)
class Concatenate(Merge):
    """Joins its inputs along the last (channel or feature) axis, the only axis cnnlab supports."""
    axis: int = -1
    keras_name: ClassVar[str] = "concatenate"

    def __post_init__(self) -> None:
        if self.axis != -1:
            raise SpecError(f"Concatenate axis must be -1 (the channel axis), got {self.axis!r}")

    def _merged(self, shapes: list[Shape]) -> Shape:
        if len({s[:-1] for s in shapes}) != 1 or len({len(s) for s in shapes}) != 1:
            raise SpecError(f"Concatenate layer {self.name!r} needs inputs equal in all but the last axis. "
                            f"Received: {', '.join(map(_fmt, shapes))}")
        return (*shapes[0][:-1], sum(s[-1] for s in shapes))


MERGE_TYPES: dict[str, type[Layer]] = {"Add": Add, "Concatenate": Concatenate}
