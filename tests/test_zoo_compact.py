"""Every zoo model builds, matches its summary's parameter count, and runs; the compact format round-trips."""
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.spec import compact, zoo
from cnnlab.spec import layers as L
from cnnlab.spec.build import build
from cnnlab.spec.layers import SpecError
from cnnlab.spec.summary import summary_dict


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
@pytest.mark.parametrize("shape,classes", [((28, 28, 1), 10), ((32, 32, 3), 4)])
def test_zoo_model_builds_and_counts_match_torch(name, shape, classes):
    spec, _ = zoo.resolve(name, shape, classes)
    module = build(spec)
    info = summary_dict(spec)
    trainable = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for n, b in module.named_buffers() if not n.endswith("num_batches_tracked"))
    assert (trainable, buffers) == (info["trainable_params"], info["non_trainable_params"])
    out = module.eval()(torch.rand(2, shape[2], shape[0], shape[1]))
    assert out.shape == (2, classes)
    assert compact.parse(compact.format(spec)) == spec


def test_zoo_descriptions_state_the_true_parameter_counts():
    for name, entry in zoo.ZOO.items():
        total = summary_dict(entry.spec((28, 28, 1)))["total_params"]
        if "params" in entry.description:
            assert f"{total:,}" in entry.description, (name, total)


def test_compact_examples():
    spec = compact.parse("in28x28x1 conv32k3x5s2x1same:relu, max3s2same avg2 bn0.9 drop0.25 gap dense10nobias:softmax")
    assert spec.input_shape == (28, 28, 1)
    assert spec.layers[0] == L.Conv2D(32, (3, 5), (2, 1), "same", "relu")
    assert spec.layers[1] == L.MaxPooling2D((3, 3), (2, 2), "same")
    assert spec.layers[3] == L.BatchNormalization(0.9) and spec.layers[4] == L.Dropout(0.25)
    assert spec.layers[-1] == L.Dense(10, "softmax", use_bias=False)


@pytest.mark.parametrize("text,message", [
    ("", "empty model spec"),
    ("conv32 max2", "token 1 'conv32'"),
    ("conv32k3 in28x28x1", "must be the first token"),
    ("dense10:swish2", "token 1"),
    ("drop1.5", "token 1 'drop1.5'"),
    ("conv0k3", "filters must be a positive integer, got 0"),
])
def test_compact_errors(text, message):
    with pytest.raises(SpecError, match=message):
        compact.parse(text)


def test_a_backbone_has_no_compact_form():
    spec = L.ModelSpec((L.EfficientNetLite0(), L.GlobalAveragePooling2D(), L.Dense(2, "softmax")), (224, 224, 3))
    with pytest.raises(SpecError, match="EfficientNetLite0 has no compact form; use JSON"):
        compact.format(spec)


def test_resolve_json_file_and_mismatched_input(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"input_shape": [32, 32, 3], "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 2}]}))
    spec, _ = zoo.resolve(str(path))
    assert spec.input_shape == (32, 32, 3)
    with pytest.raises(SpecError, match="does not match the data's images"):
        zoo.resolve(str(path), (28, 28, 1))
    path.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        zoo.resolve(str(path))


activations = st.sampled_from([None, "relu", "tanh", "sigmoid", "softmax", "gelu"])
pairs = st.tuples(st.integers(1, 5), st.integers(1, 5))
layer = st.one_of(
    st.builds(L.Conv2D, st.integers(1, 64), pairs, pairs, st.sampled_from(["valid", "same"]), activations, st.booleans()),
    st.builds(L.MaxPooling2D, pairs, st.one_of(st.none(), pairs), st.sampled_from(["valid", "same"])),
    st.builds(L.AveragePooling2D, pairs, st.one_of(st.none(), pairs), st.sampled_from(["valid", "same"])),
    st.builds(L.Dense, st.integers(1, 512), activations, st.booleans()),
    st.builds(L.Dropout, st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75])),
    st.builds(L.BatchNormalization, st.sampled_from([0.9, 0.99, 0.999])),
    st.builds(L.Activation, st.sampled_from(["relu", "tanh", "gelu", "linear"])),
    st.just(L.Flatten()), st.just(L.GlobalAveragePooling2D()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(layer, min_size=1, max_size=8), st.one_of(st.none(), st.tuples(*[st.integers(1, 64)] * 3)))
def test_compact_and_json_round_trip(layers, shape):
    spec = L.ModelSpec(layers, shape)
    assert compact.parse(compact.format(spec)) == spec
    assert L.ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
