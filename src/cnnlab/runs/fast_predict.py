"""Class probabilities of uint8 batches through the fastest faithful path for a model.

A model whose first layer is a pretrained EfficientNet-Lite (a photo run, `imagenet`) runs its backbone as
the fast inference copy (`optimize_for_inference`: folded BN, channels_last, bf16 where the CPU or GPU has
it natively) and the rest of its layers (pooling, the Dense head) on the float32 maps. Any other model runs
its module as saved, on the caller's moderate batches. Either way the probabilities come from
`runs.predict.probabilities`, the one rule for logits -> probabilities.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cnnlab.backbones.inference import extract_features, optimize_for_inference
from cnnlab.runs.predict import probabilities
from cnnlab.train.device_data import to_device_images
from cnnlab.train.fit import predict_logits


class Classifier:
    """`classifier(uint8 (B, H, W, C)) -> float32 (B, classes)` probabilities; `fast` says which path runs."""

    def __init__(self, model: Any, dtype: torch.dtype | None = None):
        from cnnlab.spec.backbone import BackboneLayer
        self.module = model.module
        self.module.eval()
        children = list(self.module.children()) if isinstance(self.module, torch.nn.Sequential) else []
        self.fast = bool(children) and isinstance(children[0], BackboneLayer)
        if self.fast:
            self.backbone = optimize_for_inference(children[0].net, dtype)
            self.tail = torch.nn.Sequential(*children[1:]).eval()
        self.device = next(self.module.parameters()).device

    @property
    def compute_dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype if self.fast else next(self.module.parameters()).dtype

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, 0), np.float32)
        if not self.fast:
            logits = predict_logits(self.module, to_device_images(images, self.device), batch_size=len(images))
            return probabilities(logits).cpu().numpy()
        with torch.inference_mode():
            maps = extract_features(self.backbone, torch.from_numpy(np.ascontiguousarray(images)), len(images))
            logits = self.tail(maps) if len(self.tail) else maps
        return probabilities(logits).cpu().numpy()
