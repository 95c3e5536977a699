"""The web API for models of colour photos: a frozen EfficientNet-Lite0 with a new head, and `serve imagenet`.

References: the core on the same inputs (load_model / pretrained_model, to_model_input, explain.feature_maps and
explain.grad_cam), the backbone's own resize_and_crop, and the ImageNet labels of a real photo (skimage's
chelsea is a cat: ImageNet classes 281-285).
"""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")
skimage_data = pytest.importorskip("skimage.data")
import web_support  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from web_api_support import error_of, upload  # noqa: E402

from cnnlab import explain  # noqa: E402
from cnnlab.backbones.preprocess import resize_and_crop  # noqa: E402
from cnnlab.datasets.image_files import to_model_input  # noqa: E402
from cnnlab.models import load_model  # noqa: E402
from cnnlab.runs import model_file  # noqa: E402
from cnnlab.runs.predict import class_probabilities  # noqa: E402
from cnnlab.runs.pretrained import pretrained_model  # noqa: E402
from cnnlab.spec import layers as L  # noqa: E402
from cnnlab.spec.build import new_module  # noqa: E402
from cnnlab.web.app import create_app  # noqa: E402
from cnnlab.web.encode import GAP, JET, MAX_TILES, VIRIDIS, heat_png, mosaic  # noqa: E402

STAGES = ["stem", *(f"block{i}" for i in range(1, 8)), "top"]
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def jpeg(photo: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def pixels(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def assert_heat_png(data_url: str, heat: np.ndarray) -> None:
    """The PNG is `heat` (H, W) in [0, 1] in jet colours; a level may flip where the two computations' last
    float bits differ, and one jet level moves a colour channel by at most 5."""
    got = pixels(data_url).astype(int)
    want = JET[np.round(heat * 255).astype(int)].astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 5 and (got == want).all(-1).mean() > 0.99


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory) -> Path:
    """A bare model file: ImageNet's frozen Lite0 features and a fresh two-class head, 224 x 224 x 3 input."""
    spec = L.ModelSpec((L.EfficientNetLite0(trainable=False), L.GlobalAveragePooling2D(),
                        L.Dense(2, activation="softmax")), (224, 224, 3))
    path = tmp_path_factory.mktemp("photo") / "pets.safetensors"
    model_file.save_model(path, spec, new_module(spec, seed=0), ["cat", "coffee"],
                          {"scale": 255, "size": [224, 224], "channels": 3, "color": "rgb"})
    return path


@pytest.fixture(scope="module")
def photo_client(photo_file: Path, tmp_path_factory):
    with TestClient(create_app(run=photo_file, runs_dir=tmp_path_factory.mktemp("runs")),
                    base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture(scope="module")
def imagenet_client(tmp_path_factory):
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))  # no folder called "imagenet" here, so the name means the zoo model
    try:
        with TestClient(create_app(run="imagenet", runs_dir="runs"), base_url="http://127.0.0.1") as c:
            yield c
    finally:
        os.chdir(here)


def test_photo_model_predictions_are_the_cores(photo_client, photo_file):
    described = photo_client.get("/api/model").json()
    assert described["input_shape"] == [224, 224, 3] and described["compact"] is None  # no compact form
    raw = jpeg(skimage_data.chelsea())
    body = upload(photo_client, raw, name="chelsea.jpg", kind="image/jpeg", echo=1).json()
    model = load_model(photo_file)
    x = to_model_input(Image.open(io.BytesIO(raw)), model.spec.input_shape, model.preprocessing)
    np.testing.assert_allclose(body["probabilities"], model.predict(x[None])[0], rtol=1e-4, atol=1e-5)
    assert body["input_shape"] == [224, 224, 3]
    np.testing.assert_array_equal(pixels(body["input"]), x)


