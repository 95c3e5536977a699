"""cnnlab: convolutional neural networks for image collections, easy to train and to see inside."""
