"""Datasets: the bundled MNIST, Fashion-MNIST, the IDX file format they use, and your own image folders."""
from cnnlab.datasets import fashion_mnist, mnist
from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.folders.load import load_folder
from cnnlab.datasets.registry import DatasetNotFound, load

__all__ = ["Dataset", "DatasetNotFound", "fashion_mnist", "load", "load_folder", "mnist"]
