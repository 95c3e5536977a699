"""Datasets: the bundled MNIST, Fashion-MNIST, and the IDX file format they use."""
from cnnlab.datasets import fashion_mnist, mnist
from cnnlab.datasets.registry import Dataset, DatasetNotFound, load

__all__ = ["Dataset", "DatasetNotFound", "fashion_mnist", "load", "mnist"]
