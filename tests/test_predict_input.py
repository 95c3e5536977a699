"""Predicting on real inputs: file errors, colour/size conversion, MNIST-style digits, --show-input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from cnnlab.cli import main
from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.digits import in_mnist_form, mnist_style
from cnnlab.datasets.image_files import BadImageError, load_image_for, open_image, to_model_input
from cnnlab.models import Sequential
from cnnlab.spec import layers

MNIST_STYLE = {"scale": 255, "size": [28, 28], "channels": 1, "color": "grayscale", "mnist_style": True}


@pytest.fixture(scope="module")
def model(mnist: Dataset) -> Sequential:
    """A small dense network trained for a few seconds (about 95% on MNIST), not translation invariant,
    so it only agrees with itself when the preprocessing really reproduces MNIST's framing."""
    net = Sequential([layers.Input((28, 28, 1)), layers.Flatten(), layers.Dense(64, activation="relu"),
                      layers.Dense(10, activation="softmax")])
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], label_smoothing=0.0)
    net.fit(mnist.x_train[:20000], mnist.y_train[:20000], epochs=2, verbose=0, device="cpu")
    net.preprocessing = dict(MNIST_STYLE)
    return net


def render_on_paper(digit: np.ndarray, scale: int = 6, top: int = 20, left: int = 20, height: int = 200,
                    width: int = 300) -> np.ndarray:
    """An MNIST digit drawn black on white, `scale` times larger, off-centre in a height x width page."""
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    page = Image.new("L", (width, height), 255)
    page.paste(big, (left, top))
    return np.asarray(page)


