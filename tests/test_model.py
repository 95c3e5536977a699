"""Each layer's forward pass equals an independent numpy / hand-written torch reference."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.spec import layers as L
from cnnlab.spec import zoo
from cnnlab.spec.build import build, keras_init_

torch.manual_seed(0)
RNG = np.random.default_rng(0)


def tf_same_pads(n, k, s):
    """TensorFlow's 'same' padding, written out independently of cnnlab."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def np_conv(x, w, b, stride, padding):
    """x (H, W, Cin), w (kh, kw, Cin, Cout) -> (H', W', Cout), Keras semantics."""
    kh, kw = w.shape[:2]
    if padding == "same":
        x = np.pad(x, (tf_same_pads(x.shape[0], kh, stride[0]), tf_same_pads(x.shape[1], kw, stride[1]), (0, 0)))
    oh, ow = (x.shape[0] - kh) // stride[0] + 1, (x.shape[1] - kw) // stride[1] + 1
    out = np.zeros((oh, ow, w.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = x[i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw]
            out[i, j] = np.tensordot(patch, w, axes=3) + b
    return out


def np_pool(x, pool, stride, padding, kind):
    if padding == "same":
        pads = (tf_same_pads(x.shape[0], pool[0], stride[0]), tf_same_pads(x.shape[1], pool[1], stride[1]), (0, 0))
        x = np.pad(x, pads, constant_values=np.nan)
    oh, ow = (x.shape[0] - pool[0]) // stride[0] + 1, (x.shape[1] - pool[1]) // stride[1] + 1
    f = np.nanmax if kind == "max" else np.nanmean  # padding never counts, as in TF
    return np.array([[f(x[i * stride[0]:i * stride[0] + pool[0], j * stride[1]:j * stride[1] + pool[1]], axis=(0, 1))
                      for j in range(ow)] for i in range(oh)])


def run(spec, x_hwc):
    module = build(spec).eval()
    keras_init_(module, 0)
    with torch.no_grad():
        for p in module.parameters():  # non-zero biases so they are tested too
            p.add_(torch.randn_like(p) * 0.1)
        y = module(torch.tensor(x_hwc, dtype=torch.float32).permute(2, 0, 1)[None])
    y = y[0].numpy()
    return module, (y.transpose(1, 2, 0) if y.ndim == 3 else y)


@pytest.mark.parametrize("n,k,s,padding", [(7, 3, 1, "valid"), (7, 3, 2, "same"), (8, 3, 2, "same"), (6, 5, 1, "same"),
                                           (9, (3, 5), (2, 1), "same"), (8, 4, 3, "same"), (8, 2, 2, "valid")])
def test_conv2d_matches_numpy(n, k, s, padding):
    spec = L.ModelSpec([L.Conv2D(4, k, strides=s, padding=padding, activation="relu")], (n, n + 1, 3))
    x = RNG.random((n, n + 1, 3))
    module, y = run(spec, x)
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    w = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
    expected = np.maximum(np_conv(x, w, conv.bias.detach().numpy(), spec.layers[0].strides, padding), 0)
    assert y.shape == spec.shapes()[0]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("n,p,s,padding", [(7, 2, None, "valid"), (7, 2, None, "same"), (8, 3, 2, "same"),
                                           (5, 3, 1, "same"), (9, (2, 3), (2, 2), "same"), (6, 3, 2, "valid")])
def test_pooling_matches_numpy(kind, n, p, s, padding):
    cls = L.MaxPooling2D if kind == "max" else L.AveragePooling2D
    spec = L.ModelSpec([cls(p, strides=s, padding=padding)], (n, n, 2))
    x = RNG.standard_normal((n, n, 2))
    _, y = run(spec, x)
    layer = spec.layers[0]
    np.testing.assert_allclose(y, np_pool(x, layer.pool_size, layer.stride_pair, padding, kind), rtol=1e-5, atol=1e-6)


def test_dense_on_image_acts_on_channels_and_flatten_dense():
    spec = L.ModelSpec([L.Dense(3, activation="tanh")], (4, 5, 6))
    x = RNG.random((4, 5, 6))
    module, y = run(spec, x)
    lin = next(m for m in module.modules() if isinstance(m, nn.Linear))
    np.testing.assert_allclose(y, np.tanh(x @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()), rtol=1e-5,
                               atol=1e-6)


def test_batchnorm_inference_and_activations():
    spec = L.ModelSpec([L.BatchNormalization(epsilon=1e-3), L.Activation("sigmoid")], (3, 3, 4))
    module = build(spec).eval()
    bn = module.batch_normalization
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        bn.running_var.copy_(torch.tensor([1.0, 2.0, 0.5, 4.0]))
        bn.weight.copy_(torch.tensor([1.0, 0.5, 2.0, -1.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.1, -0.1, 0.2]))
    x = RNG.random((3, 3, 4))
    with torch.no_grad():
        y = module(torch.tensor(x, dtype=torch.float32).permute(2, 0, 1)[None])[0].numpy().transpose(1, 2, 0)
    w, b = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    ref = (x - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + 1e-3) * w + b
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-ref)), rtol=1e-5, atol=1e-6)
    assert math.isclose(bn.momentum, 0.01, abs_tol=1e-9)  # Keras momentum 0.99 weights the *old* statistic


