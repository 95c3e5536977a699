"""The base of every layer spec: name, input shape, trainable flag, JSON form and shape errors."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cnnlab.spec.checks import SpecError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Layer:
    """Base of every layer spec. `name` is filled in Keras style (conv2d, conv2d_1, ...) by the model;
    `input_shape` on the first layer declares the model's input, as in Keras."""
    name: str | None = field(default=None, kw_only=True)
    input_shape: tuple[int, ...] | None = field(default=None, kw_only=True)
    trainable: bool = field(default=True, kw_only=True)  # False: frozen, its weights count as non-trainable
    keras_name: ClassVar[str] = ""

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def params(self, shape: Shape) -> tuple[int, int]:
        """(trainable, non_trainable) parameter counts for an input of `shape`."""
        return 0, 0

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in sorted(dataclasses.fields(self), key=lambda f: f.kw_only):  # name, input_shape last
            value = getattr(self, f.name)
            # trainable is written when it differs from True, and always where the layer is frozen unless asked
            # (a pretrained backbone), so a fine-tuned one does not reload as frozen
            if (f.name in ("name", "input_shape") and value is None) or (f.name == "trainable" and value
                                                                         and f.default is True):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def _fail(self, shape: Shape, why: str) -> SpecError:
        label = getattr(self, "name", None) or self.keras_name
        return SpecError(f"{self.type} layer {label!r} cannot take input shape {_fmt(shape)}: {why}")

    def _need_image(self, shape: Shape) -> tuple[int, int, int]:
        if len(shape) != 3:
            raise self._fail(shape, "it needs an image input (height, width, channels)")
        return shape  # type: ignore[return-value]


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join(["None", *map(str, shape)]) + ")"
