"""Core functions the web app added: zoo.resolve_text (never reads files) and run_folder.list_runs/describe_run."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cnnlab.runs import run_folder
from cnnlab.spec import compact, zoo
from cnnlab.spec.layers import SpecError


def test_resolve_text_agrees_with_resolve_for_names_and_compact_specs():
    for text in [*zoo.ZOO, "conv16k3:relu max2 flatten dense10:softmax"]:
        assert zoo.resolve_text(text, (28, 28, 1), 10) == zoo.resolve(text, (28, 28, 1), 10)


def test_resolve_text_reads_json_text_and_bare_layer_lists():
    spec, _ = zoo.resolve_text("conv8k3:relu flatten dense10:softmax", (28, 28, 1), 10)
    as_object = json.dumps(spec.to_dict())
    as_list = json.dumps(spec.to_dict()["layers"])
    assert zoo.resolve_text(as_object, (28, 28, 1), 10)[0] == spec
    assert zoo.resolve_text(as_list, (28, 28, 1), 10)[0] == spec
    assert compact.format(spec) == "in28x28x1 conv8k3:relu flatten dense10:softmax"


def test_resolve_text_never_opens_a_file(tmp_path: Path):
    model_file = tmp_path / "model.json"
    model_file.write_text(json.dumps({"layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10}]}))
    assert zoo.resolve(str(model_file), (28, 28, 1))  # the CLI's resolve reads it ...
    with pytest.raises(SpecError, match="cannot read token"):
        zoo.resolve_text(str(model_file), (28, 28, 1), 10)  # ... the web's never does


@pytest.mark.parametrize("text, words", [
    ("", "empty model"), ("flatten dense3", "10 classes"), ('{"layers": [{"type": ["x"]}]}', "unknown layer type"),
    ("{", "not valid JSON"), ('"seed"', "cannot read token"), ("in32x32x3 flatten dense10", "does not match"),
])
def test_resolve_text_errors_name_the_problem(text, words):
    with pytest.raises(SpecError, match=words):
        zoo.resolve_text(text, (28, 28, 1), 10)


def test_list_runs_newest_first_with_broken_ones_flagged(tmp_path: Path):
    root = tmp_path / "runs"
    assert run_folder.list_runs(root) == []
    (root / ".partial.tmp").mkdir(parents=True)
    (root / "empty").mkdir()
    bad = root / "bad-json"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"")
    (bad / "config.json").write_text("{not json")
    os.utime(root / "empty", (1_000_000, 1_000_000))
    os.utime(bad, (2_000_000, 2_000_000))  # the newer one
    rows = run_folder.list_runs(root)
    assert [r["name"] for r in rows] == ["bad-json", "empty"]
    assert all("error" in r for r in rows)
