"""Keras's `keras.applications`: pretrained networks as layers (`from cnnlab.applications import EfficientNetLite0`)."""
from cnnlab.applications.efficientnet_lite import EfficientNetLite0, EfficientNetLite1, EfficientNetLite2

__all__ = ["EfficientNetLite0", "EfficientNetLite1", "EfficientNetLite2"]
