"""Layer specs that work on whole images: preprocessing/augmentation layers and pretrained backbones."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from cnnlab.spec import backbone_params as BP
from cnnlab.spec.base import Layer, Shape
from cnnlab.spec.checks import SpecError, _activation, _check_bool, _check_fill, _factor_range, _is_number


@dataclass(frozen=True)
class Rescaling(Layer):
    """y = x * scale + offset on the 0-255 pixels, as Keras's when it comes first (see cnnlab.spec.build)."""
    scale: float
    offset: float = 0.0
    keras_name: ClassVar[str] = "rescaling"

    def __post_init__(self) -> None:
        if not _is_number(self.scale) or not _is_number(self.offset):
            raise SpecError(f"Rescaling scale and offset must be numbers, got {self.scale!r}, {self.offset!r}")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "offset", float(self.offset))


class _ImageOnly(Layer):
    def output_shape(self, shape: Shape) -> Shape:
        return self._need_image(shape)


@dataclass(frozen=True)
class RandomFlip(_ImageOnly):
    mode: str = "horizontal_and_vertical"
    seed: int | None = None
    keras_name: ClassVar[str] = "random_flip"

    def __post_init__(self) -> None:
        if self.mode not in ("horizontal", "vertical", "horizontal_and_vertical"):
            raise SpecError(f"RandomFlip mode must be 'horizontal', 'vertical' or 'horizontal_and_vertical', "
                            f"got {self.mode!r}")


@dataclass(frozen=True)
class RandomRotation(_ImageOnly):
    """Rotate by a random fraction of a full turn in [lower, upper] * 2 pi (factor 0.1: up to +-36 degrees)."""
    factor: Any
    fill_mode: str = "reflect"
    seed: int | None = None
    keras_name: ClassVar[str] = "random_rotation"

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _factor_range(self.factor, "RandomRotation factor"))
        _check_fill(self.fill_mode, "RandomRotation")


@dataclass(frozen=True)
class RandomZoom(_ImageOnly):
    """Zoom by a random factor 1 + f, f in height_factor's range; positive zooms out, negative in (Keras's)."""
    height_factor: Any
    width_factor: Any = None  # None: the same factor as the height, keeping the aspect ratio
    fill_mode: str = "reflect"
    seed: int | None = None
    keras_name: ClassVar[str] = "random_zoom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "height_factor", _factor_range(self.height_factor, "RandomZoom height_factor"))
        if self.width_factor is not None:
            object.__setattr__(self, "width_factor", _factor_range(self.width_factor, "RandomZoom width_factor"))
        _check_fill(self.fill_mode, "RandomZoom")


@dataclass(frozen=True)
class EfficientNetLiteBase(Layer):
    """Pretrained EfficientNet-Lite (cnnlab.backbones): (H, W, 3) -> (ceil(H/32), ceil(W/32), 1280), or
    (1000,) ImageNet logits with `include_top` (`activation`: Keras's `classifier_activation`).

    The variants differ only in their class: `EfficientNetLite0/1/2` below; `variant` names the network."""
    weights: str | None = "imagenet"
    include_top: bool = False
    trainable: bool = field(default=False, kw_only=True)  # pretrained: frozen unless asked
    activation: str | None = None
    frozen_layers: tuple[int, ...] = ()  # indices into the backbone's layers (stem, blocks, top) kept frozen
    keras_name: ClassVar[str] = ""  # "efficientnet_liteN": the variant is the name after "efficientnet_"

    def __post_init__(self) -> None:
        if not self.keras_name:
            raise TypeError("EfficientNetLiteBase has no network of its own; use EfficientNetLite0, 1 or 2")
        if self.weights not in ("imagenet", None):
            raise SpecError(f"{self.type} weights must be 'imagenet' or null, got {self.weights!r}")
        _check_bool(self.include_top, f"{self.type} include_top")
        _check_bool(self.trainable, f"{self.type} trainable")
        object.__setattr__(self, "activation", _activation(self.activation, self.type))
        count = len(BP.layer_params(self.variant, False))
        frozen = self.frozen_layers
        if not isinstance(frozen, (tuple, list)) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count for i in frozen):
            raise SpecError(f"{self.type} frozen_layers must be indices of its {count} layers (0 to {count - 1}), "
                            f"got {frozen!r}")
        object.__setattr__(self, "frozen_layers", tuple(sorted(set(frozen))))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not self.frozen_layers:  # the usual case says nothing, so older files and specs compare equal
            out.pop("frozen_layers", None)
        return out

    @property
    def variant(self) -> str:
        """The network's name in `cnnlab.backbones` ("lite0", "lite1", "lite2")."""
        return self.keras_name.removeprefix("efficientnet_")

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = self._need_image(shape)
        if c != 3:
            raise self._fail(shape, f"it needs 3 colour channels (RGB), the input has {c}")
        return (BP.NUM_CLASSES,) if self.include_top else (-(-h // BP.STRIDE), -(-w // BP.STRIDE), BP.FEATURES)

    def params(self, shape: Shape) -> tuple[int, int]:
        trainable, frozen = BP.backbone_params(self.variant, self.include_top, self.trainable)
        if self.trainable and self.frozen_layers:  # a frozen layer's weights count as non-trainable, as Keras's
            moved = sum(BP.layer_params(self.variant, self.include_top)[i] for i in self.frozen_layers)
            trainable, frozen = trainable - moved, frozen + moved
        return trainable, frozen


@dataclass(frozen=True)
class EfficientNetLite0(EfficientNetLiteBase):
    """EfficientNet-Lite0, trained at 224 px: 4.7M weights with its top, 3.4M without."""
    keras_name: ClassVar[str] = "efficientnet_lite0"


@dataclass(frozen=True)
class EfficientNetLite1(EfficientNetLiteBase):
    """EfficientNet-Lite1, trained at 240 px: Lite0 with 21 blocks instead of 16 (5.4M weights with its top)."""
    keras_name: ClassVar[str] = "efficientnet_lite1"


@dataclass(frozen=True)
class EfficientNetLite2(EfficientNetLiteBase):
    """EfficientNet-Lite2, trained at 260 px: Lite1 with 10% wider blocks (6.1M weights with its top)."""
    keras_name: ClassVar[str] = "efficientnet_lite2"


PREPROCESSING_TYPES = (Rescaling, RandomFlip, RandomRotation, RandomZoom)
BACKBONE_TYPES = (EfficientNetLite0, EfficientNetLite1, EfficientNetLite2)  # one per cnnlab.backbones.VARIANTS entry
IMAGE_LAYER_TYPES = (*PREPROCESSING_TYPES, *BACKBONE_TYPES)
