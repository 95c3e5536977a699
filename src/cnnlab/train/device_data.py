"""Training data on the device: uint8 images resident there (or a disk memmap read batch by batch), labels, scaling.

The fast path: a (N, H, W, C) uint8 array permuted to NCHW *is* channels_last memory, so the whole set
moves to the device once, unchanged, and each batch is one index into it.
"""
from __future__ import annotations

import numpy as np
import torch


def to_device_images(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8/float (N, H, W, C) -> the same dtype (N, C, H, W) on `device`, channels_last in memory.

    A (N, H, W, C) array permuted to NCHW *is* channels_last memory, so this copies nothing on CPU.
    """
    t = torch.as_tensor(x)
    return t.permute(0, 3, 1, 2).to(device).contiguous(memory_format=torch.channels_last)


class HostBatches:
    """Images left in a host array (a disk-backed np.memmap): each batch's rows are read on demand.

    Rows are read in ascending order (disk locality), then put back in the batch's order, so a batch is
    exactly what indexing the whole set on the device gives. The OS page cache keeps recently read rows
    and gives the memory back under pressure: it is the bounded cache; nothing here holds over a batch.
    """

    def __init__(self, x: np.ndarray, device: torch.device) -> None:
        self.x, self.device = x, device
        if np.issubdtype(x.dtype, np.floating):  # the same refusal as check_finite, a slice at a time
            for i in range(0, len(x), 4096):
                check_finite(torch.from_numpy(np.asarray(x[i:i + 4096])), torch.zeros(0, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: torch.Tensor | slice) -> torch.Tensor:
        if isinstance(idx, slice):
            return to_device_images(np.array(self.x[idx]), self.device)  # a copy: the memmap is read-only
        rows = idx.cpu().numpy()
        order = np.argsort(rows)
        batch = np.empty((len(rows), *self.x.shape[1:]), self.x.dtype)
        batch[order] = self.x[rows[order]]
        return to_device_images(torch.from_numpy(batch), self.device)


def batches(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor | HostBatches:
    """Where a training set lives: a memmap stays on the host, anything else goes whole to the device
    (a device tensor, so the fast path indexes it directly). Both give a device batch for `[idx]`."""
    return HostBatches(x, device) if isinstance(x, np.memmap) else to_device_images(x, device)


def eval_images(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor | np.memmap:
    """Images for predict_logits: a memmap stays on the host and is read batch by batch."""
    return x if isinstance(x, np.memmap) else to_device_images(x, device)


def scale(batch: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; floats are taken as already scaled."""
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()


def targets_tensor(y: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """int labels (N,) -> int64; one-hot or soft targets (N, K) -> float32 probabilities."""
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    return (t.long() if t.ndim == 1 else t.float()).to(device)


def check_finite(x: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse float images or soft labels holding NaN or infinity before they poison the weights."""
    for what, t in (("image", x), ("label", y)):
        if t.is_floating_point():
            bad = ~torch.isfinite(t.reshape(len(t), -1)).all(1)
            if bool(bad.any()):
                first = int(bad.nonzero()[0])
                raise ValueError(f"training {what}s hold NaN or infinite values ({int(bad.sum())} of {len(t):,}, "
                                 f"the first at index {first}); clean the data before training")
