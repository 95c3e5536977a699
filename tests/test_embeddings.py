"""Streaming embeddings of image files (cnnlab.runs.embeddings): the values against the plain backbone
on the ImageNet evaluation crop (through cnnlab's one decoder, which may
decode a large JPEG at a reduced DCT scale), the per-file cache (reuse, a changed file recomputed, a stopped run resumed)
and a bad file reported beside the others. Real photos from scikit-image."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.backbones import embedding_cache
from cnnlab.backbones.efficientnet_lite import EfficientNetLite
from cnnlab.backbones.preprocess import preprocess_image
from cnnlab.backbones.weights import load_pretrained, load_state_strict
from cnnlab.datasets.image_files import open_image
from cnnlab.runs import embeddings

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def embedder():
    return embeddings.backbone_embedder("lite0", dtype=torch.float32)


@pytest.fixture
def photos(tmp_path):
    files = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(skimage_data, name)()).save(path, quality=92)
        files.append(path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return files + [tmp_path / "broken.jpg"]


def test_embeddings_match_the_plain_backbone_on_the_evaluation_crop(embedder, photos, tmp_path):
    result = embeddings.embed_files(photos, embedder, cache=tmp_path / "cache", progress=False, flip=True)
    assert list(result.errors) == [4] and "truncated" in result.errors[4]
    assert result.vectors.shape == (5, 1280) and result.vectors.dtype == torch.float32
    assert result.ok.tolist() == [True, True, True, True, False]
    plain = EfficientNetLite("lite0", include_top=False)
    load_state_strict(plain, load_pretrained("lite0"))
    plain.eval()
    with torch.no_grad():
        x = torch.stack([preprocess_image(open_image(p, at_least=256)) for p in photos[:4]])
        reference = plain(x).mean(dim=(2, 3))
        mirrored = plain(x.flip(3)).mean(dim=(2, 3))
    assert torch.allclose(result.vectors[:4], reference, atol=2e-3)
    assert torch.allclose(result.mirrored[:4], mirrored, atol=2e-3)
    assert not torch.allclose(result.vectors[:4], result.mirrored[:4], atol=0.05)
    assert (result.vectors[4] == 0).all()


def test_cache_reuses_rows_recomputes_a_changed_file_and_resumes(embedder, photos, tmp_path, monkeypatch):
    calls = []
    real_call = embeddings.Embedder.__call__
    monkeypatch.setattr(embeddings.Embedder, "__call__", lambda self, x, flip=False: calls.append(len(x)) or real_call(self, x, flip))
    monkeypatch.setattr(embedding_cache, "CHUNK_ROWS", 1)
    cache = tmp_path / "cache"
    good = photos[:4]

    class Stop(Exception):
        pass

    def stop_after_two(self, done):
        if done >= 2:
            raise Stop
    monkeypatch.setattr(embeddings.CountProgress, "update", stop_after_two)
    with pytest.raises(Stop):
        embeddings.embed_files(good, embedder, cache=cache, progress=False, batch_size=1)
    monkeypatch.undo()
    monkeypatch.setattr(embeddings.Embedder, "__call__", lambda self, x, flip=False: calls.append(len(x)) or real_call(self, x, flip))
    calls.clear()
    first = embeddings.embed_files(good, embedder, cache=cache, progress=False)
    assert sum(calls) == 2  # the two the stopped run had written were read back
    fresh = embeddings.embed_files(good, embedder, cache=False, progress=False)
    assert torch.allclose(first.vectors, fresh.vectors, atol=1e-5)

    calls.clear()
    again = embeddings.embed_files(good, embedder, cache=cache, progress=False)
    assert sum(calls) == 0 and torch.equal(again.vectors, first.vectors)

    # Same size, same mtime, other pixels: the ctime (and inode, via a rename) still tells the change.
    st = os.stat(good[0])
    replacement = good[0].with_name("new.jpg")
    Image.fromarray(skimage_data.coffee()).save(replacement, quality=92)
    os.replace(replacement, good[0])
    os.utime(good[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    calls.clear()
    changed = embeddings.embed_files(good, embedder, cache=cache, progress=False)
    assert sum(calls) == 1
    assert torch.allclose(changed.vectors[0], first.vectors[1], atol=1e-5)  # now the coffee photo
    assert torch.equal(changed.vectors[1:], first.vectors[1:])


def test_a_damaged_or_unwritable_cache_costs_only_recomputing(tmp_path):
    """What the removed per-folder photo feature cache promised, for the per-file cache photo training now uses."""
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    store = embedding_cache.EmbeddingCache(tmp_path / "cache", 3)
    for key, row in zip(["a", "b"], rows):
        store.add(key, row)
    store.flush()
    out = np.zeros((3, 3), np.float32)
    assert store.fill(["b", "x", "a"], out).tolist() == [True, False, True] and (out[[0, 2]] == rows[::-1]).all()
    (chunk,) = (tmp_path / "cache").glob("*.npz")
    chunk.write_bytes(chunk.read_bytes()[:40])  # truncated
    assert not store.fill(["a", "b"], np.zeros((2, 3), np.float32)).any()
    (tmp_path / "file").write_text("a file where the cache folder should be")
    unwritable = embedding_cache.EmbeddingCache(tmp_path / "file" / "cache", 3)
    unwritable.add("a", rows[0])
    unwritable.flush()  # no error: the rows are computed again next time
    assert not unwritable.pending_keys and not unwritable.fill(["a"], np.zeros((1, 3), np.float32)).any()


def test_a_file_rewritten_within_its_clock_tick_gets_a_new_key(tmp_path, monkeypatch):
    """Two writes in one timestamp tick leave size, mtime and ctime alike: a recent file is keyed by content."""
    path = tmp_path / "a.png"
    path.write_bytes(b"first version")
    frozen = os.stat(path)
    real_stat = os.stat
    monkeypatch.setattr(embedding_cache.os, "stat",
                        lambda p, **kw: frozen if Path(p) == path else real_stat(p, **kw))
    before = embedding_cache.file_key(path)
    path.write_bytes(b"other version")  # same size; the patched stat reports the same stamps
    assert before != embedding_cache.file_key(path) and "sha256:" in before
    monkeypatch.setattr(embedding_cache, "RACY_NS", 0)  # long after the change: the stamps alone
    assert "sha256:" not in embedding_cache.file_key(path)


def test_plain_embeddings_read_the_rows_an_audit_cached_with_mirror_images(embedder, photos, tmp_path, monkeypatch):
    """`similar` after `data check`: the audit's rows (plain + mirrored) answer a plain request, none computed."""
    monkeypatch.setattr(embeddings, "cache_folder", lambda e, flip: tmp_path / ("flip" if flip else "plain"))
    audited = embeddings.embed_files(photos[:4], embedder, flip=True, progress=False)
    plain = embeddings.embed_files(photos, embedder, progress=False)
    assert audited.computed == 4 and plain.computed == 0  # the broken file is tried again and fails again
    assert torch.equal(plain.vectors[:4], audited.vectors) and list(plain.errors) == [4]
    assert embeddings.embed_files(photos[:4], embedder, progress=False).computed == 0  # read from them again
