"""Datasets fetched on first use: where each file lives, how to check it, and how to read it.

``REMOTE`` maps a dataset name to a frozen ``RemoteDataset``; ``load_remote`` fetches any
missing file into ``<cache>/<folder>/`` and returns uint8 (N, H, W, C) images, int64 labels
and the class names. Archives are read in place with numpy; nothing is unpickled.

Where each checksum comes from (no value here was computed by cnnlab itself):
- CIFAR-10: MD5 as published on the dataset page (cs.toronto.edu/~kriz/cifar.html);
  size and SHA-256 as recorded by TensorFlow Datasets (url_checksums/cifar10.txt).
- KMNIST: size and SHA-256 from TensorFlow Datasets (url_checksums/kmnist.txt), the same
  SHA-256 values torchvision's prototype datasets use; the project publishes no checksums.
- EMNIST: size and SHA-256 from TensorFlow Datasets (url_checksums/emnist.txt), the same
  SHA-256 other projects pin for this URL; NIST publishes no checksum.
"""

from __future__ import annotations

import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

import numpy as np

from cnnlab.datasets.download import cache_dir, fetch
from cnnlab.datasets.idx import read_idx

__all__ = ["REMOTE", "RemoteDataset", "RemoteFile", "is_downloaded", "load_remote", "remote_folder"]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


@dataclass(frozen=True)
class RemoteFile:
    """One download, saved as ``name`` in the dataset's folder."""

    name: str
    url: str
    size: int | None  # bytes; also how a copy put in the folder by hand is recognised
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class RemoteDataset:
    """A downloadable dataset: its files, the function that reads them, and what to expect."""

    description: str
    homepage: str
    licence: str
    folder: str  # cache subfolder; datasets cut from one archive share it, so it downloads once
    files: tuple[RemoteFile, ...]
    loader: Callable[[dict[str, Path]], Arrays]  # file name -> local path, to arrays
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C)
    counts: tuple[int, int]  # (train, test) images

    @property
    def download_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


def _cifar10_records(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Split a CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    if len(blob) % 3073:
        raise ValueError(f"{where}: {len(blob)} bytes is not a whole number of 3073-byte CIFAR-10 records")
    records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, 3073)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    return np.ascontiguousarray(images), records[:, 0].astype(np.int64)


def _load_cifar10(paths: dict[str, Path]) -> Arrays:
    archive = paths["cifar-10-binary.tar.gz"]
    wanted = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    blobs: dict[str, bytes] = {}
    with tarfile.open(archive, "r:gz") as tar:
        # One pass in archive order: seeking backwards in a .tar.gz means decompressing again.
        for member in tar:
            base = PurePosixPath(member.name).name
            if member.isfile() and base in wanted:
                blobs[base] = tar.extractfile(member).read()
    missing = [name for name in wanted if name not in blobs]
    if missing:
        raise ValueError(f"{archive}: no {', '.join(missing)} inside; is it the CIFAR-10 *binary* version?")
    train = [_cifar10_records(blobs[name], f"{archive}:{name}") for name in wanted[:5]]
    x_test, y_test = _cifar10_records(blobs["test_batch.bin"], f"{archive}:test_batch.bin")
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test


def _load_kmnist(paths: dict[str, Path]) -> Arrays:
    x_train, x_test = (read_idx(paths[f"{s}-images-idx3-ubyte.gz"])[..., None] for s in ("train", "t10k"))
    y_train, y_test = (read_idx(paths[f"{s}-labels-idx1-ubyte.gz"]).astype(np.int64) for s in ("train", "t10k"))
    return x_train, y_train, x_test, y_test


def _load_emnist_digits(paths: dict[str, Path]) -> Arrays:
    archive = paths["gzip.zip"]
    arrays = []
    with zipfile.ZipFile(archive) as zf:
        for split in ("train", "test"):
            for kind, dims in (("images", 3), ("labels", 1)):
                member = f"gzip/emnist-digits-{split}-{kind}-idx{dims}-ubyte.gz"
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    raise ValueError(f"{archive}: no {member} inside; is it EMNIST's gzip.zip?") from None
                with zf.open(info) as f:
                    arrays.append(read_idx(f))  # read_idx sees the gzip header itself
    x_train, y_train, x_test, y_test = arrays
    # EMNIST stores each image transposed relative to MNIST; swap H and W so digits stand upright.
    x_train, x_test = (np.ascontiguousarray(x.transpose(0, 2, 1))[..., None] for x in (x_train, x_test))
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


_KMNIST_URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"  # as listed in github.com/rois-codh/kmnist

