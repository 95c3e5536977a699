"""Safetensors bytes, read and checked: the tensors' digest, NaN refusal, damaged files as one-line errors.

Model files (`cnnlab.runs.model_file`) and training checkpoints (`cnnlab.train.checkpoint_file`) share these.
Nothing is ever unpickled: a file from a stranger is tensors plus JSON.
"""
from __future__ import annotations

import hashlib
import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from cnnlab.errors import ModelFileError


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' names, dtypes, shapes and bytes, in name order: the file's integrity check."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_tensors(tensors: dict[str, torch.Tensor], expected: str | None, where: str) -> None:
    """ModelFileError when the digest differs from `expected` (None: a file written before digests, not
    checked) or when a floating-point tensor holds NaN or infinity (naming the tensor)."""
    if expected is not None and tensor_digest(tensors) != expected:
        raise ModelFileError(f"{where}: the tensors do not match the file's SHA-256: the file is damaged or was altered")
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelFileError(f"{where}: tensor {name!r} holds NaN or infinite values; refusing to load it")


def read_safetensors(raw: bytes, where: str, what: str = "safetensors file"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, the header's string metadata) of a safetensors file's bytes; ModelFileError when damaged."""
    try:
        tensors = st_load(raw)
        header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
        metadata = header.get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError, RecursionError, AttributeError) as exc:
        raise ModelFileError(f"{where}: not a readable {what} ({exc})") from None
    return tensors, metadata
