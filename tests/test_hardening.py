"""Bounded work and budgets: every number from a user has a limit, refused in one line before any work."""
from __future__ import annotations

import json
import os
import time

import pytest
from safetensors.torch import save as st_save

from cnnlab.cli.commands import main
from cnnlab.datasets.folders.scan import scan
from cnnlab.runs import model_file
from cnnlab.spec import layers as L
from cnnlab.spec.build import build
from cnnlab.spec.memory import MemoryBudgetError, check_memory, estimate_bytes
from cnnlab.train.checkpoints import Checkpointer, partial_folder
from cnnlab.train.config import TrainConfig


def _error(capsys, argv: list[str], limit_s: float = 30.0) -> str:
    started = time.perf_counter()
    assert main(argv) != 0
    assert time.perf_counter() - started < limit_s
    return capsys.readouterr().err


def test_huge_input_shape_model_file_fails_fast(tmp_path):
    """A 20-parameter model file whose spec asks for a 100000x100000 input: refused before any tensor."""
    module = build(L.ModelSpec([L.GlobalAveragePooling2D(), L.Dense(10)], (28, 28, 1)))
    spec = {"input_shape": [100000, 100000, 1], "layers": [{"type": "GlobalAveragePooling2D"},
                                                            {"type": "Dense", "units": 10}]}
    meta = {"format_version": 1, "name": "x", "spec": spec, "class_names": [str(i) for i in range(10)]}
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    assert sum(v.numel() for v in state.values()) == 20
    path = tmp_path / "big.safetensors"
    path.write_bytes(st_save(state, metadata={"cnnlab": json.dumps(meta)}))
    started = time.perf_counter()
    with pytest.raises(model_file.ModelFileError, match="too large"):
        model_file.read_model(path)
    assert time.perf_counter() - started < 10


def test_memory_estimate_matches_hand_count_and_refuses(monkeypatch):
    spec = L.ModelSpec([L.Conv2D(4096, 1, activation="relu"), L.GlobalAveragePooling2D(),
                        L.Dense(10, activation="softmax")], (28, 28, 1))
    params = (1 * 4096 + 4096) + (4096 * 10 + 10)
    activations = (28 * 28 * 1 + 28 * 28 * 4096 + 4096 + 10) * 64 * 4
    assert estimate_bytes(spec, 64, training=True) == 2 * activations + 4 * 4 * params
    assert estimate_bytes(spec, 1, training=False) == activations // 64 + 4 * params
    monkeypatch.setenv("CNNLAB_MEMORY_LIMIT", str(100 << 20))
    with pytest.raises(MemoryBudgetError, match=r"needs about 1\.\d+ GB .* limit of 100\.0 MB"):
        check_memory(spec, 64, True, "training")
    assert check_memory(spec, 1, False, "predict") < 100 << 20


def test_train_refused_by_memory_budget(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNLAB_MEMORY_LIMIT", str(100 << 20))
    err = _error(capsys, ["train", "--model", "conv4096k1:relu gap dense10:softmax", "--batch-size", "64",
                          "--subset", "256", "--out", str(tmp_path / "r"), "--quiet"])
    assert "needs about" in err and "limit of 100.0 MB" in err
    assert not (tmp_path / "r").exists() and not partial_folder(tmp_path / "r").exists()


@pytest.mark.parametrize("argv, says", [
    (["show", "mnist", "--grid", "1000x1000"], "at most 400 images"),
    (["explain", "conv", "--input", "100000000", "--kernel", "3"], "at most 256 a side"),
    (["train", "--epochs", str(10**21)], "epochs must be an integer in [1, 100000]"),
    (["train", "--seed", str(10**24)], "seed must be None or an integer in [0, 2**63-1]"),
    (["train", "--lr", "inf"], "lr must be a finite positive number"),
    (["train", "--lr", "nan"], "lr must be a finite positive number"),
])
def test_user_numbers_are_bounded(capsys, tmp_path, monkeypatch, argv, says):
    monkeypatch.chdir(tmp_path)
    err = _error(capsys, argv + (["--subset", "64", "--out", str(tmp_path / "r")] if argv[0] == "train" else []))
    assert says in err
    assert not list(tmp_path.glob("*.partial"))  # nothing left behind


def test_checkpoint_every_negative_leaves_no_folder(capsys, tmp_path):
    err = _error(capsys, ["train", "--subset", "64", "--checkpoint-every", "-1", "--out", str(tmp_path / "r")])
    assert "--checkpoint-every must be" in err
    assert not partial_folder(tmp_path / "r").exists()
    with pytest.raises(ValueError, match="checkpoint-every"):
        Checkpointer.create(tmp_path / "s", {}, every=-5)
    assert not partial_folder(tmp_path / "s").exists()


def test_config_bounds_directly():
    for bad in ({"epochs": 0}, {"epochs": 100_001}, {"seed": -1}, {"seed": 2**63}, {"lr": float("inf")},
                {"batch_size": 0}, {"weight_decay": float("nan")}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    assert TrainConfig(seed=2**63 - 1, epochs=100_000).seed == 2**63 - 1


def test_input_shape_bounds():
    L.ModelSpec([L.Flatten()], (8192, 16, 1))
    for shape in [(8193, 1, 1), (8192, 8192 + 1, 1)]:
        with pytest.raises(L.SpecError, match="too large"):
            L.ModelSpec([L.Flatten()], shape)


def _png(path):
    from PIL import Image
    Image.new("L", (8, 8), 128).save(path)


def test_symlink_loop_counts_each_image_once(tmp_path):
    root = tmp_path / "pets"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        _png(root / cls / "a.png")
    (root / "cat" / "loop").symlink_to(root / "cat", target_is_directory=True)  # a folder pointing at itself
    (root / "dog" / "up").symlink_to(root, target_is_directory=True)  # and at an ancestor
    (root / "dog" / "cats").symlink_to(root / "cat", target_is_directory=True)  # a sibling: same files
    os.mkfifo(root / "dog" / "pipe.png")  # not a regular file: never opened
    default = scan(root)
    assert [len(default.splits["train"][c]) for c in ("cat", "dog")] == [1, 1]
    followed = scan(root, follow_links=True)
    cats, dogs = followed.splits["train"]["cat"], followed.splits["train"]["dog"]
    assert (len(cats), len(dogs)) == (1, 1)  # dog/cats/a.png is cat/a.png: counted once; the loops are not entered
    assert any("not a regular file" in b.reason for b in followed.skipped)


def test_train_on_proc_ends_with_an_error(capsys, tmp_path):
    err = _error(capsys, ["train", "--data", "/proc/self", "--out", str(tmp_path / "r")])
    assert "system folder" in err