REMOTE: dict[str, RemoteDataset] = {
    "cifar10": RemoteDataset(
        description="CIFAR-10: 50,000 + 10,000 colour photos, 32x32, 10 classes",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        licence="no licence stated; cite Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
        folder="cifar10",
        files=(
            RemoteFile(
                "cifar-10-binary.tar.gz",
                "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                size=170_052_171,
                sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                md5="c32a1d4ab5d03f1284b67883e8d87530",
            ),
        ),
        loader=_load_cifar10,
        class_names=("airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck"),
        image_shape=(32, 32, 3),
        counts=(50_000, 10_000),
    ),
    "kmnist": RemoteDataset(
        description="Kuzushiji-MNIST: 60,000 + 10,000 cursive Japanese characters, 28x28 grey, 10 classes",
        homepage="https://github.com/rois-codh/kmnist",
        licence='CC BY-SA 4.0: "KMNIST Dataset" (created by CODH), adapted from "Kuzushiji Dataset" '
                "(created by NIJL and others), doi:10.20676/00000341",
        folder="kmnist",
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", _KMNIST_URL + "train-images-idx3-ubyte.gz", size=18_165_135,
                       sha256="51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
            RemoteFile("train-labels-idx1-ubyte.gz", _KMNIST_URL + "train-labels-idx1-ubyte.gz", size=29_497,
                       sha256="e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
            RemoteFile("t10k-images-idx3-ubyte.gz", _KMNIST_URL + "t10k-images-idx3-ubyte.gz", size=3_041_136,
                       sha256="edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", _KMNIST_URL + "t10k-labels-idx1-ubyte.gz", size=5_120,
                       sha256="20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
        ),
        loader=_load_kmnist,
        # Romanised name of the hiragana each class stands for (the first of each kana column).
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        image_shape=(28, 28, 1),
        counts=(60_000, 10_000),
    ),
    "emnist-digits": RemoteDataset(
        description="EMNIST Digits: 240,000 + 40,000 handwritten digits, 28x28 grey (a 536 MiB archive)",
        homepage="https://www.nist.gov/itl/products-and-services/emnist-dataset",
        licence="terms on the NIST page; cite Cohen et al., EMNIST: an extension of MNIST to handwritten letters, 2017",
        folder="emnist",  # the archive holds every EMNIST split; later splits can share it
        files=(
            # The old www.itl.nist.gov/iaui/vip/cs_links/ address now serves a small HTML page.
            RemoteFile("gzip.zip", "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip", size=561_753_746,
                       sha256="fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e"),
        ),
        loader=_load_emnist_digits,
        class_names=tuple(str(d) for d in range(10)),
        image_shape=(28, 28, 1),
        counts=(240_000, 40_000),
    ),
}


def _dataset(name: str, sources: Mapping[str, RemoteDataset]) -> RemoteDataset:
    if name not in sources:
        raise ValueError(f"unknown downloadable dataset {name!r}, expected one of {', '.join(sources)}")
    return sources[name]


def remote_folder(name: str, *, data_dir: str | Path | None = None,
                  sources: Mapping[str, RemoteDataset] = REMOTE) -> Path:
    """The folder holding ``name``'s files: ``data_dir`` itself when given, else its cache folder."""
    spec = _dataset(name, sources)
    return Path(data_dir).expanduser() if data_dir is not None else cache_dir() / spec.folder


def _present(path: Path, file: RemoteFile) -> bool:
    """A file counts as present when it exists with the published size.

    Checksums are verified when cnnlab downloads a file; a copy put there by hand is trusted
    on its size, since re-hashing 500 MB on every load would cost seconds each time.
    """
    if not path.is_file():
        return False
    actual = path.stat().st_size
    if file.size is not None and actual != file.size:
        raise ValueError(f"{path} has {actual} bytes, expected {file.size}; delete it to download it again")
    return True


def is_downloaded(name: str, *, data_dir: str | Path | None = None,
                  sources: Mapping[str, RemoteDataset] = REMOTE) -> bool:
    """True when every file of ``name`` is already in its folder (no network needed to load it)."""
    folder = remote_folder(name, data_dir=data_dir, sources=sources)
    return all((folder / f.name).is_file() for f in _dataset(name, sources).files)


def _check(name: str, spec: RemoteDataset, arrays: Arrays, folder: Path) -> None:
    """The loaded arrays must match the published counts, image shape and class range."""
    x_train, y_train, x_test, y_test = arrays
    for split, x, y, count in (("train", x_train, y_train, spec.counts[0]), ("test", x_test, y_test, spec.counts[1])):
        expected = (count, *spec.image_shape)
        if x.dtype != np.uint8 or x.shape != expected or y.shape != (count,):
            raise ValueError(
                f"{name}: expected {split} images {expected} uint8 and labels ({count},), got "
                f"{x.shape} {x.dtype} and {y.shape}; the files in {folder} may be damaged (delete them to re-download)"
            )
        top = len(spec.class_names) - 1
        if y.size and not (0 <= y.min() and y.max() <= top):
            raise ValueError(f"{name}: {split} labels span {y.min()}..{y.max()}, expected 0..{top}")


def load_remote(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
    sources: Mapping[str, RemoteDataset] = REMOTE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Load a downloadable dataset as (x_train, y_train, x_test, y_test, class_names).

    Images are uint8 (N, H, W, C), labels int64. Missing files are fetched into
    ``remote_folder(name)`` unless ``download`` is False; ``data_dir`` names a folder that
    already holds the files. ``sources`` swaps the registry (mirrors, tests).
    """
    spec = _dataset(name, sources)
    folder = remote_folder(name, data_dir=data_dir, sources=sources)
    paths: dict[str, Path] = {}
    for file in spec.files:
        path = folder / file.name
        if not _present(path, file):
            if not download:
                raise FileNotFoundError(
                    f"{name}: {path} is missing; allow downloading, or put a copy of {file.url} there"
                )
            fetch(file.url, path, sha256=file.sha256, md5=file.md5, size=file.size, progress=progress)
        paths[file.name] = path
    arrays = spec.loader(paths)
    _check(name, spec, arrays, folder)
    return (*arrays, spec.class_names)
