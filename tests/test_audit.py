"""`cnnlab data check DIR` with embeddings: planted near-duplicates (resized, recompressed, mirrored, cropped copies
across classes and splits) and flipped labels in real photos from scikit-image (tests/audit_support.py) are found
with at least 90% recall and 90% precision, each flip with its true class suggested; today's keys stay."""
from __future__ import annotations

import json

import audit_support
import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import cli
from cnnlab.runs import audit, embeddings

pytest.importorskip("skimage.data")
pytest.importorskip("sklearn")


@pytest.mark.slow
def test_planted_duplicates_and_flipped_labels_are_found(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embeddings, "cache_folder", lambda embedder, flip: tmp_path / "cache" / embedder.name)
    root = tmp_path / "photos"
    truth = audit_support.planted_folder(root)
    sheet = tmp_path / "sheet.png"
    assert cli.main(["data", "check", str(root), "--json", "--embeddings", "--sheet", str(sheet)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"counts", "duplicates", "imbalance", "bad_files"} <= set(report)  # today's report is kept

    groups = [set(g["paths"]) for g in report["near_duplicates"]]
    found = [pair for pair in truth["pairs"] if any(set(pair) <= g for g in groups)]
    true_groups = [g for g in groups if any(set(pair) <= g for pair in truth["pairs"])]
    assert len(found) >= 0.9 * len(truth["pairs"]), (found, groups)
    assert len(true_groups) >= 0.9 * len(groups), groups
    leak = next(g for g in report["near_duplicates"] if set(truth["pairs"][1]) <= set(g["paths"]))
    assert leak["splits"] == ["train", "test"] and 0 < leak["similarity"] <= 1

    suspects = {s["path"]: s for s in report["suspect_labels"]}
    hits = [p for p in truth["flips"] if p in suspects]
    assert len(hits) >= 0.9 * len(truth["flips"]), suspects
    assert len(hits) >= 0.9 * len(suspects), suspects
    assert all(suspects[p]["suggested"] == truth["flips"][p] for p in hits)
    assert all(0.5 <= s["confidence"] <= 1 for s in suspects.values())

    with Image.open(sheet) as img:
        assert img.height == len(groups) * 188
    assert cli.main(["data", "check", str(root), "--embeddings"]) == 0  # the embeddings now come from the cache
    text = capsys.readouterr().out
    assert "near-duplicates (" in text and "likely label errors (" in text and "leakage" in text


def test_similar_pairs_compare_with_the_mirror_image_and_keep_nearest_neighbours():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(50, 64, generator=gen)
    mirrored = torch.randn(50, 64, generator=gen)
    v[7] = mirrored[3] * 2  # 7 is a mirrored copy of 3
    v[9] = v[2] + 0.01 * torch.randn(64, generator=gen)
    pairs = audit.similar_pairs(v, mirrored, threshold=0.9)
    assert set(pairs) == {(3, 7), (2, 9)}
    assert pairs[(3, 7)] == pytest.approx(1.0, abs=1e-5)
    assert audit.groups_of([(0, 1, 0.95), (1, 2, 0.93), (5, 6, 0.99)], 8) == [([5, 6], 0.99), ([0, 1, 2], 0.93)]


def test_confident_learning_flags_only_the_label_that_another_class_claims():
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3]])  # class 0 threshold: 0.65
    labels = np.array([0, 0, 1, 1, 1])  # the last is filed under 1 but looks like 0
    suspects = audit.suspect_labels(probs, labels)
    assert [(s.index, s.suggested) for s in suspects] == [(4, 0)]
