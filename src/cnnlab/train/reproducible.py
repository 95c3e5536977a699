"""Reproducibility: every random number generator's state as plain tensors, and a deterministic mode.

Checkpoints store `rng_state()` so a resumed run draws the same dropout masks (torch), the same
augmentations (numpy, random) and the same CUDA randomness as the run it continues. Every value is a
tensor so a state can be saved with safetensors (no pickle) and gathered across distributed ranks.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch import nn

# Layers whose CUDA backward has no deterministic kernel (torch.use_deterministic_algorithms docs):
# the module type cnnlab builds for them -> the kernel PyTorch names in its error.
NONDETERMINISTIC_ON_CUDA: dict[type[nn.Module], str] = {
    nn.AdaptiveAvgPool2d: "GlobalAveragePooling2D (adaptive_avg_pool2d_backward_cuda)",
    nn.AdaptiveMaxPool2d: "adaptive max pooling (adaptive_max_pool2d_backward_cuda)",
}


def rng_state() -> dict[str, torch.Tensor]:
    """The process's torch, CUDA, numpy and `random` generator states, as CPU tensors."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy.keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy.extra": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy.gauss": torch.tensor([gauss], dtype=torch.float64),
        "python.state": torch.tensor(internal, dtype=torch.int64),
        # NaN stands for "no cached Gaussian" (None), which a tensor cannot hold
        "python.gauss": torch.tensor([float("nan") if gauss_next is None else gauss_next], dtype=torch.float64),
    }
    if kind != "MT19937" or version != 3:
        raise RuntimeError(f"unexpected generator kinds {kind!r} / random version {version}: cannot save them")
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = s
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what `rng_state` returned; CUDA states are restored only for devices that exist here."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    pos, has_gauss = (int(v) for v in state["numpy.extra"])
    np.random.set_state(("MT19937", state["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy.gauss"][0])))
    gauss = float(state["python.gauss"][0])
    random.setstate((3, tuple(int(v) for v in state["python.state"]), None if gauss != gauss else gauss))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"cuda.{i}" in state:
                torch.cuda.set_rng_state(state[f"cuda.{i}"].to(torch.uint8).cpu(), i)


def deterministic_mode(device: torch.device, module: nn.Module | None = None) -> None:
    """Make training repeat bit for bit (process-wide, like `torch.manual_seed`).

    On CPU cnnlab's ops are deterministic at a fixed thread count; this also turns on PyTorch's checks
    so that any op without a deterministic kernel raises instead of silently varying. On CUDA it also
    pins cuBLAS's workspace and cuDNN's algorithm choice, and refuses (before training) layers whose
    CUDA backward has no deterministic kernel.
    """
    if device.type == "cuda":
        blocked = sorted({why for m in (module.modules() if module is not None else ())
                          for kind, why in NONDETERMINISTIC_ON_CUDA.items() if isinstance(m, kind)})
        if blocked:
            raise ValueError(f"--deterministic on CUDA is impossible with {', '.join(blocked)}: PyTorch has no "
                             "deterministic CUDA kernel for its backward; train on --device cpu, or drop --deterministic")
        # cuBLAS reads this when it creates its handle; ":4096:8" is the setting NVIDIA documents as deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)