def _centre_of_mass(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return np.array([np.arange(a.shape[0]) @ a.sum(1), np.arange(a.shape[1]) @ a.sum(0)]) / a.sum()


def test_mnist_digits_pass_through_unchanged(mnist):
    digits = mnist.x_test[:100, ..., 0]
    out = np.stack([mnist_style(d) for d in digits])
    assert np.abs(out.astype(int) - digits).mean() < 0.5  # already MNIST-style: at most rounding changes


def test_digits_in_mnist_form_are_returned_as_they_are(mnist):
    """The model sees an uploaded MNIST image exactly as evaluation did; the recipe runs for everything else."""
    digits = mnist.x_test[:500, ..., 0]
    form = np.array([in_mnist_form(d, (28, 28), 20) for d in digits])
    assert 0.8 < form.mean() < 1.0
    for digit in digits[form]:
        assert np.array_equal(mnist_style(digit), digit)
    shifted = np.roll(digits[form][0], 3, axis=1)  # off centre by 3 px: reframed
    assert not in_mnist_form(shifted, (28, 28), 20)
    assert np.abs(_centre_of_mass(mnist_style(shifted)) - 14.0).max() <= 0.5
    faint = (digits[form][0] // 2).astype(np.uint8)  # peak 127: the recipe stretches it to 255
    assert not in_mnist_form(faint, (28, 28), 20) and mnist_style(faint).max() == 255
    noisy = digits[form][0].copy()
    noisy[0, 0] = 40  # a speck on the border: not known to be clean paper
    assert not in_mnist_form(noisy, (28, 28), 20)


def test_rendered_digit_is_reframed_like_mnist(mnist):
    for digit in mnist.x_test[:40, ..., 0]:
        out = mnist_style(render_on_paper(digit))
        assert np.abs(_centre_of_mass(out) - 14.0).max() <= 0.5  # MNIST's centre of mass (index units)
        ys, xs = np.nonzero(out > 25)
        oy, ox = np.nonzero(digit > 25)
        assert abs((ys.max() - ys.min()) - (oy.max() - oy.min())) <= 1
        assert abs((xs.max() - xs.min()) - (ox.max() - ox.min())) <= 1
        shifts = [np.abs(np.roll(out, (dy, dx), (0, 1)).astype(int) - digit).mean()
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        assert min(shifts) < 12  # same picture up to the half-pixel rounding of the centring


def test_rendered_photo_like_digits_get_the_same_prediction(mnist, model):
    digits, labels = mnist.x_test[:200, ..., 0], mnist.y_test[:200]
    p = model.predict(digits)
    sure = np.flatnonzero((p.max(1) > 0.9) & (p.argmax(1) == labels))
    assert len(sure) > 120
    rng = np.random.default_rng(0)

    def grey_noisy_paper(d: np.ndarray) -> np.ndarray:  # a phone photo: grey paper, sensor noise, a dark speck
        page = render_on_paper(d, scale=5, top=10, left=150).astype(np.float64) * 0.8 + rng.normal(0, 6, (200, 300))
        page[190, 5] = 0
        return np.clip(page, 0, 255).astype(np.uint8)

    def thin_pen(d: np.ndarray) -> np.ndarray:  # a biro line: strokes a fifth as thick relative to the digit
        big = Image.fromarray(d).resize((280, 280), Image.Resampling.BICUBIC).point(lambda v: 255 * (v > 200))
        return 255 - np.asarray(big.filter(ImageFilter.MinFilter(5)))

    for make in (render_on_paper, grey_noisy_paper, thin_pen):  # measured: 142, 143 and 142 of 143 agree
        x = np.stack([mnist_style(make(d)) for d in digits[sure]])
        agree = (model.predict(x).argmax(1) == labels[sure]).mean()
        assert agree >= 0.98, (make.__name__, agree)


def test_predict_cli_shows_the_exact_input(tmp_path, mnist, model, capsys):
    path = tmp_path / "m.safetensors"
    model.save(path)
    i = 0
    Image.fromarray(render_on_paper(mnist.x_test[i, ..., 0], top=5, left=100)).save(tmp_path / "seven.jpg", quality=95)
    assert main(["predict", str(path), str(tmp_path / "seven.jpg"), "--json", "--show-input", str(tmp_path / "in.png")]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("["):])
    assert result[0]["top"][0]["class"] == str(mnist.y_test[i])
    seen = np.asarray(Image.open(tmp_path / "in.png"))
    np.testing.assert_array_equal(seen, load_image_for(tmp_path / "seven.jpg", (28, 28, 1), MNIST_STYLE)[..., 0])
    assert seen.shape == (28, 28)


def test_bad_files_raise_with_a_reason(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    for name, words in (("empty.png", "empty file"), ("text.jpg", "text file"), ("cut.png", "truncated")):
        with pytest.raises(BadImageError, match=words):
            open_image(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="not found"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(BadImageError, match="folder"):
        open_image(tmp_path)


def test_colour_modes_become_the_model_input():
    clear = Image.fromarray(np.zeros((6, 8, 4), dtype=np.uint8))  # transparent black -> white paper
    assert (to_model_input(clear, (6, 8, 1)) == 255).all()
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))  # 16-bit grey: scaled, not clipped
    np.testing.assert_array_equal(to_model_input(deep, (1, 3, 1))[0, :, 0], [0, 128, 255])
    rgb = to_model_input(Image.new("L", (50, 20), 77), (10, 25, 3))
    assert rgb.shape == (10, 25, 3) and (rgb == 77).all()


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_the_same_way_for_training_and_predict(tmp_path):
    """A 12-megapixel phone photo need not be decoded whole for a 224x224 input: JPEG's DCT scaling gives a
    smoothed 1/8 copy (still >= 224 a side) that resizes to nearly the same pixels, and every path uses it."""
    from skimage import data as skimage_data

    from cnnlab.datasets.folders.load import load_folder
    from cnnlab.datasets.image_files import decode_side

    big = Image.fromarray(skimage_data.astronaut()).resize((4032, 3024), Image.Resampling.BICUBIC)
    for cls in ("a", "b"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        big.save(tmp_path / "photos" / cls / "1.jpg", quality=92)
    photo = tmp_path / "photos" / "a" / "1.jpg"
    assert decode_side((224, 224, 3)) == 224 and decode_side((28, 28, 1), MNIST_STYLE) is None
    assert decode_side((224, 224, 3), {"resize_to": 256}) == 256
    small = open_image(photo, at_least=224)
    assert small.size == (504, 378)  # 1/8 of 4032x3024: both sides still >= 224
    assert open_image(photo).size == (4032, 3024)
    full = to_model_input(open_image(photo), (224, 224, 3))
    fast = load_image_for(photo, (224, 224, 3))
    assert np.abs(fast.astype(int) - full).mean() < 3
    data = load_folder(tmp_path / "photos", image_size=(224, 224), color="rgb", cache=False)
    rows = [x for x in (data.x_train, data.x_val, data.x_test) if x is not None and len(x)]
    assert any(np.array_equal(fast, row) for x in rows for row in x)  # predict sees what training saw
    png = tmp_path / "big.png"
    big.resize((1200, 900)).save(png)
    assert open_image(png, at_least=224).size == (1200, 900)  # only JPEG has a cheap reduced decode
