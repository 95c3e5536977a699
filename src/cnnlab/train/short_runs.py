"""Short runs that must not produce broken models: BatchNorm statistics recomputed when they have not
converged, and one line that says so when a model scores near chance on its test set but well in training.

BatchNorm's running mean and variance start at 0 and 1 and move towards the data's by `momentum` (torch's:
Keras's 0.99 is torch's 0.01) each training step, so after n steps the start still weighs (1 - momentum)**n:
0.85 after 16 steps. A model trained for a few steps normalises with variance ~1 where its activations have
0.0035 (issue 21: zoo `best`, 2,000 MNIST images, one epoch: 0.098 test accuracy at 0.976 training accuracy).
The start weighs under 5% after 3 / momentum steps; before that, the statistics are recomputed from training
images as plain averages over batches (torch's momentum=None), without dropout or augmentation, at the end
of training.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnlab.train.device_data import scale

SETTLED_STEPS = 3.0  # steps x momentum: the initial statistics then weigh (1 - momentum)**(3 / momentum) < 5%
SAMPLE_IMAGES = 4096  # training images the statistics are recomputed from: a few seconds on a CPU at most
SAMPLE_BATCH = 256  # images a forward pass; a batch's variance is computed within it, as in training


def _unsettled_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers training updates (a frozen backbone or layer stays in inference mode under
    module.train(), so its pretrained statistics are kept) that have seen too few steps."""
    was_training = module.training
    module.train()
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
             and m.track_running_stats and m.num_batches_tracked is not None and not getattr(m, "frozen", False)]
    module.train(was_training)
    return [m for m in norms if m.momentum is not None and float(m.num_batches_tracked) * m.momentum < SETTLED_STEPS]


@torch.no_grad()
def settle_batchnorm(module: nn.Module, xs: Any, seed: int | None = 0) -> int:
    """Recompute the running statistics of BatchNorm layers that have seen too few training steps to
    converge (see the module docstring) from up to SAMPLE_IMAGES training images `xs` (what `fit` indexes:
    a device tensor or host batches). Returns how many layers were recomputed; leaves `module` in eval mode.
    Frozen layers (a fine-tuned backbone's) keep their pretrained statistics."""
    norms = _unsettled_norms(module)
    if not norms or len(xs) < 2:  # one image has no variance
        return 0
    device = next(module.parameters()).device
    order = torch.randperm(len(xs), generator=torch.Generator().manual_seed(seed or 0))[:SAMPLE_IMAGES].to(device)
    momenta = [m.momentum for m in norms]
    module.eval()  # dropout off; only the layers being recomputed see batch statistics
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
        m.train()
    try:
        for start in range(0, len(order), SAMPLE_BATCH):
            batch = order[start:start + SAMPLE_BATCH]
            if len(batch) > 1:  # a last batch of 1 has no variance to give
                module(scale(xs[batch]))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.eval()
    return len(norms)


def near_chance_warning(train_accuracy: float | None, test_accuracy: float, test_labels: Any) -> str | None:
    """One line when the test accuracy is near chance (always guessing the commonest test class) while the
    training accuracy is well above it; None otherwise. Single-label classification only."""
    labels = torch.as_tensor(test_labels)
    if train_accuracy is None or labels.ndim != 1 or len(labels) == 0:
        return None
    chance = torch.bincount(labels.long()).max().item() / len(labels)
    near = chance + 0.1 * (1 - chance)  # within a tenth of the way from chance to perfect
    if test_accuracy > near or train_accuracy < chance + 0.5 * (1 - chance):
        return None
    return (f"warning: test accuracy {test_accuracy:.3f} is near chance ({chance:.3f}, always the commonest class) "
            f"although training accuracy is {train_accuracy:.3f}: the model does not generalise (test images "
            "prepared differently from the training images, BatchNorm statistics, or overfitting)")
