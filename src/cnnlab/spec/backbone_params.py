"""Parameter counts of the pretrained backbones, for summaries without building the network.

Counted as Keras counts them: the torch parameters plus every BatchNorm's moving mean and variance
(non-trainable in Keras, buffers in torch). Measured from `cnnlab.backbones.EfficientNetLite` and
checked against it in tests/test_photos.py.
"""
from __future__ import annotations

FEATURES = 1280  # the head conv's output: what GlobalAveragePooling2D sees
NUM_CLASSES = 1000  # ImageNet
STRIDE = 32  # five stride-2 stages

# variant -> include_top -> (torch parameters, BatchNorm moving mean + variance)
PARAMS: dict[str, dict[bool, tuple[int, int]]] = {
    "lite0": {True: (4_652_008, 42_016), False: (3_371_008, 42_016)},
    "lite1": {True: (5_416_680, 53_664), False: (4_135_680, 53_664)},
    "lite2": {True: (6_092_072, 58_096), False: (4_811_072, 58_096)},
}


def backbone_params(variant: str, include_top: bool, trainable: bool) -> tuple[int, int]:
    """(trainable, non_trainable): frozen, all of it is non-trainable, as Keras prints a frozen base."""
    weights, moving = PARAMS[variant][include_top]
    return (weights, moving) if trainable else (0, weights + moving)


# variant -> trainable weights of each layer of `EfficientNetLite.layers()` (stem, MBConv blocks, head), measured
# from the network as the totals above; checked against it in tests/test_keras_backbone_layers.py
LAYER_WEIGHTS: dict[str, tuple[int, ...]] = {
    "lite0": (928, 896, 5136, 8832, 13472, 26240, 32080, 83200, 83200, 106304, 170240, 170240, 224160, 476160,
              476160, 476160, 605440, 412160),
    "lite1": (928, 896, 5136, 8832, 8832, 13472, 26240, 26240, 32080, 83200, 83200, 83200, 106304, 170240, 170240,
              170240, 224160, 476160, 476160, 476160, 476160, 605440, 412160),
    "lite2": (928, 896, 5136, 8832, 8832, 14640, 36096, 36096, 43088, 99968, 99968, 99968, 125376, 193920, 193920,
              193920, 257456, 555776, 555776, 555776, 555776, 715808, 453120),
}


def layer_params(variant: str, include_top: bool) -> tuple[int, ...]:
    """The trainable weights of each backbone layer (stem, blocks, top), to move to non-trainable when frozen;
    the same with or without the classifier, which is no layer of these."""
    return LAYER_WEIGHTS[variant]
