"""Textbook-style code (the convnet chapters' next steps), written for Keras and run with only the imports
changed: `import cnnlab as keras; from cnnlab import layers`. Where a number is asserted, real Keras 3 (torch
backend) runs the same code on the same data in the same test."""
import os

import numpy as np
import pytest

import cnnlab

os.environ.setdefault("KERAS_BACKEND", "torch")


def shapes(n, side=24, seed=0):
    """Images of a filled square or disc (random place, size, colours) and their masks: 0 background,
    1 square, 2 disc; the label of an image is its shape (0 square, 1 disc)."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, side, side, 3), np.uint8)
    masks = np.zeros((n, side, side), np.int64)
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:side, :side]
    for i in range(n):
        images[i] = rng.integers(0, 90, 3, dtype=np.uint8)
        r = rng.integers(4, side // 3)
        cy, cx = rng.integers(r, side - r, 2)
        inside = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r) if labels[i] == 0 else (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        images[i][inside] = rng.integers(150, 256, 3, dtype=np.uint8)
        masks[i][inside] = labels[i] + 1
    return images, masks, labels


def augmented_convnet(keras, layers):
    data_augmentation = keras.Sequential(
        [layers.RandomFlip("horizontal"), layers.RandomRotation(0.1), layers.RandomZoom(0.2)])
    inputs = keras.Input(shape=(24, 24, 3))
    x = data_augmentation(inputs)
    x = layers.Rescaling(1.0 / 255)(x)
    x = layers.Conv2D(filters=16, kernel_size=3, activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=2)(x)
    x = layers.Conv2D(filters=32, kernel_size=3, activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return data_augmentation, keras.Model(inputs=inputs, outputs=outputs)


def test_augmentation_pipeline_inside_a_functional_convnet_and_a_look_at_augmented_images():
    import cnnlab as keras
    from cnnlab import layers
    keras.backend.clear_session()  # a fresh session, as the book's chapter starts: the metric is named "auc"
    images, _, labels = shapes(64)
    data_augmentation, model = augmented_convnet(keras, layers)
    model.compile(loss="binary_crossentropy", optimizer="rmsprop", metrics=["accuracy", keras.metrics.AUC()])
    history = model.fit(images, labels, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(history.history)
    assert model.layers[1] is data_augmentation
    augmented_images = data_augmentation(images[:9])  # the book's look at nine augmented versions
    for i in range(9):
        picture = augmented_images[i].numpy().astype("uint8")  # what plt.imshow gets
        assert picture.shape == (24, 24, 3)
    assert not np.allclose(np.asarray(augmented_images), images[:9])


def test_fine_tuning_the_top_blocks_of_the_pretrained_base():
    import cnnlab as keras
    from cnnlab import layers
    images, _, labels = shapes(32, side=64)
    conv_base = keras.applications.EfficientNetLite0(weights="imagenet", include_top=False, input_shape=(64, 64, 3))
    conv_base.trainable = False
    inputs = keras.Input(shape=(64, 64, 3))
    x = conv_base(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile(loss="binary_crossentropy", optimizer="rmsprop", metrics=["accuracy"])
    model.fit(images, labels, epochs=1, batch_size=16, verbose=0)
    frozen_trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    conv_base.trainable = True
    for layer in conv_base.layers[:-4]:
        layer.trainable = False
    model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.RMSprop(learning_rate=1e-5),
                  metrics=["accuracy"])
    history = model.fit(images, labels, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    tuned = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert frozen_trainable == 1281 and tuned == 1281 + sum(x.count_params() for x in conv_base.layers[-4:])


def segmentation_net(keras, layers, softmax=True):
    inputs = keras.Input(shape=(24, 24, 3))
    x = layers.Rescaling(1.0 / 255)(inputs)  # the book's first layer: pixels 0-255 in
    x = layers.Conv2D(16, 3, strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
    x = layers.Conv2D(32, 3, strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, strides=2, activation="relu", padding="same")(x)
    x = layers.UpSampling2D(2)(x)
    x = layers.Conv2D(16, 3, activation="relu", padding="same")(x)
    outputs = layers.Conv2D(3, 1, activation="softmax" if softmax else None, padding="same")(x)
    return keras.Model(inputs, outputs)


def pixel_accuracy(keras, layers, train, test):
    """The book's form (a per-pixel softmax and "sparse_categorical_crossentropy") for cnnlab; Keras 3.15 with
    torch 2.13 fails that form's backward pass ("grad_input must be contiguous"), so its side ends in logits with
    the same loss taken from_logits: the same model and loss, the softmax in the loss."""
    ours = keras.__name__ == "cnnlab"
    if not ours:
        keras.utils.set_random_seed(0)
    model = segmentation_net(keras, layers, softmax=ours)
    loss = "sparse_categorical_crossentropy" if ours else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    kwargs = {} if ours else {"verbose": 0}
    model.fit(train[0], train[1], epochs=16, batch_size=32, verbose=0)
    probabilities = model.predict(test[0], **kwargs)
    assert probabilities.shape == (*test[1].shape, 3)
    if ours:  # predict gives per-pixel probabilities
        np.testing.assert_allclose(probabilities.sum(-1), 1, atol=1e-4)
    evaluated = model.evaluate(test[0], test[1][..., None], return_dict=True, **kwargs)
    mine = float((probabilities.argmax(-1) == test[1]).mean())
    assert evaluated["accuracy"] == pytest.approx(mine, abs=1e-6)
    return mine


@pytest.mark.slow
def test_small_segmentation_net_reaches_the_pixel_accuracy_keras_reaches():
    keras = pytest.importorskip("keras")
    # the book's form on both sides: uint8 pixels in, the model's own Rescaling(1/255) first
    train, test = shapes(384, seed=1), shapes(96, seed=2)
    baseline = float((test[1] == 0).mean())  # everything background
    theirs = pixel_accuracy(keras, keras.layers, train, test)
    ours = pixel_accuracy(cnnlab, cnnlab.layers, train, test)
    print(f"pixel accuracy: cnnlab {ours:.4f}, keras {theirs:.4f}, all-background {baseline:.4f}")
    assert theirs > baseline + 0.05
    assert ours >= theirs - 0.03


def test_two_input_model():
    import cnnlab as keras
    from cnnlab import layers
    images, _, labels = shapes(48)
    flipped = images[:, ::-1].copy()
    photo = keras.Input(shape=(24, 24, 3), name="photo")
    mirror = keras.Input(shape=(24, 24, 3), name="mirror")
    features = [layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3, activation="relu")(layers.Rescaling(1 / 255)(t)))
                for t in (photo, mirror)]
    x = layers.concatenate(features)
    shape_out = layers.Dense(2, activation="softmax", name="shape")(x)
    bright_out = layers.Dense(1, activation="sigmoid", name="bright")(x)
    model = keras.Model(inputs=[photo, mirror], outputs=[shape_out, bright_out])
    model.compile(optimizer="adam", loss={"shape": "sparse_categorical_crossentropy", "bright": "binary_crossentropy"},
                  loss_weights={"shape": 1.0, "bright": 0.2}, metrics={"shape": ["accuracy"], "bright": ["auc"]})
    bright = (images.mean((1, 2, 3)) > images.mean()).astype("float32")
    history = model.fit({"photo": images, "mirror": flipped}, {"shape": labels, "bright": bright}, epochs=3,
                        batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert {"shape_loss", "bright_loss", "shape_accuracy", "bright_auc"} <= set(history.history)
    shape_p, bright_p = model.predict([images, flipped])
    assert shape_p.shape == (48, 2) and bright_p.shape == (48, 1)
