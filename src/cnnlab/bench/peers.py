"""Peer baselines for the speed benchmark: the seed CNN trained the way PyTorch and Keras users write it.

`bench/speed.py` runs cnnlab's own trainer and these functions in one process, on the same arrays,
and prints ratios. For the ratios to mean something the peers must be what a reader of the official
tutorials would write, not tuned versions: host-side tensors fed through a `DataLoader`, plain fp32,
Adam(1e-3), batch 64, and a full test-set evaluation after every epoch. Each function stops at the
first epoch whose test accuracy reaches `target`, so its time-to-target counts whole epochs.

The seed CNN (Keras notation, input 28x28x1, 93,322 parameters):
    Conv2D(32, 3, relu) -> MaxPooling2D(2) -> Conv2D(64, 3, relu) -> MaxPooling2D(2)
    -> Conv2D(64, 3, relu) -> Flatten -> Dense(64, relu) -> Dense(10, softmax)

Inputs are uint8 images (N, 28, 28) or (N, 28, 28, 1) and integer labels (N,), as numpy arrays.
Only training and the per-epoch evaluation are timed; converting the arrays is not.

Both functions return the same dict shape:
    {"name", "reached", "time_to_target_s", "epochs", "test_acc", "epoch_times_s",
     "train_seconds", "params", "device", "peak_rss_mb", "cuda_peak_mb"}
and `keras_reference` adds "backend" (what `keras.backend.backend()` says).

Memory figures are process-wide high-water marks. Each reference resets them on entry where the
OS allows it (`reset_peak_rss`), so on Linux `peak_rss_mb` is the peak during that run, which still
includes whatever the process already held (the arrays, earlier models, other frameworks).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

SEED_CNN_PARAMS = 93_322


# ---------------------------------------------------------------- memory


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark to its current RSS; False where the OS offers no way.

    Linux >= 4.0 resets VmHWM when "5" is written to /proc/self/clear_refs. Without a reset the mark
    would cover everything the process ever did, so in a one-process benchmark the second peer
    would inherit the first one's peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MiB, or None where it cannot be read.

    Order matters: /proc VmHWM first because it honours `reset_peak_rss`; then getrusage, whose
    ru_maxrss is KiB on Linux but bytes on macOS and is never reset; psutil last, because on Linux
    and macOS it only knows the current RSS (on Windows it has the peak working set).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # "VmHWM:  123456 kB"
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        pass
    else:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024
    try:
        import psutil
    except ImportError:
        return None
    info = psutil.Process().memory_info()
    return getattr(info, "peak_wset", info.rss) / 2**20


def cuda_peak_mb(device: str | torch.device) -> float | None:
    """Peak memory torch allocated on a CUDA device since the last reset, in MiB; None off CUDA.

    This is torch's caching-allocator count, so it misses the CUDA context itself (~300-500 MiB)
    and memory taken by other libraries in the process (e.g. TensorFlow's own allocator).
    """
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


# ---------------------------------------------------------------- inputs


def _check_images(x: np.ndarray, name: str) -> np.ndarray:
    """Return `x` as uint8 (N, 28, 28), raising on anything else so a wrong array fails early."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"{name} must have shape (N, 28, 28) or (N, 28, 28, 1), got {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 pixels in 0..255, got dtype {x.dtype}")
    return x


def _check_labels(y: np.ndarray, n: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the images, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{name} must hold class ids 0..9, got range {y.min()}..{y.max()}")
    return y.astype(np.int64)


def _check_run_args(target: float, max_epochs: int, batch_size: int) -> None:
    # target > 1 is allowed on purpose: it means "never stop early", which tests use.
    if not target > 0:
        raise ValueError(f"target must be a test accuracy > 0, got {target!r}")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")


def _result(name: str, target: float, test_acc: list[float], epoch_times: list[float]) -> dict[str, Any]:
    """The fields both peers share; time-to-target is the running total at the first good epoch."""
    reached_at = next((i for i, a in enumerate(test_acc) if a >= target), None)
    return {
        "name": name,
        "reached": reached_at is not None,
        "time_to_target_s": None if reached_at is None else sum(epoch_times[: reached_at + 1]),
        "epochs": len(test_acc),
        "test_acc": test_acc,
        "epoch_times_s": epoch_times,
        "train_seconds": sum(epoch_times),
    }


# ---------------------------------------------------------------- PyTorch


def seed_cnn_torch() -> nn.Sequential:
    """The seed CNN as a PyTorch tutorial writes it; logits out, softmax lives in the loss."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 13, 13)
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 5, 5)
        nn.Conv2d(64, 64, 3), nn.ReLU(),  # (B, 64, 3, 3)
        nn.Flatten(),  # (B, 576)
        nn.Linear(576, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously; without this the clock would stop before the work does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pytorch_reference(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    target: float = 0.99,
    max_epochs: int = 8,
    batch_size: int = 64,
    lr: float = 1e-3,
    device: str = "cpu",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the seed CNN like the official PyTorch MNIST example and time it to `target` accuracy.

    Host tensors normalised once (x/255), `DataLoader(shuffle=True)` moving each batch to `device`,
    Adam, CrossEntropyLoss, fp32, evaluation on the whole test set after every epoch. The thread
    count is left to the caller (`torch.set_num_threads`). Returns the dict described in the module
    docstring, with "name": "pytorch".
    """
    _check_run_args(target, max_epochs, batch_size)
    x_train = _check_images(x_train, "x_train")
    x_test = _check_images(x_test, "x_test")
    y_train = _check_labels(y_train, len(x_train), "y_train")
    y_test = _check_labels(y_test, len(x_test), "y_test")
    dev = torch.device(device)

    torch.manual_seed(seed)
    # (N, 1, 28, 28) float32 in [0, 1]; the tutorials' ToTensor() gives the same, once per sample.
    # torch.tensor copies, which also accepts read-only arrays (np.frombuffer of an IDX file).
    def to_tensor(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32).div_(255).unsqueeze(1)

    train_set = TensorDataset(to_tensor(x_train), torch.from_numpy(y_train))
    test_set = TensorDataset(to_tensor(x_test), torch.from_numpy(y_test))
    # pin_memory on CUDA is what the official example passes; a seeded generator makes runs repeat.
    pin = dev.type == "cuda"
    train_loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=True, pin_memory=pin,
        generator=torch.Generator().manual_seed(seed),
    )
    test_loader = DataLoader(test_set, batch_size=1000, pin_memory=pin)

    model = seed_cnn_torch().to(dev)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    reset_peak_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    test_acc: list[float] = []
    epoch_times: list[float] = []
    for epoch in range(1, max_epochs + 1):
        _sync(dev)
        t0 = time.perf_counter()
        model.train()
        for xb, yb in train_loader:
            xb, yb = xb.to(dev), yb.to(dev)
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()

        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in test_loader:
                xb, yb = xb.to(dev), yb.to(dev)
                correct += (model(xb).argmax(1) == yb).sum().item()  # .item() syncs too
        _sync(dev)
        epoch_times.append(time.perf_counter() - t0)
        test_acc.append(correct / len(test_set))
        log(f"pytorch epoch {epoch}: test acc {test_acc[-1]:.4f}, {epoch_times[-1]:.1f} s, "
            f"last batch loss {loss.item():.4f}")
        if test_acc[-1] >= target:
            break

    out = _result("pytorch", target, test_acc, epoch_times)
    out.update(params=params, device=str(dev), peak_rss_mb=peak_rss_mb(), cuda_peak_mb=cuda_peak_mb(dev))
    return out


# ---------------------------------------------------------------- Keras


def keras_reference(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    target: float = 0.99,
    max_epochs: int = 8,
    batch_size: int = 64,
    lr: float = 1e-3,
    device: str = "cpu",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Train the seed CNN the Keras way and time it to `target`; None when keras cannot be imported.

    None (rather than an exception) lets `speed.py` print "keras: not installed" and go on with the
    other peers; the import error's text goes to `log` so a broken install is not silent. The
    backend is whatever keras picks at its first import in this process (env KERAS_BACKEND,
    default tensorflow), so set KERAS_BACKEND before anything imports keras; the dict reports it.

    The loop is `fit(epochs=1)` then `evaluate` per epoch, so the first epoch includes keras's
    graph tracing, as it does for a user. `device` is "cpu" or "cuda"/"cuda:N" and is passed to
    `keras.device` (spelled "gpu:N" there) so keras runs where the other peers run.
    """
    _check_run_args(target, max_epochs, batch_size)
    x_train = _check_images(x_train, "x_train")
    x_test = _check_images(x_test, "x_test")
    y_train = _check_labels(y_train, len(x_train), "y_train")
    y_test = _check_labels(y_test, len(x_test), "y_test")
    try:
        import keras
    except ImportError as e:
        log(f"keras: not importable ({e}); skipping the keras peer")
        return None

    dev = torch.device(device)
    # Plain "cpu", not "cpu:0": under the torch backend (keras 3.15, torch 2.13) "cpu:0" makes
    # keras copy each new Parameter with .to("cpu:0"), which returns a non-leaf tensor, and fit()
    # then fails with "No gradients provided for any variable".
    keras_device = f"gpu:{dev.index or 0}" if dev.type == "cuda" else "cpu"
    keras.utils.set_random_seed(seed)
    # (N, 28, 28, 1) float32 in [0, 1]: the lecture's `x / 255.0` with a channel axis.
    xtr = (x_train.astype(np.float32) / 255.0)[..., None]
    xte = (x_test.astype(np.float32) / 255.0)[..., None]

    with keras.device(keras_device):
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        reset_peak_rss()
        if dev.type == "cuda" and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats(dev)

        test_acc: list[float] = []
        epoch_times: list[float] = []
        for epoch in range(1, max_epochs + 1):
            t0 = time.perf_counter()
            hist = model.fit(xtr, y_train, epochs=1, batch_size=batch_size, verbose=0)
            # Keras's default evaluate batch (32), as lecture code calls it. The scores come back as
            # Python floats, so the device work is finished when the clock is read.
            scores = model.evaluate(xte, y_test, verbose=0, return_dict=True)
            epoch_times.append(time.perf_counter() - t0)
            test_acc.append(float(scores["accuracy"]))
            log(f"keras[{keras.backend.backend()}] epoch {epoch}: test acc {test_acc[-1]:.4f}, "
                f"{epoch_times[-1]:.1f} s, train loss {hist.history['loss'][-1]:.4f}")
            if test_acc[-1] >= target:
                break

    out = _result("keras", target, test_acc, epoch_times)
    # cuda_peak_mb only sees torch's allocator, i.e. keras's torch backend.
    out.update(
        backend=keras.backend.backend(), keras_version=keras.__version__, params=model.count_params(),
        device=keras_device, peak_rss_mb=peak_rss_mb(), cuda_peak_mb=cuda_peak_mb(dev),
    )
    return out
