"""Class probabilities of uint8 batches through the fastest faithful path for a model.

A model whose first layer is a pretrained EfficientNet-Lite (a photo run, `imagenet`) runs on one of two
engines. `torch`: the backbone as the fast inference copy (`optimize_for_inference`: folded BN,
channels_last, bf16 where native) and the rest of its layers on the float32 maps. `onnxruntime`: the model
exported as `cnnlab export` writes it (uint8 in, the saved module in float32), cached per weights. "auto"
picks onnxruntime on a CPU without AMX when it is installed: on this project's AVX512-BF16 CPU without AMX,
batch 32 at 224 px, onnxruntime ran 45-54 images/s, the torch copy 27 (bf16) and 20-28 (fp32); on a CPU
with AMX the torch copy in bf16 was measured ahead (165 images/s against onnxruntime's 125, issue 19).
Any other model runs its module as saved, on the caller's moderate batches. Probabilities come from
`runs.predict.probabilities` (torch) or the export's own output, which applies the same rule.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from typing import Any, Callable

import numpy as np
import torch

from cnnlab.backbones.inference import extract_features, optimize_for_inference
from cnnlab.runs.predict import probabilities
from cnnlab.train.device_data import to_device_images
from cnnlab.train.fit import predict_logits

ENGINES = ("auto", "torch", "onnxruntime")


def has_amx() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def pick_engine(engine: str, device: torch.device) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "auto":
        return engine
    ort_there = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
    return "onnxruntime" if device.type == "cpu" and not has_amx() and ort_there else "torch"


class Classifier:
    """`classifier(uint8 (B, H, W, C)) -> float32 (B, classes)` probabilities; `engine` says which path runs."""

    def __init__(self, model: Any, dtype: torch.dtype | None = None, engine: str = "auto"):
        from cnnlab.spec.backbone import BackboneLayer
        self.module = model.module
        self.module.eval()
        children = list(self.module.children()) if isinstance(self.module, torch.nn.Sequential) else []
        self.device = next(self.module.parameters()).device
        backbone = bool(children) and isinstance(children[0], BackboneLayer)
        self.engine = pick_engine(engine, self.device) if backbone else "module"
        if self.engine == "onnxruntime":
            self._session = onnx_session(model)
        elif self.engine == "torch":
            self.backbone = optimize_for_inference(children[0].net, dtype)
            self.tail = torch.nn.Sequential(*children[1:]).eval()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, 0), np.float32)
        if self.engine == "onnxruntime":
            return self._session(np.ascontiguousarray(images))
        if self.engine == "module":
            logits = predict_logits(self.module, to_device_images(images, self.device), batch_size=len(images))
            return probabilities(logits).cpu().numpy()
        with torch.inference_mode():
            maps = extract_features(self.backbone, torch.from_numpy(np.ascontiguousarray(images)), len(images))
            logits = self.tail(maps) if len(self.tail) else maps
        return probabilities(logits).cpu().numpy()


def onnx_session(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """An onnxruntime session over the model's export, written once into the cache folder (keyed by a digest
    of its spec and weights, so a retrained model never reuses another's file)."""
    import onnxruntime as ort

    from cnnlab.datasets.download import cache_dir
    from cnnlab.fsutil import atomic_write_bytes
    from cnnlab.runs.export import PixelsToScores, onnx_bytes
    digest = hashlib.sha256(json.dumps(model.spec.to_dict(), sort_keys=True).encode())
    for key, value in sorted(model.module.state_dict().items()):
        digest.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    path = cache_dir() / "onnx" / f"{digest.hexdigest()[:24]}.onnx"
    if not path.exists():
        example = torch.zeros((2, *model.spec.input_shape), dtype=torch.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, onnx_bytes(PixelsToScores(model.module).eval(), example, {}))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["probabilities"], {"images": x})[0]


__all__ = ["Classifier", "ENGINES", "onnx_session", "pick_engine"]