@pytest.mark.parametrize("activation,fn", [
    ("relu", lambda v: np.maximum(v, 0)), ("tanh", np.tanh), ("sigmoid", lambda v: 1 / (1 + np.exp(-v))),
    ("gelu", lambda v: 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))), ("linear", lambda v: v),
    ("softmax", lambda v: np.exp(v) / np.exp(v).sum(-1, keepdims=True))])
def test_activation_layer(activation, fn):
    spec = L.ModelSpec([L.Flatten(), L.Activation(activation), L.Dense(2)], (2, 2, 3))
    module = build(spec).eval()
    x = RNG.standard_normal((1, 3, 2, 2)).astype(np.float32)
    with torch.no_grad():
        hidden = module[1](module[0](torch.tensor(x))).numpy()
    np.testing.assert_allclose(hidden, fn(x.reshape(1, -1)), rtol=1e-5, atol=1e-6)


def test_global_average_pooling_and_dropout_in_eval():
    spec = L.ModelSpec([L.Dropout(0.5), L.GlobalAveragePooling2D()], (4, 4, 3))
    x = RNG.random((4, 4, 3))
    _, y = run(spec, x)
    np.testing.assert_allclose(y, x.mean((0, 1)), rtol=1e-6, atol=1e-7)


class HandWrittenSeed(nn.Module):
    """The seed CNN the way a PyTorch user writes it."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3), nn.Conv2d(64, 64, 3)
        self.f1, self.f2 = nn.Linear(576, 64), nn.Linear(64, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
        x = torch.relu(self.c3(x)).flatten(1)
        return self.f2(torch.relu(self.f1(x)))


def test_seed_model_equals_hand_written_torch_and_drops_final_softmax():
    spec, _ = zoo.resolve("seed", (28, 28, 1))
    module = build(spec).eval()
    ref = HandWrittenSeed().eval()
    ours = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    theirs = [ref.c1, ref.c2, ref.c3, ref.f1, ref.f2]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(module(x), ref(x))
    probs = build(spec, logits=False).eval()
    probs.load_state_dict(module.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(probs(x), torch.softmax(ref(x), 1))


def test_keras_init_is_glorot_uniform_with_zero_bias():
    module = build(L.ModelSpec([L.Conv2D(64, 5), L.Flatten(), L.Dense(10)], (28, 28, 3)))
    keras_init_(module, 0)
    conv = module.conv2d.conv
    bound = math.sqrt(6 / (5 * 5 * 3 + 5 * 5 * 64))
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.95 * bound
    assert torch.count_nonzero(conv.bias) == 0
