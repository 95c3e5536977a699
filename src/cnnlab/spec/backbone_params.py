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
