"""cnnlab: convolutional neural networks for image collections, easy to train and to see inside.

`import cnnlab as keras` gives Keras's names: keras.Input, keras.Model, keras.Sequential, keras.layers,
keras.models, keras.callbacks, keras.applications, keras.metrics, keras.losses, keras.backend.clear_session.
"""
from cnnlab import applications, backend, callbacks, datasets, layers, losses, metrics, models, optimizers, utils
from cnnlab.functional import Model
from cnnlab.models import Sequential, load_model
from cnnlab.symbolic import Input

__all__ = ["Input", "Model", "Sequential", "applications", "backend", "callbacks", "datasets", "layers", "load_model",
           "losses", "metrics", "models", "optimizers", "utils"]
__version__ = "0.1.0"
