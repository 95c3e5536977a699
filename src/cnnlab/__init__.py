"""cnnlab: convolutional neural networks for image collections, easy to train and to see inside."""
from cnnlab import callbacks, datasets, layers, models, optimizers, utils
from cnnlab.models import Sequential, load_model

__all__ = ["Sequential", "callbacks", "datasets", "layers", "load_model", "models", "optimizers", "utils"]
__version__ = "0.1.0"
