"""Training: the `fit` loop, its config and recipes, data on the device, augmentation, progress, checkpoints, DDP."""
