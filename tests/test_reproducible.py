"""Deterministic mode and generator states: the same command gives the same bits."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cnnlab.datasets.registry import load
from cnnlab.spec import compact
from cnnlab.spec.build import build, keras_init_
from cnnlab.train.config import TrainConfig
from cnnlab.train.fit import fit
from cnnlab.train.reproducible import deterministic_mode, rng_state, set_rng_state


@pytest.fixture(autouse=True)
def restore_global_mode():
    yield
    torch.use_deterministic_algorithms(False)


def test_generator_states_round_trip_through_tensors():
    random.gauss(0, 1)  # leaves a cached Gaussian in `random`'s state
    np.random.standard_normal()
    state = rng_state()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    first = (random.random(), random.gauss(0, 1), np.random.standard_normal(3), torch.rand(3))
    torch.rand(100), np.random.random(100), random.random()
    set_rng_state(state)
    again = (random.random(), random.gauss(0, 1), np.random.standard_normal(3), torch.rand(3))
    assert first[:2] == again[:2]
    np.testing.assert_array_equal(first[2], again[2])
    assert torch.equal(first[3], again[3])


def test_two_deterministic_runs_give_bit_identical_weights():
    data = load("mnist")
    spec = compact.parse("in28x28x1 conv8k3:relu max2 bn drop0.3 flatten dense10:softmax")
    config = TrainConfig(epochs=2, batch_size=50, deterministic=True, device="cpu", seed=7)
    states = []
    for _ in range(2):
        module = build(spec)
        keras_init_(module, config.seed)
        fit(module, data.x_train[:1000], data.y_train[:1000], config)
        states.append(module.state_dict())
        assert torch.are_deterministic_algorithms_enabled()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_cuda_determinism_is_refused_up_front_for_layers_without_a_deterministic_kernel():
    module = build(compact.parse("in28x28x1 conv8k3:relu gap dense10"))
    with pytest.raises(ValueError, match=r"GlobalAveragePooling2D \(adaptive_avg_pool2d_backward_cuda\)"):
        deterministic_mode(torch.device("cuda"), module)
    assert not torch.are_deterministic_algorithms_enabled()  # refused before changing anything