def test_photo_model_maps_are_the_backbone_stages_in_bounded_mosaics(photo_client, photo_file):
    raw = jpeg(skimage_data.coffee())
    image_id = upload(photo_client, raw, name="coffee.jpg", kind="image/jpeg").json()["image_id"]
    r = photo_client.get("/api/explain/maps", params={"image": image_id})
    assert r.status_code == 200, r.text
    layers = r.json()["layers"]
    model = load_model(photo_file)
    x = to_model_input(Image.open(io.BytesIO(raw)), model.spec.input_shape, model.preprocessing)
    reference = explain.feature_maps(model.module, x)
    kinds = explain.backbone_stages(model.module)
    assert [layer["name"] for layer in layers] == [n for n, _ in reference] == [f"efficientnet_lite0/{s}" for s in STAGES]
    for layer, (name, fmap) in zip(layers, reference):
        h, w, c = fmap.shape
        assert layer["type"] == kinds[name] and layer["output_shape"] == [None, h, w, c]
        assert layer["channels"] == min(c, MAX_TILES) <= layer["rows"] * layer["cols"]
        th, tw = layer["tile"]
        assert max(th, tw) <= 56 and h % th == 0  # averaged down by a whole factor
        tiles = pixels(layer["image"])
        assert tiles.shape == (layer["rows"] * (th + GAP) - GAP, layer["cols"] * (tw + GAP) - GAP, 3)
        assert max(tiles.shape) <= 8 * 57  # bounded, whatever the stage: at most 8 x 8 tiles of 56 pixels
    stem = reference[0][1][:, :, 0].reshape(56, 2, 56, 2).mean(axis=(1, 3))  # 112 -> 56: 2 x 2 means
    level = np.round((stem - stem.min()) / (stem.max() - stem.min()) * 255).astype(int)
    assert np.abs(pixels(layers[0]["image"])[:56, :56].astype(int) - VIRIDIS[level]).max() <= 1


def test_photo_model_grad_cam_is_the_cores_as_a_heat_png(photo_client, photo_file):
    raw = jpeg(skimage_data.chelsea())
    body = upload(photo_client, raw, name="chelsea.jpg", kind="image/jpeg").json()
    model = load_model(photo_file)
    x = to_model_input(Image.open(io.BytesIO(raw)), model.spec.input_shape, model.preprocessing)
    for class_index in (None, 0, 1):
        params = {"image": body["image_id"]} | ({} if class_index is None else {"class_index": class_index})
        r = photo_client.get("/api/explain/gradcam", params=params)
        assert r.status_code == 200, r.text
        cam = r.json()
        want = int(np.argmax(body["probabilities"])) if class_index is None else class_index
        assert cam["index"] == want and cam["class"] == ["cat", "coffee"][want]
        assert cam["probability"] == pytest.approx(body["probabilities"][want], rel=1e-4)
        assert cam["size"] == [224, 224] and cam["milliseconds"] > 0
        assert_heat_png(cam["heatmap"], explain.grad_cam(model.module, x, want))


def test_grad_cam_bad_requests(client, tmp_path):
    assert client.get("/api/explain/gradcam").status_code == 422
    r = client.get("/api/explain/gradcam", params={"image": "0123456789abcdef"})
    assert r.status_code == 404 and "POST it to /api/predict" in error_of(r)
    image_id = upload(client, jpeg(np.full((40, 40, 3), 200, np.uint8)), kind="image/jpeg").json()["image_id"]
    assert client.get("/api/explain/gradcam", params={"image": image_id}).status_code == 200  # digits work too
    r = client.get("/api/explain/gradcam", params={"image": image_id, "class_index": 10})
    assert r.status_code == 422 and "class_index must be in 0..9, got 10" in error_of(r)
    assert client.get("/api/explain/gradcam", params={"image": image_id, "class_index": -1}).status_code == 422
    spec = L.ModelSpec((L.Flatten(), L.Dense(10, activation="softmax")), (28, 28, 1))  # no convolution
    dense = tmp_path / "dense.safetensors"
    model_file.save_model(dense, spec, new_module(spec, seed=0), [str(d) for d in range(10)], {})
    with TestClient(create_app(run=dense, runs_dir=tmp_path / "runs"), base_url="http://127.0.0.1") as c:
        image_id = upload(c, jpeg(np.zeros((28, 28, 3), np.uint8)), kind="image/jpeg").json()["image_id"]
        r = c.get("/api/explain/gradcam", params={"image": image_id})
        assert r.status_code == 422 and "needs a Conv2D layer" in error_of(r)


