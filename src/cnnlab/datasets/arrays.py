"""Turn what users pass (arrays of many shapes and dtypes) into model input, with clear shape errors."""
from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def as_images(x: ArrayLike, input_shape: tuple[int, ...] | None = None, *, what: str = "x") -> np.ndarray | torch.Tensor:
    """Images as (N, H, W, C): accepts (N, H, W) for one-channel models, uint8 (0-255) or float (0-1).

    With `input_shape` (H, W, C) the result must match it, else a ValueError says what was expected.
    """
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        x = np.asarray(x)
    if isinstance(x, np.ndarray) and x.dtype == np.object_:
        raise ValueError(f"{what} must be a numeric array of images, got an object array")
    if x.ndim == 3 and (input_shape is None or input_shape[-1] == 1):
        x = x[..., None]
    expected = f"(N, {input_shape[0]}, {input_shape[1]}, {input_shape[2]})" if input_shape else "(N, H, W, C)"
    if input_shape and input_shape[-1] == 1:
        expected += f" or (N, {input_shape[0]}, {input_shape[1]})"
    if x.ndim != 4 or (input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape)):
        raise ValueError(f"{what} has shape {tuple(x.shape)}, expected images of shape {expected}")
    if x.dtype not in (np.uint8, torch.uint8) and not (x.dtype.is_floating_point if isinstance(x, torch.Tensor)
                                                       else np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{what} has dtype {x.dtype}, expected uint8 pixels (0-255) or floats scaled to [0, 1]")
    if x.dtype not in (np.uint8, torch.uint8) and len(x) and float(x.max()) > 1.0 + 1e-6:
        # 0-255 floats fed to a network that expects [0, 1] train and predict garbage, silently
        raise ValueError(f"{what} holds floats up to {float(x.max()):g}: scale them to [0, 1] (x / 255), "
                         "or pass the uint8 pixels as they are")
    return x


def as_labels(y: ArrayLike, n: int, *, what: str = "y") -> np.ndarray:
    """Integer labels (N,) or one-hot/probability rows (N, K); checks the count matches the images."""
    y = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2) or len(y) != n:
        raise ValueError(f"{what} has shape {y.shape}, expected ({n},) integer labels or ({n}, classes) one-hot rows")
    if y.ndim == 1 and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{what} holds non-integer labels; use integer class indices or one-hot rows")
        y = y.astype(np.int64)
    return y
