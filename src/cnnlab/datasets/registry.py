"""Built-in datasets: where their files are found, their checksums, and loading them as arrays."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.download import cache_dir
from cnnlab.datasets.folders.load import load_folder
from cnnlab.datasets.idx import IDXError, read_idx
from cnnlab.datasets.remote import REMOTE, is_downloaded, load_remote, remote_folder

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DatasetNotFound(FileNotFoundError):
    """A built-in dataset's files are not in any of the places cnnlab looks."""


@dataclass(frozen=True)
class IDXSource:
    """An MNIST-shaped dataset stored as the four IDX files, plain or gzip, in one folder."""
    name: str
    class_names: tuple[str, ...]
    sha256: dict[str, str]  # of the *uncompressed* bytes, since gzip bytes differ between copies
    folders: tuple[str, ...]  # where to look, in order, after an explicit folder and the cache
    how_to_get: str


BUNDLED = Path(__file__).resolve().parent / "_mnist"

SOURCES: dict[str, IDXSource] = {
    "mnist": IDXSource(
        name="mnist",
        class_names=tuple(str(d) for d in range(10)),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        folders=(str(BUNDLED),),
        how_to_get="it ships inside the cnnlab package; reinstall cnnlab if the files are missing",
    ),
    "fashion_mnist": IDXSource(
        name="fashion_mnist",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        folders=("/usr/share/datasets/fashion-mnist",),
        how_to_get=("install Debian's package (apt-get install dataset-fashion-mnist), or copy the four "
                    "Fashion-MNIST IDX files (.gz or plain) into {cache}, or pass data_dir=/--data-dir"),
    ),
}


def names() -> list[str]:
    """Every built-in dataset: the local ones, then those downloaded on first use."""
    return [*SOURCES, *REMOTE]


def candidate_folders(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    src = _source(name)
    found = [Path(data_dir).expanduser()] if data_dir else []
    found.append(cache_dir() / name)
    found.extend(Path(f) for f in src.folders)
    return found


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first folder holding all four files of `name`, or None."""
    for folder in candidate_folders(name, data_dir):
        if all(_file(folder, stem) for stem in IDX_FILES):
            return folder
    return None


def load(name: str, data_dir: str | os.PathLike | None = None, *, verify: bool = True,
         download: bool = True) -> Dataset:
    """Load a built-in dataset as uint8 (N, H, W, C) images and int64 labels."""
    if name in REMOTE:
        return Dataset(name, *load_remote(name, data_dir=data_dir, download=download),
                       source=str(remote_folder(name, data_dir=data_dir)))
    src = _source(name)
    folder = locate(name, data_dir)
    if folder is None:
        where = ", ".join(str(p) for p in candidate_folders(name, data_dir))
        hint = src.how_to_get.format(cache=cache_dir() / name)
        raise DatasetNotFound(f"dataset {name!r} not found (looked in {where}): {hint}")
    arrays = {stem: _read_checked(_file(folder, stem), src.sha256[stem] if verify else None) for stem in IDX_FILES}
    x_train, y_train, x_test, y_test = (arrays[s] for s in IDX_FILES)
    for images, labels, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise IDXError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match")
    return Dataset(name, x_train[..., None], y_train.astype(np.int64), x_test[..., None],
                   y_test.astype(np.int64), src.class_names, str(folder))


def _source(name: str) -> IDXSource:
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}, expected one of {', '.join(names())} or an image folder")
    return SOURCES[name]


def _file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_checked(path: Path, sha256: str | None) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IDXError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise IDXError(f"{path}: SHA-256 of the uncompressed data is {digest}, expected {sha256}; "
                           "the file is damaged or not the official release")
    stream = io.BytesIO(raw)
    stream.name = str(path)
    return read_idx(stream)


def load_any(name_or_folder: str, data_dir: str | os.PathLike | None = None, **folder_options: Any) -> Dataset:
    """A built-in dataset by name, or an image folder by path (`folder_options` go to load_folder)."""
    if name_or_folder in SOURCES or name_or_folder in REMOTE:
        return load(name_or_folder, data_dir)
    if Path(name_or_folder).is_dir():
        return load_folder(name_or_folder, **folder_options)
    raise ValueError(f"--data {name_or_folder!r} is neither a built-in dataset ({', '.join(names())}) nor a folder")


def describe_all(data_dir: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """One row per built-in dataset: name, whether it is here, where, and what it is."""
    rows = []
    for name, src in SOURCES.items():
        folder = locate(name, data_dir)
        rows.append({"name": name, "status": "available" if folder else "not found",
                     "where": str(folder) if folder else src.how_to_get.format(cache=cache_dir() / name),
                     "description": f"{len(src.class_names)} classes: {', '.join(src.class_names)}"})
    for name, spec in REMOTE.items():
        here = is_downloaded(name, data_dir=data_dir)
        rows.append({"name": name, "status": "downloaded" if here else "download",
                     "where": str(remote_folder(name, data_dir=data_dir)) if here
                     else f"fetched on first use ({spec.download_bytes / 1e6:,.0f} MB) into {remote_folder(name, data_dir=data_dir)}",
                     "description": spec.description})
    return rows
