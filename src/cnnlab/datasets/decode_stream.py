"""Image files -> batches of uint8 model inputs, decoded in threads while the caller runs the network.

Pillow releases the GIL while it decodes and resizes, so a thread pool decodes the next files while torch
computes on the current batch. Only a few chunks of files are in flight at once (see
`cnnlab.datasets.folders.load.iter_in_threads`), so memory stays bounded whatever the number of files.
A file that cannot be used is reported with its reason, never the end of the stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cnnlab.datasets.folders.load import iter_in_threads
from cnnlab.datasets.image_files import ImageError, load_image_for


@dataclass
class Batch:
    """Decoded images and the files that failed, by their positions in the caller's file list."""
    indices: list[int]  # positions of the rows of `images`
    images: np.ndarray  # (B, H, W, C) uint8
    errors: list[tuple[int, str]]  # (position, reason)


def load_or_reason(path: Path, input_shape: tuple[int, ...], preprocessing: dict[str, Any] | None) -> np.ndarray | str:
    """The model input of one file, or the reason it cannot be used (one short line)."""
    try:
        return load_image_for(path, input_shape, preprocessing)
    except FileNotFoundError:
        return "disappeared before it was read"
    except ImageError as exc:
        return getattr(exc, "reason", None) or str(exc)
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc.strerror or exc})" if isinstance(exc, OSError) else str(exc)


def decoded_batches(files: Sequence[Path], input_shape: tuple[int, ...], preprocessing: dict[str, Any] | None,
                    batch_size: int = 32, workers: int | None = None,
                    load: Callable[[Path], np.ndarray | str] | None = None) -> Iterator[Batch]:
    """Batches of at most `batch_size` decoded files, in the order of `files`; errors ride with the batch
    in which they were found (a batch may hold errors and no image)."""
    load = load or (lambda p: load_or_reason(p, input_shape, preprocessing))
    indices: list[int] = []
    images: list[np.ndarray] = []
    errors: list[tuple[int, str]] = []
    for start, part in iter_in_threads(load, list(files), workers):
        for offset, result in enumerate(part):
            if isinstance(result, str):
                errors.append((start + offset, result))
                continue
            indices.append(start + offset)
            images.append(result)
            if len(images) == batch_size:
                yield Batch(indices, np.stack(images), errors)
                indices, images, errors = [], [], []
    if images or errors:
        yield Batch(indices, np.stack(images) if images else np.zeros((0, *input_shape), np.uint8), errors)

