"""cnnlab: convolutional neural networks for image collections, easy to train and to see inside.

`import cnnlab as keras` gives Keras's names: keras.Input, keras.Model, keras.Sequential, keras.layers,
keras.models, keras.backend.clear_session.
"""
from cnnlab import backend, datasets, layers, models, optimizers, utils
from cnnlab.functional import Model
from cnnlab.models import Sequential, load_model
from cnnlab.symbolic import Input

# Keras's other namespaces (callbacks, applications, ...) are imported here as they are added.

__all__ = ["Input", "Model", "Sequential", "backend", "datasets", "layers", "load_model", "models", "optimizers",
           "utils"]
__version__ = "0.1.0"
