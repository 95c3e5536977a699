"""Built-in datasets: the bundled MNIST as Keras returns it, checksums, and Fashion-MNIST lookup."""
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnlab.datasets import DatasetNotFound, fashion_mnist, mnist, registry
from cnnlab.datasets.idx import IDXError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_mnist_load_data_matches_keras():
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert y_train[59000] == 6
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x_train.max() == 255 and x_train.min() == 0


def test_dataset_object_is_channels_last():
    ds = registry.load("mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.y_train.dtype == np.int64
    assert ds.class_names == tuple("0123456789") and ds.input_shape == (28, 28, 1)
    assert ds.subset(100).x_train.shape == (100, 28, 28, 1)


def test_checksum_mismatch_is_reported(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(registry.BUNDLED, folder)
    raw = bytearray(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(IDXError, match="SHA-256"):
        registry.load("mnist", folder)


def test_plain_uncompressed_copies_are_accepted(tmp_path):
    for src in registry.BUNDLED.glob("*.gz"):
        (tmp_path / src.stem).write_bytes(gzip.decompress(src.read_bytes()))
    assert registry.load("mnist", tmp_path).x_test.shape == (10000, 28, 28, 1)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    if registry.locate("fashion_mnist") is not None:
        pytest.skip("Fashion-MNIST is installed system-wide on this machine")
    with pytest.raises(DatasetNotFound, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_data()


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="no shared Fashion-MNIST copy")
def test_fashion_mnist_from_a_folder():
    (x, y), (xt, yt) = fashion_mnist.load_data(SHARED / "fashion-mnist")
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert np.bincount(yt).tolist() == [1000] * 10


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset 'mnistt'"):
        registry.load("mnistt")
