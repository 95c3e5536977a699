"""Named architectures, and turning a `--model` argument (zoo name, JSON file or compact spec) into a spec."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.jsonutil import json_depth
from cnnlab.spec import compact
from cnnlab.spec.layers import AveragePooling2D, Conv2D, Dense, Dropout, Flatten, MaxPooling2D, ModelSpec, SpecError

MAX_SPEC_NESTING = 64  # a layer list is 3-4 brackets deep; a nested model a few more


@dataclass(frozen=True)
class ZooModel:
    description: str
    layers: tuple
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields this model trains best with

    def spec(self, input_shape: tuple[int, ...] | None = None) -> ModelSpec:
        return ModelSpec(self.layers, input_shape)


ZOO: dict[str, ZooModel] = {
    "seed": ZooModel(
        "the lecture's final CNN: three 3x3 convs (32, 64, 64) with max pooling, Dense 64, softmax (93,322 params on MNIST)",
        (Conv2D(32, (3, 3), activation="relu"), MaxPooling2D((2, 2)),
         Conv2D(64, (3, 3), activation="relu"), MaxPooling2D((2, 2)),
         Conv2D(64, (3, 3), activation="relu"), Flatten(),
         Dense(64, activation="relu"), Dense(10, activation="softmax"))),
    "lecture-convs": ZooModel(
        "the lecture's first summary example: three 3x3 convs without pooling (55,744 in the convs), then a softmax (365,514 params)",
        (Conv2D(32, (3, 3), activation="relu"), Conv2D(64, (3, 3), activation="relu"),
         Conv2D(64, (3, 3), activation="relu"), Flatten(), Dense(10, activation="softmax"))),
    "keras-example": ZooModel(
        "Keras's 'simple MNIST convnet' example: two convs, max pooling, dropout 0.5 (34,826 params)",
        (Conv2D(32, (3, 3), activation="relu"), MaxPooling2D((2, 2)),
         Conv2D(64, (3, 3), activation="relu"), MaxPooling2D((2, 2)),
         Flatten(), Dropout(0.5), Dense(10, activation="softmax"))),
    "lenet5": ZooModel(
        "LeCun et al. 1998 LeNet-5 for 28x28 inputs: tanh, average pooling, 120-84-10 (61,706 params)",
        (Conv2D(6, (5, 5), padding="same", activation="tanh"), AveragePooling2D((2, 2)),
         Conv2D(16, (5, 5), activation="tanh"), AveragePooling2D((2, 2)), Flatten(),
         Dense(120, activation="tanh"), Dense(84, activation="tanh"), Dense(10, activation="softmax"))),
    "fast": ZooModel(
        "the least time to 99% on MNIST: two 5x5 convs (16, 32), Dense 64, one epoch at a high peak rate "
        "(46,730 params)",
        compact.parse("conv16k5:relu max2 conv32k5:relu max2 flatten dense64:relu dense10:softmax").layers,
        recipe={"epochs": 1, "batch_size": 128, "lr": 1.2e-2, "schedule": "onecycle", "label_smoothing": 0.1}),
    "best": ZooModel(
        "the most accurate single model: four 3x3 convs with batch norm, dropout, augmentation, 15 epochs "
        "(331,306 params)",
        compact.parse("conv32k3nobias bn act:relu conv32k3nobias bn act:relu max2 drop0.1 "
                      "conv64k3nobias bn act:relu conv64k3nobias bn act:relu max2 drop0.2 flatten "
                      "dense256nobias bn act:relu drop0.3 dense10:softmax").layers,
        recipe={"epochs": 15, "batch_size": 128, "lr": 4e-3, "schedule": "onecycle", "label_smoothing": 0.1,
                "optimizer": "adamw", "weight_decay": 5e-4, "augment": "digits"}),
    "mlp": ZooModel(
        "a baseline without convolutions: Flatten, Dense 128, dropout, softmax (101,770 params on MNIST)",
        (Flatten(), Dense(128, activation="relu"), Dropout(0.2), Dense(10, activation="softmax"))),
}


def resolve(model: str, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None
            ) -> tuple[ModelSpec, dict[str, Any]]:
    """A zoo name, a JSON model file or a compact spec -> (spec, recipe); input shape filled from the data.

    A zoo model's last Dense is resized to `num_classes` so the same name works for any dataset.
    """
    if model in ZOO:
        entry = ZOO[model]
        layers = entry.layers
        if num_classes is not None and isinstance(layers[-1], Dense) and layers[-1].units != num_classes:
            last = layers[-1]
            layers = (*layers[:-1], Dense(num_classes, activation=last.activation))
        return ModelSpec(layers, input_shape), dict(entry.recipe)
    path = Path(model)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise SpecError(f"model file {model!r} not found")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise SpecError(f"{model}: not valid JSON ({type(exc).__name__}: {exc})") from None
        spec = ModelSpec.from_dict(data)
    else:
        try:
            spec = compact.parse(model)
        except SpecError as exc:
            raise SpecError(f"--model {model!r} is not a zoo name ({', '.join(ZOO)}), a JSON file, "
                            f"or a compact spec: {exc}") from None
    return fit_to_data(spec, input_shape, num_classes), {}


def fit_to_data(spec: ModelSpec, input_shape: tuple[int, ...] | None, num_classes: int | None) -> ModelSpec:
    """`spec` with the data's input shape; checks it takes those images and outputs one value per class."""
    if spec.input_shape is None and input_shape is not None:
        spec = spec.with_input_shape(input_shape)
    elif input_shape is not None and spec.input_shape != tuple(input_shape):
        raise SpecError(f"the model's input_shape {spec.input_shape} does not match the data's images "
                        f"{tuple(input_shape)}")
    if input_shape is not None and num_classes is not None:
        out = spec.shapes()[-1] if spec.layers else tuple(input_shape)
        if out != (num_classes,):
            raise SpecError(f"the last layer outputs shape {out} but the data has {num_classes} classes: "
                            f"end with Dense({num_classes}, activation='softmax')")
    return spec


def resolve_text(text: str, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None
                 ) -> tuple[ModelSpec, dict[str, Any]]:
    """Like `resolve`, for text typed by someone else (the web page): a zoo name, JSON text or a compact spec.

    Never reads a file, so a request cannot make the server open a path. With `num_classes`, the
    last layer must output one value per class.
    """
    text = text.strip()
    if not text:
        raise SpecError("empty model: give a zoo name (" + ", ".join(ZOO) + "), a JSON layer list or a compact spec")
    if text in ZOO:
        return resolve(text, input_shape, num_classes)
    if text.startswith(("{", "[")):
        # json.loads recurses once per bracket; 9,000 of them overflow the stack (RecursionError, a 500)
        if text.count("[") + text.count("{") > MAX_SPEC_NESTING and json_depth(text) > MAX_SPEC_NESTING:
            raise SpecError(f"the model's JSON is nested more than {MAX_SPEC_NESTING} levels deep (a layer list "
                            "is 3-4 deep)")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"not valid JSON: {exc}") from None
        if isinstance(data, list):  # a bare layer list, as in the README's JSON examples
            data = {"layers": data}
        try:
            spec = ModelSpec.from_dict(data)
        except TypeError as exc:  # e.g. an unhashable "type" value
            raise SpecError(f"malformed layer: {exc}") from None
    else:
        spec = compact.parse(text)
    return fit_to_data(spec, input_shape, num_classes), {}

