"""Short runs do not produce broken models (issue 21 item 19): BatchNorm statistics recomputed when they have
not converged, and a line when a model scores near chance on its test set but well in training."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.runs import run_folder
from cnnlab.spec import compact, zoo
from cnnlab.spec.build import build
from cnnlab.train.config import TrainConfig, recipe_config
from cnnlab.train.fit import fit
from cnnlab.train.short_runs import near_chance_warning, settle_batchnorm


def bn_model(input_shape=(28, 28, 1)) -> nn.Module:
    torch.manual_seed(0)
    return build(compact.parse("conv8k3nobias bn act:relu max2 flatten dense10:softmax").with_input_shape(input_shape))


def conv_outputs(module: nn.Module, x: np.ndarray) -> torch.Tensor:
    """The first conv's outputs (N, C, H, W) for uint8 images, as the BatchNorm after it sees them."""
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        return conv(torch.as_tensor(x).permute(0, 3, 1, 2).float() / 255.0)


def test_a_short_fit_leaves_batchnorm_statistics_of_the_data(small):
    x, y = small[0][:600], small[1][:600]
    module = bn_model()
    fit(module, x, y, TrainConfig(epochs=1, batch_size=100, device="cpu", seed=0))  # 6 steps at momentum 0.01
    norm = next(m for m in module.modules() if isinstance(m, nn.BatchNorm2d))
    out = conv_outputs(module, x)
    mean, var = out.mean((0, 2, 3)), out.var((0, 2, 3))
    # without recomputing, the running variance would still be ~0.94 of its start, 1
    torch.testing.assert_close(norm.running_mean, mean, rtol=0.05, atol=0.01)
    torch.testing.assert_close(norm.running_var, var, rtol=0.15, atol=0.002)
    assert not module.training


def test_settled_statistics_are_left_alone():
    module = bn_model()
    norm = next(m for m in module.modules() if isinstance(m, nn.BatchNorm2d))
    norm.num_batches_tracked.fill_(300)  # 300 steps x 0.01 = 3: converged
    norm.running_var.fill_(0.5)
    assert settle_batchnorm(module, torch.zeros((8, 28, 28, 1), dtype=torch.uint8)) == 0
    assert float(norm.running_var[0]) == 0.5


@pytest.mark.parametrize("train, test, warns", [(0.976, 0.098, True), (0.976, 0.90, False), (0.15, 0.11, False)])
def test_near_chance_warning(train, test, warns):
    labels = np.arange(1000) % 10
    line = near_chance_warning(train, test, labels)
    assert (line is not None) == warns
    if warns:
        assert "\n" not in line and "near chance (0.100" in line and "0.976" in line


@pytest.mark.slow
def test_zoo_best_for_a_few_steps_scores_well_above_chance(mnist, tmp_path: Path):
    small = replace(mnist, x_train=mnist.x_train[:2000], y_train=mnist.y_train[:2000],
                    x_test=mnist.x_test[:1000], y_test=mnist.y_test[:1000])
    spec, recipe = zoo.resolve("best", small.input_shape, 10)
    config = recipe_config(recipe, seed=0, epochs=1, device="cpu")  # 16 steps; before: 0.126 test accuracy
    _, _, evaluation = run_folder.train_run(small, spec, config, tmp_path / "run", model_name="best", figures=False)
    assert evaluation.accuracy > 0.8
