"""ONNX and TorchScript exports compute what cnnlab computes: checked with onnxruntime on real MNIST."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cnnlab import cli
from cnnlab.datasets.registry import load
from cnnlab.models import load_model
from cnnlab.runs import model_file, run_folder
from cnnlab.runs.export import OPSET, export
from cnnlab.spec import compact, zoo
from cnnlab.spec.build import build, keras_init_
from cnnlab.train.config import TrainConfig
from cnnlab.train.device_data import to_device_images
from cnnlab.train.fit import predict_logits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN trained for one epoch on 3,000 MNIST images: (run folder, dataset)."""
    data = load("mnist")
    small = dataclasses.replace(data, x_train=data.x_train[:3000], y_train=data.y_train[:3000])
    out = tmp_path_factory.mktemp("export") / "run"
    spec = compact.parse("in28x28x1 conv8k3:relu max2 conv16k3same:relu bn max2 flatten drop0.2 dense10:softmax")
    run_folder.train_run(small, spec, TrainConfig(epochs=1, batch_size=64, device="cpu"), out, figures=False)
    return out, data


def test_onnx_matches_cnnlab_on_1000_mnist_test_images(trained):
    run, data = trained
    path = export(run, "onnx")
    assert path == run / "model.onnx"
    x = data.x_test[:1000]  # uint8 (N, 28, 28, 1), straight from the dataset
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, probs = session.run(["logits", "probabilities"], {"images": x})

    model = load_model(run)
    expected_logits = predict_logits(model.module, to_device_images(x, torch.device("cpu"))).numpy()
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4, rtol=0)
    np.testing.assert_allclose(probs, model.predict(x), atol=1e-4, rtol=0)
    assert (probs.argmax(1) == data.y_test[:1000]).mean() > 0.5  # a trained model (chance is 0.1)

    one, _ = session.run(None, {"images": x[:1]})  # the batch axis is dynamic
    np.testing.assert_allclose(one, expected_logits[:1], atol=1e-4, rtol=0)


def test_onnx_carries_class_names_preprocessing_and_states_its_opset(trained):
    run, _ = trained
    proto = onnx.load(str(export(run, "onnx", run / "copy.onnx")))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["cnnlab.class_names"]) == [str(d) for d in range(10)]
    assert json.loads(meta["cnnlab.preprocessing"]) == run_folder.preprocessing(trained[1])
    assert "uint8" in meta["cnnlab.input"] and json.loads(meta["cnnlab.spec"])["input_shape"] == [28, 28, 1]
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    image = proto.graph.input[0].type.tensor_type
    assert image.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in image.shape.dim] == ["batch", 28, 28, 1]


ARCHITECTURES = {**{name: zoo.resolve(name, (28, 28, 1), 10)[0] for name in zoo.ZOO},
                 "same-strided-avg-gap": compact.parse("in13x11x3 conv4k3s2same:elu avg3s1same conv6k2x3:selu gap dense5:sigmoid"),
                 "dense-on-image-bn": compact.parse("in9x9x2 conv3k4same:gelu bn dense7:silu max2same act:leaky_relu "
                                                    "flatten dense4 act:tanh")}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_layer_exports_to_onnx_and_torchscript(tmp_path, name):
    spec = ARCHITECTURES[name]
    module = build(spec)
    keras_init_(module, 1)
    for m in module.modules():  # non-trivial statistics, so that BatchNormalization is really checked
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    classes = [f"c{i}" for i in range(spec.shapes()[-1][-1])]
    model_file.save_model(tmp_path / "m.safetensors", spec, module, classes, {"scale": 255})
    x = np.random.default_rng(0).integers(0, 256, (5, *spec.input_shape), dtype=np.uint8)
    expected = predict_logits(module.eval(), to_device_images(x, torch.device("cpu"))).numpy()

    session = ort.InferenceSession(str(export(tmp_path / "m.safetensors", "onnx")), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["logits"], {"images": x})[0], expected, atol=1e-4, rtol=0)

    scripted = torch.jit.load(str(export(tmp_path / "m.safetensors", "torchscript")))
    logits, probs = scripted(torch.from_numpy(x))
    np.testing.assert_allclose(logits.detach().numpy(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(probs, torch.softmax(logits, 1))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_cli_export(trained, capsys):
    run, data = trained
    out = run / "deploy" / "m.pt"
    assert cli.main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    extra = {"cnnlab.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(json.loads(extra["cnnlab.json"])["cnnlab.class_names"])[3] == "3"
    logits, _ = scripted(torch.from_numpy(data.x_test[:3]))
    assert logits.shape == (3, 10)
    assert cli.main(["export", str(run / "missing")]) == 1
    assert "no model at" in capsys.readouterr().err
