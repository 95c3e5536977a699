"""The run and data folders the server was started with; requests name runs and datasets, never paths."""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.registry import describe_all, load_any
from cnnlab.runs import model_file, run_folder
from cnnlab.runs.pretrained import describe_pretrained, is_pretrained_name

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
USABLE = ("available", "downloaded")  # describe_all statuses that need no download


class NotFound(LookupError):
    """A run or dataset name that is not among the configured ones."""


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


class RunStore:
    """Run folders under `root`, plus the one the server was started with wherever it is (or `imagenet`)."""

    def __init__(self, root: str | Path, extra: str | Path | None = None):
        self.root = Path(root)
        self.extra = Path(extra) if extra is not None else None

    def list(self) -> list[dict[str, Any]]:
        rows = run_folder.list_runs(self.root)
        if self.extra is not None and not any(r["name"] == self.extra.name for r in rows):
            rows.insert(0, describe_pretrained(str(self.extra)) if is_pretrained_name(self.extra) else
                        run_folder.describe_run(self.extra) if self.extra.is_dir() else {"name": self.extra.name})
        return rows

    def path(self, name: str) -> Path:
        """The run folder (or model file) called `name`; anything else is NotFound."""
        if self.extra is not None and name == self.extra.name:
            return self.extra
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise NotFound(f"{name!r} is not a run name (letters, digits, '.', '-', '_')")
        path = self.root / name
        if not _inside(path, self.root) or not (path / model_file.MODEL_FILE).is_file():
            raise NotFound(f"no run {name!r} in {self.root}")
        return path

    def new_folder(self, data: str, model: str) -> Path:
        """A fresh run folder path: runs/<model>-<data>-<time>, with -2, -3 ... if that second is taken."""
        base = run_folder.default_run_dir(data, model, self.root)
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return path


class DataStore:
    """Built-in datasets that are on this machine and the image folders given at start; a few kept loaded."""

    def __init__(self, folders: list[str | Path] | None = None, keep: int = 2):
        self.folders: dict[str, Path] = {}
        for folder in folders or []:
            folder = Path(folder)
            if not folder.is_dir():
                raise FileNotFoundError(f"data folder {str(folder)!r} not found")
            name = folder.resolve().name
            self.folders[name if name not in self.folders else f"{name}-{len(self.folders) + 1}"] = folder
        self._cache: OrderedDict[tuple[str, str | None], Dataset] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def options(self) -> list[dict[str, str]]:
        rows = [{"name": r["name"], "kind": "built-in", "description": r["description"]}
                for r in describe_all() if r["status"] in USABLE]
        return rows + [{"name": name, "kind": "folder", "description": f"image folder {path}"}
                       for name, path in self.folders.items()]

    def check(self, name: str) -> None:
        """NotFound unless `options` offers a dataset called `name`."""
        if name not in self.folders and name not in {row["name"] for row in self.options()}:
            known = ", ".join(row["name"] for row in self.options())
            raise NotFound(f"unknown dataset {name!r}; this server offers {known}")

    def load(self, name: str) -> Dataset:
        """A dataset offered by `options`, by name."""
        self.check(name)
        if name in self.folders:
            return self._load(str(self.folders[name]), None)
        return self._load(name, None)

    def for_run(self, run: Path, preprocessing: dict[str, Any]) -> Dataset:
        """The dataset a run was trained on, as its config.json records it (the run folder is trusted)."""
        name, data_dir, options = run_folder.data_of_run(run, preprocessing=preprocessing)
        return self._load(name, data_dir, options)

    def _load(self, name: str, data_dir: str | None, options: dict[str, Any] | None = None) -> Dataset:
        options = options or {}
        key = (name, data_dir, tuple(sorted(options.items())))
        with self._lock:  # one load at a time: two requests for MNIST share one copy
            if key not in self._cache:
                self._cache[key] = load_any(name, data_dir, **options)
                while len(self._cache) > self._keep:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return self._cache[key]
