"""The Keras-shaped facade: the lecture's code runs with only its imports changed."""
import numpy as np
import pytest

from cnnlab import models, optimizers
from cnnlab.spec import layers
from cnnlab.spec.layers import SpecError
from cnnlab.utils import to_categorical


def lecture_model():
    model = models.Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    return model


def test_lecture_snippet_summary(capsys):
    model = models.Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.summary()
    out = capsys.readouterr().out
    for expected in ["conv2d (Conv2D)", "(None, 26, 26, 32)", "320", "(None, 24, 24, 64)", "18,496",
                     "(None, 22, 22, 64)", "36,928", "Total params: 55,744"]:
        assert expected in out


def test_lecture_workflow_fit_evaluate_predict_save_load(small, tmp_path):
    x, y, xt, yt = small
    x = x.reshape((2000, 28, 28, 1)).astype("float32") / 255  # as the lecture prepares them
    model = lecture_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=64, validation_split=0.1, verbose=0)
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 2
    loss, acc = model.evaluate(xt, yt)  # uint8 (N, 28, 28, 1) works as well as float
    assert acc > 0.8 and loss < 0.7
    probs = model.predict(xt[:, :, :, 0])  # (N, 28, 28) too
    assert probs.shape == (500, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.mean(probs.argmax(1) == yt) == pytest.approx(acc)
    model.save(tmp_path / "m.safetensors")
    again = models.load_model(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(again.predict(xt), probs)
    assert again.class_names == [str(i) for i in range(10)] and again.spec == model.spec


def test_categorical_crossentropy_with_one_hot_and_optimizer_object(small):
    x, y, xt, yt = small
    model = lecture_model()
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    h = model.fit(x[:1000], to_categorical(y[:1000]), epochs=3, batch_size=32, verbose=0)
    assert h.history["learning_rate"] == [0.05, 0.05, 0.05]
    assert model.evaluate(xt, to_categorical(yt, 10), return_dict=True)["accuracy"] > 0.5


def test_input_layer_and_build_from_data(small):
    x, y, _, _ = small
    model = models.Sequential([layers.Input((28, 28, 1)), layers.Flatten(), layers.Dense(10, activation="softmax")])
    assert model.spec.input_shape == (28, 28, 1)
    lazy = models.Sequential([layers.Conv2D(4, 3), layers.Flatten(), layers.Dense(10, activation="softmax")])
    lazy.compile()
    lazy.fit(x[:100], y[:100], verbose=0)
    assert lazy.spec.input_shape == (28, 28, 1) and lazy.count_params() == 40 + 26 * 26 * 4 * 10 + 10


@pytest.mark.parametrize("bad_x,message", [
    (np.zeros((5, 32, 32, 3), np.uint8), r"shape \(5, 32, 32, 3\), expected images of shape \(N, 28, 28, 1\) or \(N, 28, 28\)"),
    (np.zeros((5, 784), np.float32), r"shape \(5, 784\)"),
    (np.zeros((5, 28, 28, 1), np.int64), "dtype int64, expected uint8"),
    (np.full((5, 28, 28, 1), 255.0, np.float32), "floats up to 255: scale them to \\[0, 1\\]"),
])
def test_wrong_images_say_what_was_expected(bad_x, message):
    model = lecture_model()
    model.compile()
    with pytest.raises(ValueError, match=message):
        model.fit(bad_x, np.zeros(5, int), verbose=0)


def test_wrong_labels_say_what_was_expected(small):
    x = small[0][:10]
    model = lecture_model()
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="labels range from 3 to 12"):
        model.fit(x, np.arange(10) + 3, verbose=0)
    with pytest.raises(ValueError, match="takes integer labels"):
        model.fit(x, to_categorical(np.arange(10)), verbose=0)
    with pytest.raises(ValueError, match=r"expected \(10,\) integer labels"):
        model.fit(x, np.zeros(7, int), verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        lecture_model().fit(x, np.zeros(10, int))


def test_compile_rejects_unknown_choices():
    model = lecture_model()
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        model.compile(loss="hinge")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        model.compile(optimizer="adadelta")
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        model.compile(metrics=["f1"])


def test_add_validates_names_and_order():
    model = models.Sequential([layers.Dense(3, name="a")])
    with pytest.raises(SpecError, match="used twice"):
        model.add(layers.Dense(3, name="a"))
    with pytest.raises(SpecError, match="Input must come before"):
        model.add(layers.Input((28, 28, 1)))


def test_keras_layer_objects_in_sequential():
    from cnnlab import backend
    from cnnlab import layers as KL
    backend.clear_session()
    model = models.Sequential([KL.Conv2D(4, 3, activation="relu"), KL.Conv2D(4, 3), KL.Flatten(), KL.Dense(10)])
    model.build((None, 12, 12, 1))  # Keras's form, batch axis first
    assert [layer.name for layer in model.layers] == ["conv2d", "conv2d_1", "flatten", "dense"]
    assert model.layers[1].output.shape == (None, 8, 8, 4) and model.input.shape == (None, 12, 12, 1)
    assert model.count_params() == 40 + 148 + 8 * 8 * 4 * 10 + 10 == sum(w.size for w in model.get_weights())
    second = models.Sequential([KL.Input((12, 12, 1)), KL.Conv2D(2, 3), layers.Conv2D(2, 3)])  # object, then spec
    assert [layer.name for layer in second.layers] == ["conv2d_2", "conv2d_1"]  # a spec is named in its model
    model.layers[0].trainable = False  # a layer object's flag is settable (specs stay frozen)
    assert model.spec.layers[0].trainable is False and model.spec.to_dict()["layers"][0]["trainable"] is False
    assert models.Sequential(trainable=False).trainable is False