def test_serve_imagenet_is_predict_imagenet_on_the_page(imagenet_client):
    described = imagenet_client.get("/api/model").json()
    assert described["name"] == "imagenet" and described["input_shape"] == [224, 224, 3]
    assert len(described["class_names"]) == 1000 and described["class_names"][934] == "hot dog"
    assert described["metrics"] is None and described["history"] is None
    runs = imagenet_client.get("/api/runs").json()
    assert runs["served"] == "imagenet" and [r["name"] for r in runs["runs"]] == ["imagenet"]
    assert runs["runs"][0]["params"] == described["summary"]["total_params"]

    photo = skimage_data.chelsea()  # 451 x 300: the crop keeps the middle 224 x 224 of a 385 x 256 resize
    body = upload(imagenet_client, jpeg(photo), name="chelsea.jpg", kind="image/jpeg", top_k=5, echo=1).json()
    assert body["top"][0]["index"] in CATS and len(body["top"]) == 5
    decoded = Image.open(io.BytesIO(jpeg(photo)))
    x = np.asarray(resize_and_crop(decoded, 224, 256))  # the backbone's own evaluation crop, not a stretch
    np.testing.assert_array_equal(pixels(body["input"]), x)
    zoo = pretrained_model("imagenet")  # what `cnnlab predict imagenet` runs
    np.testing.assert_allclose(body["probabilities"], class_probabilities(zoo.module, x[None])[0], rtol=1e-4, atol=1e-6)

    cam = imagenet_client.get("/api/explain/gradcam", params={"image": body["image_id"]}).json()
    assert cam["index"] == body["top"][0]["index"] and cam["size"] == [224, 224]
    assert_heat_png(cam["heatmap"], explain.grad_cam(zoo.module, x))
    maps = imagenet_client.get("/api/explain/maps", params={"image": body["image_id"]}).json()["layers"]
    assert [m["name"] for m in maps] == [f"efficientnet_lite0/{s}" for s in STAGES]
    r = imagenet_client.get("/api/model/examples", params={"true": 0, "predicted": 0})
    assert r.status_code == 404 and "pretrained model" in error_of(r)
    assert imagenet_client.post("/api/model", json={"run": "imagenet"}).json()["name"] == "imagenet"


def test_mosaic_and_heat_png_encode_what_they_are_given():
    rng = np.random.default_rng(0)
    small = rng.random((26, 26, 32), dtype=np.float32)  # a digit model's map: drawn whole
    m = mosaic(small)
    assert (m.rows, m.cols, m.channels, m.tile) == (4, 8, 32, (26, 26))
    wide = rng.random((7, 7, 1280), dtype=np.float32)
    m = mosaic(wide)
    assert (m.rows, m.cols, m.channels) == (8, 8, 64) and m.image.shape == (8 * 8 - 1, 8 * 8 - 1, 3)
    big = rng.random((112, 112, 3), dtype=np.float32)
    m = mosaic(big)
    assert m.tile == (56, 56) and m.image.shape == (56, 3 * 57 - 1, 3)
    heat = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    np.testing.assert_array_equal(pixels(heat_png(heat)), JET[np.round(heat * 255).astype(int)])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        heat_png(np.zeros((4, 4, 3)))


def test_cnnlab_serve_imagenet_starts_without_a_run(tmp_path):
    port = web_support.free_port()
    proc = web_support.start_cnnlab_serve(["imagenet"], port, cwd=tmp_path)
    try:
        body = web_support.wait_for_json(f"http://127.0.0.1:{port}/api/model", proc, 90)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert body["name"] == "imagenet" and len(body["class_names"]) == 1000
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
