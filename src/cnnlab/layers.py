"""Keras's `layers` namespace: `from cnnlab import layers; layers.Conv2D(32, (3, 3), activation="relu")`.

The layer types are the spec dataclasses of `cnnlab.spec.layers`, the source of truth of every model.
"""
from cnnlab.spec.layers import (
                                Activation,
                                AveragePooling2D,
                                BatchNormalization,
                                Conv2D,
                                Dense,
                                Dropout,
                                Flatten,
                                GlobalAveragePooling2D,
                                Input,
                                Layer,
                                MaxPooling2D,
                                RandomFlip,
                                RandomRotation,
                                RandomZoom,
                                Rescaling,
)

__all__ = ["Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
           "GlobalAveragePooling2D", "Input", "Layer", "MaxPooling2D",
           "RandomFlip", "RandomRotation", "RandomZoom", "Rescaling"]
