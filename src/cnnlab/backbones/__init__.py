"""Pretrained backbones: EfficientNet-Lite0/1/2 with ImageNet weights, their preprocessing and class names.

Quick start::

    from cnnlab.backbones import efficientnet_lite, preprocess_image, decode_predictions
    model = efficientnet_lite("lite0")             # eval mode, weights verified and cached
    logits = model(preprocess_image(photo)[None])  # (1, 1000)
    decode_predictions(logits.softmax(1), top=5)

Nothing is read at import; the weights load on the first ``efficientnet_lite``/``load_pretrained`` call.
"""
from cnnlab.backbones.efficientnet_lite import VARIANTS, ConvBNAct, EfficientNetLite, MBConv, get_variant
from cnnlab.backbones.inference import extract_features, fold_batchnorm, native_bf16, optimize_for_inference
from cnnlab.backbones.preprocess import (
    Prediction,
    class_names,
    class_wnids,
    decode_predictions,
    preprocess_image,
    resize_and_crop,
    scale_batch,
)
from cnnlab.backbones.weights import (
    WeightsError,
    cache_dir,
    cache_path,
    efficientnet_lite,
    load_pretrained,
    load_state_strict,
    packaged_weights_path,
)

__all__ = [
    "VARIANTS",
    "ConvBNAct",
    "EfficientNetLite",
    "MBConv",
    "Prediction",
    "WeightsError",
    "cache_dir",
    "cache_path",
    "class_names",
    "class_wnids",
    "decode_predictions",
    "efficientnet_lite",
    "extract_features",
    "fold_batchnorm",
    "get_variant",
    "load_pretrained",
    "load_state_strict",
    "native_bf16",
    "optimize_for_inference",
    "packaged_weights_path",
    "preprocess_image",
    "resize_and_crop",
    "scale_batch",
]
