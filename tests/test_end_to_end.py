"""End to end on real MNIST: one epoch of the default recipe clears an accuracy floor."""
import pytest

from cnnlab.runs.run_folder import train_run
from cnnlab.spec import zoo
from cnnlab.train.config import TrainConfig


@pytest.mark.slow
def test_default_recipe_on_full_mnist_reaches_99_percent(mnist, tmp_path):
    spec, _ = zoo.resolve("seed", mnist.input_shape)
    folder, history, evaluation = train_run(mnist, spec, TrainConfig(device="cpu"), tmp_path / "run", figures=False)
    # The default recipe (one epoch) measured 99.21%, 99.23% and 99.24% with seeds 0, 1 and 2 here.
    assert evaluation.accuracy >= 0.99, evaluation.accuracy
    assert history.history["accuracy"][0] > 0.9
    assert (folder / "model.safetensors").is_file()
