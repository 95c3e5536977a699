"""A photo folder as a pretrained backbone sees it: the backbone's own crop, the dtype its features are computed in,
and (for `--fine-tune`, which trains on pixels) the photos decoded into memory with that crop.

One rule for the pixels: `load_folder(..., resize_to=size + 32)`, the crop `predict`, the web page and exports apply
to a model whose preprocessing records `resize_to` (`cnnlab.datasets.image_files.to_model_input`), and the one the
streamed features use (`cnnlab.runs.embeddings.crop_preprocessing`), so the head is fitted on exactly the photos the
saved model will be shown. The features themselves stream from disk: `cnnlab.runs.photo_stream`.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from cnnlab.backbones.efficientnet_lite import VARIANTS
from cnnlab.backbones.inference import native_bf16
from cnnlab.backbones.preprocess import CROP_PADDING
from cnnlab.datasets.folders.load import FolderDataset, load_folder


def crop_of(variant: str) -> tuple[int, int]:
    """(crop side, short side resized to): the backbone's evaluation crop, 224 of 256 for Lite0, 260 of 292 for Lite2."""
    size = VARIANTS[variant].resolution
    return size, size + CROP_PADDING


def load_photos(path: str | os.PathLike, variant: str, color: str = "auto", seed: int = 0,
                cache: bool = True) -> FolderDataset:
    """The folder's photos as `variant` sees them: uint8 (N, size, size, 3) centre crops, all in memory."""
    size, resize_to = crop_of(variant)
    return load_folder(path, image_size=(size, size), color=color, seed=seed, resize_to=resize_to, cache=cache)


def feature_dtype(device: torch.device) -> torch.dtype:
    """fp32 on a CPU: the head is then fitted on the features the saved model (fp32) computes at test time (a head
    fitted on bf16 features scored 4 fewer of the 372 clothing test photos on fp32 test features than on bf16
    ones, measured 2026-12-04). The fp32 fast copy of Lite2 still runs 34 images/s on 2 quiet cores, against 24 for
    the eager fp32 Lite0 (bf16: 82). On a GPU, bf16 where it has it, else fp16: there speed is the point."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if native_bf16(device) else torch.float16


def fit_images(data: FolderDataset) -> np.ndarray:
    """The photos the head is fitted on: train/, with val/ when a test/ folder is the evaluation set."""
    return data.x_train if data.x_val is None else np.concatenate([data.x_train, data.x_val])


def fit_labels(data: FolderDataset) -> np.ndarray:
    return data.y_train if data.y_val is None else np.concatenate([data.y_train, data.y_val])
