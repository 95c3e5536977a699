"""image_dataset_from_directory: Keras's file split (checked against Keras's own indexer) and a colour task that trains."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import cnnlab as keras
from cnnlab import layers
from cnnlab.datasets.directory import image_dataset_from_directory


def _two_colours(root, n=100, size=24, seed=0):
    """Class 'red' is reddish noise with a bright stripe; class 'blue' bluish: easy to tell apart."""
    rng = np.random.default_rng(seed)
    for name, channel in (("blue", 2), ("red", 0)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            img[..., channel] += 120
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


def test_split_matches_keras_index_directory(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from keras.src.utils import dataset_utils
    root = _two_colours(tmp_path / "data", n=30, size=8)
    train, val = image_dataset_from_directory(root, image_size=(8, 8), batch_size=8, validation_split=0.2,
                                              subset="both", seed=1337, verbose=False)
    paths, labels, names = dataset_utils.index_directory(str(root), "inferred", (".png",), shuffle=True, seed=1337,
                                                         verbose=False)
    n_val = int(0.2 * len(paths))
    assert names == train.class_names == ["blue", "red"]
    assert [os.path.realpath(p) for p in paths[:-n_val]] == [os.path.realpath(p) for p in train.file_paths]
    assert [os.path.realpath(p) for p in paths[-n_val:]] == [os.path.realpath(p) for p in val.file_paths]
    assert list(labels[-n_val:]) == list(val.labels)
    x, y = next(iter(train))
    assert x.dtype == np.float32 and x.shape == (8, 8, 8, 3) and x.max() > 1 and y.shape == (8,)
    assert len(train) == int(np.ceil(48 / 8))
    binary = image_dataset_from_directory(root, image_size=(8, 8), label_mode="binary", shuffle=False, verbose=False)
    assert binary.labels.shape == (60, 1) and binary.labels.dtype == np.float32
    with pytest.raises(ValueError, match="seed"):
        image_dataset_from_directory(root, validation_split=0.2, subset="training")


def test_colour_folder_trains_with_augmentation_rescaling_and_sigmoid(tmp_path):
    """Textbook code with only the imports changed (Keras itself was not run on this task here)."""
    root = _two_colours(tmp_path / "data")
    train, val = keras.utils.image_dataset_from_directory(root, image_size=(24, 24), batch_size=16,
                                                          validation_split=0.2, subset="both", seed=1, verbose=False)
    model = keras.Sequential([
        layers.Input((24, 24, 3)),
        layers.RandomFlip("horizontal"), layers.RandomRotation(0.1), layers.RandomZoom(0.2),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
        layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(train, epochs=8, validation_data=val, verbose=0, device="cpu")
    assert history.history["val_accuracy"][-1] >= 0.9
    probs = model.predict(val)
    assert probs.shape == (len(val.images), 1) and 0 <= probs.min() and probs.max() <= 1
    loss, acc = model.evaluate(val)
    assert acc == pytest.approx(np.mean((probs[:, 0] > 0.5) == val.labels[:, 0] if val.labels.ndim == 2
                                        else (probs[:, 0] > 0.5) == val.labels))


def test_follow_links_is_passed_to_the_folder_scan(tmp_path):
    """As Keras: a symlinked folder inside a class folder is read only with follow_links=True."""
    _two_colours(tmp_path / "data", n=3)
    _two_colours(tmp_path / "more", n=4)
    os.symlink(tmp_path / "more" / "red", tmp_path / "data" / "red" / "linked", target_is_directory=True)
    kept = image_dataset_from_directory(tmp_path / "data", image_size=(24, 24), batch_size=64, shuffle=False)
    followed = image_dataset_from_directory(tmp_path / "data", image_size=(24, 24), batch_size=64, shuffle=False,
                                            follow_links=True)
    assert sum(len(y) for _, y in kept) == 6 and sum(len(y) for _, y in followed) == 10


def test_random_rotation_turns_a_non_square_image_without_shearing():
    """A quarter turn moves a dot 4 px right of the centre of a 16x32 image to 4 px above or below it."""
    import torch

    from cnnlab.spec.preprocess import Affine
    x = torch.zeros(1, 1, 16, 32)
    x[0, 0, 7:9, 19:21] = 1.0  # centre (7.5, 15.5); the dot's centre is 4 px to the right
    turn = Affine(turn=(0.25, 0.25), fill_mode="constant").train()
    out = turn(x)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(32.0), indexing="ij")
    cy, cx = float((out * ys).sum() / out.sum()), float((out * xs).sum() / out.sum())
    assert abs(cx - 15.5) < 0.3 and abs(abs(cy - 7.5) - 4) < 0.3, (cy, cx)
