"""The Data tab in real Chromium (Playwright) against a live server with a --data folder of real photos with
planted faults (tests/audit_support.py): the audit shows the flipped labels; a confirmed relabel moves the file,
its undo restores the exact bytes at the exact paths, and the folder's journal lists both; "find similar" works."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")
pytest.importorskip("skimage.data")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
import audit_support  # noqa: E402
import uvicorn  # noqa: E402
import web_support  # noqa: E402

from cnnlab.datasets.folders import curate  # noqa: E402
from cnnlab.runs import embeddings  # noqa: E402
from cnnlab.web.app import create_app  # noqa: E402

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-dev-shm-usage"]


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and p.name != curate.JOURNAL}


@pytest.mark.slow
def test_relabel_and_undo_in_the_data_tab_restore_the_exact_files(tmp_path, monkeypatch):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run .ci/install-browser.sh (or set CNNLAB_CHROMIUM)")
    monkeypatch.setattr(embeddings, "cache_folder", lambda embedder, flip: tmp_path / "cache" / f"{embedder.name}{flip}")
    root = tmp_path / "photos"
    truth = audit_support.planted_folder(root)
    before = _tree(root)
    app = create_app(runs_dir=tmp_path / "runs", data_dirs=[root])
    problems: list[str] = []
    with web_support.uvicorn_in_thread(uvicorn.Config(app, log_level="warning")) as port, \
            sync_api.sync_playwright() as p:
        base = f"http://127.0.0.1:{port}"
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("request", lambda r: None if r.url.startswith((base, "data:")) else problems.append(r.url))
        page.goto(base + "/")
        page.click("nav button[data-view=data]")
        page.wait_for_function("() => document.querySelector('#data-folder').options.length === 1")
        page.click("#data-audit")
        page.wait_for_selector("#data-suspects .data-item", timeout=600_000)
        item = page.locator("#data-suspects .data-item").first
        path = item.get_attribute("data-path")
        assert path in truth["flips"]  # the first suspect is one of the planted flips
        true_class = truth["flips"][path]
        button = item.locator("button[data-action=relabel]")
        button.click()
        assert (root / path).exists()  # armed only: nothing moved yet
        button.click()
        page.wait_for_selector("#data-journal li")
        moved = f"{path.split('/')[0]}/{true_class}/{path.split('/')[-1]}"
        assert not (root / path).exists() and (root / moved).exists()
        assert hashlib.sha256((root / moved).read_bytes()).hexdigest() == before[path]

        page.click("#data-journal li[data-id='1'] button[data-action=undo]")
        page.wait_for_function("() => document.querySelectorAll('#data-journal li').length === 2")
        assert _tree(root) == before  # same bytes, same paths, nothing else changed

        page.locator("#data-groups button[data-action=similar]").first.click()
        page.wait_for_selector("#data-similar .data-item", timeout=600_000)
        browser.close()
    entries = [json.loads(line) for line in (root / curate.JOURNAL).read_text().splitlines()]
    assert [(e["action"], e["from"], e["to"]) for e in entries] == [("relabel", path, moved), ("undo", moved, path)]
    assert not problems, problems
