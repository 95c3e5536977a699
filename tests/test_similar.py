"""`cnnlab similar imagenet IMAGE --in DIR`: exact cosine search over the folder's embeddings; a resized,
recompressed copy of the query comes first, and the order equals a numpy cosine ranking of the same vectors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import cli
from cnnlab.backbones.search import nearest
from cnnlab.runs import embeddings

skimage_data = pytest.importorskip("skimage.data")


def test_nearest_equals_a_numpy_cosine_ranking():
    rng = np.random.default_rng(0)
    v, q = rng.normal(size=(200, 32)).astype(np.float32), rng.normal(size=32).astype(np.float32)
    cos = v @ q / np.linalg.norm(v, axis=1) / np.linalg.norm(q)
    got = nearest(torch.from_numpy(q), torch.from_numpy(v), 5)
    assert [r for r, _ in got] == list(np.argsort(-cos)[:5])
    assert np.allclose([s for _, s in got], np.sort(cos)[::-1][:5], atol=1e-5)


def test_similar_finds_the_copy_of_the_query_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embeddings, "cache_folder", lambda embedder, flip: tmp_path / "cache" / embedder.name)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("astronaut", "coffee", "rocket"):
        Image.fromarray(getattr(skimage_data, name)()).save(folder / f"{name}.jpg", quality=90)
    cat = Image.fromarray(skimage_data.chelsea())
    cat.resize((cat.width * 2 // 3, cat.height * 2 // 3)).save(folder / "sub" / "small-cat.jpg", quality=50)
    query = tmp_path / "chelsea.png"
    cat.save(query)
    assert cli.main(["similar", "imagenet", str(query), "--in", str(folder), "--top-k", "3", "--json"]) == 0
    matches = json.loads(capsys.readouterr().out)
    assert [m["path"].split("/")[-1] for m in matches][0] == "small-cat.jpg"
    assert len(matches) == 3 and matches[0]["similarity"] > 0.9 > matches[1]["similarity"]
    assert cli.main(["similar", "imagenet", str(query), "--in", str(folder), "--top-k", "0"]) == 1
