"""Keras's `layers` namespace: `from cnnlab import layers; layers.Conv2D(32, (3, 3), activation="relu")`.

Each class is a Keras-shaped layer object (`cnnlab.symbolic.Layer`: automatic name, `trainable`,
callable on `keras.Input(...)` tensors, weights in Keras's layout) over the spec dataclass of the same
name in `cnnlab.spec.layers`, which takes the same arguments and stays the source of truth.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from cnnlab.backbones.efficientnet_lite import layer_names
from cnnlab.spec import backbone_params as BP
from cnnlab.spec import layers as L
from cnnlab.spec import merge as M
from cnnlab.symbolic import Input, InputLayer, KerasTensor, Layer


class Conv2D(Layer):
    spec_class = L.Conv2D


class SeparableConv2D(Layer):
    """`SeparableConv2D(filters, kernel_size, strides=(1, 1), padding="valid", activation=None,
    use_bias=True, depth_multiplier=1)`: depthwise then pointwise convolution, as Keras's."""
    spec_class = L.SeparableConv2D


class MaxPooling2D(Layer):
    spec_class = L.MaxPooling2D


class AveragePooling2D(Layer):
    spec_class = L.AveragePooling2D


class GlobalAveragePooling2D(Layer):
    spec_class = L.GlobalAveragePooling2D


class Flatten(Layer):
    spec_class = L.Flatten


class Dense(Layer):
    spec_class = L.Dense


class Dropout(Layer):
    spec_class = L.Dropout


class BatchNormalization(Layer):
    spec_class = L.BatchNormalization


class Activation(Layer):
    spec_class = L.Activation


class Rescaling(Layer):
    """`Rescaling(scale, offset=0.0)`: x * scale + offset; at the input it acts on the 0-255 pixels, as Keras's."""
    spec_class = L.Rescaling


class RandomFlip(Layer):
    """`RandomFlip(mode="horizontal_and_vertical")`: random flips while training, nothing at inference."""
    spec_class = L.RandomFlip


class RandomRotation(Layer):
    """`RandomRotation(factor)`: random turns of up to factor x 360 degrees while training."""
    spec_class = L.RandomRotation


class RandomZoom(Layer):
    """`RandomZoom(height_factor, width_factor=None)`: random zooms while training."""
    spec_class = L.RandomZoom


class BackboneLayerView:
    """One layer of a pretrained backbone (stem, an MBConv block, top) as `base.layers` lists it: its name,
    parameter count and `trainable` flag, kept in the backbone's spec (`frozen_layers`)."""

    def __init__(self, base: _Backbone, index: int, name: str):
        self._base, self.index, self.name = base, index, name

    @property
    def trainable(self) -> bool:
        return self._base.trainable and self.index not in self._base.spec.frozen_layers

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"trainable must be True or False, got {value!r}")
        frozen = set(self._base.spec.frozen_layers)
        (frozen.discard if value else frozen.add)(self.index)
        self._base._set_frozen(tuple(sorted(frozen)))

    def count_params(self) -> int:
        return BP.layer_params(self._base.spec.variant, False)[self.index]

    def __repr__(self) -> str:
        return f"<BackboneLayer name={self.name}, trainable={self.trainable}>"


class _Backbone(Layer):
    """A pretrained network as one layer; `.layers` are its own layers (stem, block1a, ..., top), each with a
    `trainable` flag, for Keras's fine-tuning recipe:
    `base.trainable = True; for layer in base.layers[:-4]: layer.trainable = False`."""

    @property
    def layers(self) -> list[BackboneLayerView]:
        names = layer_names(self.spec.variant)
        return [BackboneLayerView(self, i, name) for i, name in enumerate(names)]

    def _set_frozen(self, frozen: tuple[int, ...]) -> None:
        self._spec = dataclasses.replace(self._spec, frozen_layers=frozen)
        if self._module is not None:
            self._module.set_flags(self._trainable, frozen)

    @property
    def weights(self) -> list[Any]:
        """Every weight; one of a frozen layer (or of a frozen network) is non-trainable."""
        weights = super().weights
        if self.built:
            params = dict(self.module.named_parameters())
            for w in weights:
                w.trainable = w.trainable and w.name in params and params[w.name].requires_grad
        return weights


class EfficientNetLite0(_Backbone):
    """The pretrained EfficientNet-Lite0 as one layer (made by `cnnlab.applications.EfficientNetLite0`)."""
    spec_class = L.EfficientNetLite0


class EfficientNetLite1(_Backbone):
    """The pretrained EfficientNet-Lite1 (240 px) as one layer (made by `cnnlab.applications.EfficientNetLite1`)."""
    spec_class = L.EfficientNetLite1


class EfficientNetLite2(_Backbone):
    """The pretrained EfficientNet-Lite2 (260 px) as one layer (made by `cnnlab.applications.EfficientNetLite2`)."""
    spec_class = L.EfficientNetLite2


class Conv2DTranspose(Layer):
    """`Conv2DTranspose(filters, kernel_size, strides=(1, 1), padding="valid", activation=None, use_bias=True)`:
    the learnt upsampling of segmentation decoders, as Keras's."""
    spec_class = L.Conv2DTranspose


class UpSampling2D(Layer):
    """`UpSampling2D(size=(2, 2), interpolation="nearest")`: each pixel repeated (or interpolated) size times."""
    spec_class = L.UpSampling2D


class Add(Layer):
    """`Add()([x, y])`: element-wise sum of tensors of one shape."""
    spec_class = M.Add


class Concatenate(Layer):
    """`Concatenate()([x, y])`: joins tensors along the channel (last) axis."""
    spec_class = M.Concatenate


def add(inputs: list[KerasTensor], **kwargs: Any) -> KerasTensor:
    """`layers.add([x, y])`, Keras's functional form of `Add()([x, y])`."""
    return Add(**kwargs)(inputs)


def concatenate(inputs: list[KerasTensor], axis: int = -1, **kwargs: Any) -> KerasTensor:
    return Concatenate(axis, **kwargs)(inputs)


LAYER_CLASSES: dict[type[L.Layer], type[Layer]] = {
    cls.spec_class: cls for cls in (Conv2D, SeparableConv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
                                    Flatten, Dense, Dropout, BatchNormalization, Activation, Add, Concatenate,
                                    Rescaling, RandomFlip, RandomRotation, RandomZoom,
                                    EfficientNetLite0, EfficientNetLite1, EfficientNetLite2, Conv2DTranspose,
                                    UpSampling2D)}


def from_spec(spec: L.Layer, name: str | None = None) -> Layer:
    """The layer object of a spec (`spec.layers.Conv2D(...)` -> `layers.Conv2D`), named `name` or as the spec."""
    if type(spec) not in LAYER_CLASSES:
        raise L.SpecError(f"expected a layer such as layers.Conv2D(32, (3, 3)), got {spec!r}")
    return LAYER_CLASSES[type(spec)].from_spec(spec, name)


__all__ = ["Activation", "Add", "AveragePooling2D", "BatchNormalization", "Concatenate", "Conv2D", "Conv2DTranspose",
           "Dense",
           "Dropout", "Flatten", "GlobalAveragePooling2D", "Input", "InputLayer", "Layer", "MaxPooling2D",
           "RandomFlip", "RandomRotation", "RandomZoom", "Rescaling", "SeparableConv2D", "UpSampling2D", "add",
           "concatenate",
           "from_spec"]
