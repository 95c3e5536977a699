"""Memory budgets: estimate what a spec needs (weights, activations, optimiser state) and refuse before allocating.

The estimate is deliberately simple and generous: float32 everywhere; activations are every layer's
output for the whole batch, doubled when training (saved for the backward pass, plus their gradients);
training adds a gradient and two Adam moments per parameter. The limit is a fraction of the memory
available now (psutil, else /proc/meminfo MemAvailable; less under an address-space limit, `ulimit -v`),
or `CNNLAB_MEMORY_LIMIT` bytes when set.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from cnnlab.spec.graph import AnySpec, GraphSpec
from cnnlab.spec.summary import summary_dict

BYTES = 4  # float32
FRACTION = 0.8  # of available memory: leave room for the data, Python and the rest of the system
ENV = "CNNLAB_MEMORY_LIMIT"


class MemoryBudgetError(ValueError):
    """A model, batch size or input would need more memory than is available."""


def parameter_count(spec: AnySpec) -> int:
    return summary_dict(spec)["total_params"]


def _tensor_shapes(spec: AnySpec) -> list[tuple[int, ...]]:
    """The input's and every layer call's output shape (without the batch axis)."""
    if isinstance(spec, GraphSpec):
        return list(spec.shapes.values())  # inputs and every node's outputs
    return [spec.input_shape, *spec.shapes()]


def estimate_bytes(spec: AnySpec, batch_size: int, training: bool) -> int:
    """Bytes a forward (and, training, backward) pass of `batch_size` images needs, float32."""
    activations = sum(math.prod(s) for s in _tensor_shapes(spec)) * batch_size * BYTES
    params = parameter_count(spec) * BYTES
    if training:  # saved activations + their gradients; weights + gradient + two optimiser moments
        return 2 * activations + 4 * params
    return activations + params


def available_bytes() -> int:
    """Memory that can be used now: psutil's `available`, else /proc/meminfo MemAvailable."""
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 8 << 30  # unknown system: assume a modest machine


def address_space_left() -> int | None:
    """Bytes this process may still map under its address-space limit (`ulimit -v`, RLIMIT_AS); None: no limit."""
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return soft


def memory_limit() -> int:
    text = os.environ.get(ENV)
    if text:
        try:
            value = int(float(text))
        except ValueError:
            raise ValueError(f"{ENV} must be a number of bytes, got {text!r}") from None
        if value <= 0:
            raise ValueError(f"{ENV} must be a positive number of bytes, got {text!r}")
        return value
    left = address_space_left()  # under `ulimit -v` an allocation fails long before the RAM runs out
    return int(min(available_bytes(), left if left is not None else available_bytes()) * FRACTION)


def check_memory(spec: AnySpec, batch_size: int, training: bool, what: str) -> int:
    """The estimated need in bytes; MemoryBudgetError (one line: need and limit) when it exceeds the limit."""
    need, limit = estimate_bytes(spec, batch_size, training), memory_limit()
    if need > limit:
        raise MemoryBudgetError(f"{what} needs about {_gb(need)} of memory for batch {batch_size} "
                                f"({'training' if training else 'inference'}), more than the limit of {_gb(limit)} "
                                f"({'set by ' + ENV if os.environ.get(ENV) else f'{FRACTION:.0%} of available memory'})"
                                f"; use a smaller batch size, input or model")
    return need


def _gb(n: int) -> str:
    return f"{n / 2**30:,.2f} GB" if n >= 2**27 else f"{n / 2**20:,.1f} MB"
