"""Export a trained model for deployment: ONNX (for onnxruntime and friends) or TorchScript.

The exported graph takes what image decoders produce, **uint8 pixels (N, H, W, C)**, the same layout
and range as cnnlab's datasets and `predict`, and does the scaling to [0, 1] and the move to
channels-first itself. A float input would invite the classic silent bug of feeding 0-255 values to a
network trained on 0-1 ones; with uint8 there is one way to call it. It returns two outputs,
`logits` (N, classes) and `probabilities` (their softmax). The batch axis is dynamic.

The ONNX file's metadata_props carry the class names, the preprocessing recipe, the input
convention and the model spec as JSON strings (keys `cnnlab.*`). The safetensors model file stays
the primary format; these are one-way exports.
"""
from __future__ import annotations

import io as _io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import MissingExtra
from cnnlab.fsutil import atomic_write_bytes
from cnnlab.runs.open_model import OpenedModel, open_model
from cnnlab.runs.predict import probabilities

FORMATS = ("onnx", "torchscript")
OPSET = 17  # ONNX opset: onnxruntime >= 1.11, TensorRT 8.6, OpenVINO 2022.3 and later all run it
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INPUT_NAME, OUTPUT_NAMES = "images", ("logits", "probabilities")
INPUT_DOC = "uint8 pixels (N, H, W, C) in 0-255; the graph scales them to [0, 1] itself"


class PixelsToScores(nn.Module):
    """uint8 (N, H, W, C) images -> (logits, softmax probabilities), around a cnnlab module."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float() / 255.0  # (N, C, H, W) in [0, 1], as cnnlab.train.device_data.scale
        logits = self.module(x)
        return logits, probabilities(logits)  # the one rule: softmax, or [1 - p, p] for a binary head


MIN_OPSET, MAX_OPSET = 13, 21  # 13: Softmax on any axis; 13 to 21 were checked to export with torch 2.13


def default_out(model: str | os.PathLike, fmt: str) -> Path:
    """runs/NAME -> runs/NAME/model.onnx; path/m.safetensors -> path/m.onnx."""
    model = Path(model)
    stem = model / "model" if model.is_dir() else model.with_suffix("")
    return stem.with_name(stem.name + SUFFIXES[fmt])


def export(model: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None,
           opset: int = OPSET) -> Path:
    """Write the model of a run folder or .safetensors file as `fmt`; returns the file written."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be {' or '.join(FORMATS)}, got {fmt!r}")
    if fmt == "onnx" and not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"ONNX opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    saved = open_model(model)
    if len(saved.spec.shapes()[-1]) != 1:
        raise ValueError(f"only models that output one score per class can be exported; this one outputs "
                         f"{saved.spec.shapes()[-1]} per image")
    out = Path(out) if out is not None else default_out(model, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = PixelsToScores(saved.module).eval()
    example = torch.zeros((2, *saved.spec.input_shape), dtype=torch.uint8)
    if fmt == "onnx":
        _write(out, onnx_bytes(wrapper, example, metadata(saved), opset))
    else:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance, still the C++ route
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # see onnx_bytes
            traced = torch.jit.trace(wrapper, example)
        buffer = _io.BytesIO()  # serialised in memory: torch's own file writer aborts the process on a full disk
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(traced, buffer, _extra_files={"cnnlab.json": json.dumps(metadata(saved))})
        _write(out, buffer.getvalue())
    return out


def _write(out: Path, data: bytes) -> None:
    """Atomic (no half file, no .tmp left); a full or read-only disk is one line naming the file."""
    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {out} ({len(data):,} bytes): {exc.strerror or exc}") from None


def metadata(saved: OpenedModel) -> dict[str, str]:
    """What a deployment needs besides the graph, as the string pairs ONNX metadata holds."""
    return {"cnnlab.class_names": json.dumps(saved.class_names), "cnnlab.preprocessing": json.dumps(saved.preprocessing),
            "cnnlab.input": INPUT_DOC, "cnnlab.outputs": "logits (N, classes), or (N, 1) for a binary head; "
            "probabilities (N, classes) = softmax(logits), or [1 - sigmoid, sigmoid] for a binary head",
            "cnnlab.spec": json.dumps(saved.spec.to_dict()), "cnnlab.name": saved.name}


def onnx_bytes(wrapper: nn.Module, example: torch.Tensor, meta: dict[str, Any], opset: int = OPSET) -> bytes:
    """The ONNX graph of `wrapper` with a dynamic batch axis and `meta` as metadata_props."""
    try:
        import onnx  # optional dependency
    except ImportError:
        raise MissingExtra("ONNX export needs the onnx package: pip install 'cnnlab[export]'") from None

    buffer = _io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter needs only `onnx`; the torch.export-based one would also need
        # onnxscript, and our graphs (convolutions, pooling, dense layers) export the same either way.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)  # strided slices stay as Slice ops
        # The head's width (one logit for a binary head, else one per class) is fixed for a model; the tracer
        # warns that the branch on it is frozen into the graph, which is what is meant
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(wrapper, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}})
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"cnnlab model; input '{INPUT_NAME}': {INPUT_DOC}"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
