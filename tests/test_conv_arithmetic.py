"""conv_arithmetic.py against the closed-form Keras rules and against torch's own convolution."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab.spec.conv_arithmetic import (
    conv_output_size,
    conv_params,
    conv_positions,
    conv_windows,
    explain_conv,
    explain_pool,
    pool_output_size,
    pool_positions,
    same_padding,
)


@pytest.mark.parametrize(
    "n,k,padding,s,count",
    [(5, 3, "valid", 1, 9), (5, 3, "same", 1, 25), (5, 3, "valid", 2, 4), (28, 3, "valid", 1, 676),
     (28, 5, "same", 2, 196), (7, 2, "valid", 3, 4), (6, 1, "same", 3, 4)],
)
def test_known_counts(n, k, padding, s, count):
    assert len(conv_positions(n, k, padding, s)) == count


CASES = [
    (n, k, p, s)
    for n, k, p, s in itertools.product((5, 6, 7, 28), (1, 2, 3, 5), ("valid", "same"), (1, 2, 3))
]


@pytest.mark.parametrize("n,k,padding,s", CASES)
def test_sizes_and_positions_match_formula_and_torch(n, k, padding, s):
    out = math.floor((n - k) / s) + 1 if padding == "valid" else math.ceil(n / s)
    assert conv_output_size(n, k, padding, s) == out
    pos = conv_positions(n, k, padding, s)
    assert len(pos) == out * out
    # torch agrees once the Keras padding is applied explicitly (possibly uneven)
    (top, bottom), (left, right) = conv_windows(n, k, padding, s).pad
    x = F.pad(torch.zeros(1, 1, n, n), (left, right, top, bottom))
    assert F.conv2d(x, torch.zeros(1, 1, k, k), stride=s).shape[-2:] == (out, out)
    # windows step by the stride, start in the padding ring, and never leave the padded input
    assert pos[0] == (-top, -left)
    assert pos[1 if out > 1 else 0] == ((-top, -left + s) if out > 1 else (-top, -left))
    assert all(-top <= r and r + k <= n + bottom and -left <= c and c + k <= n + right for r, c in pos)


def test_same_padding_puts_the_odd_zero_after():
    assert same_padding(5, 3, 1) == (1, 1)
    assert same_padding(4, 2, 1) == (0, 1)
    assert same_padding(6, 3, 2) == (0, 1)
    assert same_padding(5, 1, 1) == (0, 0)


def test_pooling_defaults_stride_to_pool_size():
    assert pool_output_size(28) == 14 and pool_output_size(13) == 6 and pool_output_size(13, padding="same") == 7
    assert pool_positions(4) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    assert len(pool_positions(26, 2)) == 169
    assert len(pool_positions(7, 3, strides=1)) == 25


def test_params_match_keras_summary_numbers():
    assert conv_params(3, 3, 1, 32) == 320  # Keras MNIST example, conv2d
    assert conv_params(3, 3, 32, 64) == 18496  # conv2d_1
    assert conv_params(5, 5, 3, 6, use_bias=False) == 450


def test_rectangular_input():
    w = conv_windows((7, 6), (3, 2), "same", 2)
    assert w.output_size == (4, 3) and w.pad == ((1, 1), (0, 0)) and w.count == 12


def test_explanations_carry_the_numbers():
    text = explain_conv(5, 3, "valid", 1)
    assert "floor((5 - 3) / 1) + 1 = 3" in text and "3x3 = 9" in text
    text = explain_conv(5, 3, "same", 1, in_channels=1, filters=32)
    assert "ceil(5 / 1) = 5" in text and "5x5 = 25" in text and "1 before and 1 after" in text
    assert "= 320" in text and "(None, 5, 5, 32)" in text
    assert "14x14 = 196" in explain_pool(28) and "parameters = 0" in explain_pool(28)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="'full'"):
        conv_output_size(5, 3, "full")
    with pytest.raises(ValueError, match="does not fit"):
        conv_output_size(3, 5, "valid")
    with pytest.raises(ValueError, match="stride must be a positive int, got 0"):
        conv_positions(5, 3, "valid", 0)
