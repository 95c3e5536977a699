"""Shared by the web tests: a tiny MNIST run trained once per test session, and test images as files."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.registry import load
from cnnlab.runs import run_folder
from cnnlab.spec import zoo
from cnnlab.train.config import TrainConfig

_trained: dict[str, Path] = {}


def mnist() -> Dataset:
    return load("mnist")


def tiny_run(root: Path) -> Path:
    """The seed CNN after 1 epoch on 3,000 MNIST images (about 90% test accuracy), trained once per session."""
    if "run" not in _trained:
        data = mnist()
        small = replace(data, x_train=data.x_train[:3000], y_train=data.y_train[:3000],
                        x_test=data.x_test[:2000], y_test=data.y_test[:2000])
        spec, _ = zoo.resolve("seed", small.input_shape, 10)
        config = TrainConfig(epochs=1, batch_size=16, device="cpu", seed=0)
        folder, _, evaluation = run_folder.train_run(small, spec, config, root / "seed-mnist-tiny", model_name="seed")
        assert evaluation.accuracy > 0.88, f"the tiny run reached only {evaluation.accuracy:.3f}"
        _trained["run"] = folder
    return _trained["run"]


def runs_dir_with_tiny_run(tmp: Path, trained: Path) -> Path:
    """A fresh runs folder holding a copy of the tiny run (tests that train add runs beside it)."""
    root = tmp / "runs"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trained, root / trained.name)
    return root


def png_bytes(image: np.ndarray) -> bytes:
    arr = np.asarray(image)
    buf = io.BytesIO()
    Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cnnlab_env() -> dict[str, str]:
    """The environment for a `python -m cnnlab` subprocess: this checkout's source, one torch thread."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def start_cnnlab_serve(args: list[str], port: int, cwd: Path | None = None) -> subprocess.Popen:
    """`cnnlab serve ARGS --port PORT` in a new process, its output captured."""
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", *args, "--port", str(port)], cwd=cwd,
                            env=cnnlab_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_json(url: str, proc: subprocess.Popen, seconds: float) -> Any:
    """The JSON at `url` once the server process answers; fails if it exits or stays silent for `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"{url} did not answer within {seconds:g} s"
            time.sleep(0.3)


@contextmanager
def uvicorn_in_thread(config: Any) -> Iterator[int]:
    """A uvicorn server with this config on a free loopback port in a thread; yields the port."""
    import uvicorn
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        srv.should_exit = True
        thread.join(60)
        sock.close()
