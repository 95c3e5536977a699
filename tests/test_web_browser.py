"""The web page in a real browser: headless Debian Chromium driven by Playwright, against a live uvicorn.

Skips (saying why) when Playwright or Chromium is missing; `.ci/install-browser.sh` installs Chromium.
CNNLAB_CHROMIUM names another Chromium binary. CNNLAB_SCREENSHOTS=DIR saves screenshots of the views
there (docs/images holds the README's); CNNLAB_WEB_RUN=RUN serves that run instead of the tiny one.
The photo test serves `imagenet`, the pretrained classifier, as `cnnlab serve imagenet` does.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'cnnlab[web]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
import uvicorn  # noqa: E402
import web_support  # noqa: E402
from PIL import Image  # noqa: E402

from cnnlab.datasets.image_files import to_model_input  # noqa: E402
from cnnlab.models import load_model  # noqa: E402
from cnnlab.web.app import create_app  # noqa: E402

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-dev-shm-usage"]
SHOTS = os.environ.get("CNNLAB_SCREENSHOTS")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("CNNLAB_WEB_RUN"):
        return Path(os.environ["CNNLAB_WEB_RUN"])
    return web_support.tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run .ci/install-browser.sh (or set CNNLAB_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@contextmanager
def serving(app):
    """uvicorn on a free 127.0.0.1 port in a thread; yields its base URL."""
    with web_support.uvicorn_in_thread(uvicorn.Config(app, log_level="warning")) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained: Path, browser):
    """The tiny MNIST run's server; yields (base URL, runs folder)."""
    runs_dir = web_support.runs_dir_with_tiny_run(tmp_path_factory.mktemp("browser"), trained)
    with serving(create_app(runs_dir=runs_dir)) as base:
        yield base, runs_dir


@pytest.fixture
def page(browser, server):
    base, _ = server
    with opened(browser, base) as pg:
        yield pg


@contextmanager
def opened(browser, base: str):
    """A fresh page; fails the test on a JS error, a console error (CSP violations are) or any outside request."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # A 4xx answer is logged by the browser as a failed load; the page shows those errors itself.
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
          if m.type == "error" and "the server responded with a status of 4" not in m.text else None)
    pg.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:"))
          else problems.append(f"outside: {r.url}"))
    pg.goto(base + "/")
    pg.wait_for_selector("#served:not(.none)")
    yield pg
    context.close()
    assert not problems, problems


def shot(pg, name: str, full_page: bool = True) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(Path(SHOTS) / name), full_page=full_page)


def draw(pg, points: list[tuple[float, float]]) -> None:
    """One pen stroke through `points`, given as fractions of the pad's size."""
    box = pg.locator("#pad").bounding_box()
    at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    pg.mouse.move(*at[0])
    pg.mouse.down()
    for (x0, y0), (x1, y1) in zip(at, at[1:]):
        for t in range(1, 9):
            pg.mouse.move(x0 + (x1 - x0) * t / 8, y0 + (y1 - y0) * t / 8)
    pg.mouse.up()


def settled(page) -> None:
    """Wait until the page shows the prediction for what is on the pad now."""
    page.wait_for_selector("#pad[data-state=idle]")


def test_draw_a_one_and_see_prediction_and_maps(page):
    draw(page, [(0.5, 0.15), (0.52, 0.85)])
    settled(page)
    page.wait_for_function("() => document.querySelectorAll('#maps figure').length >= 5")
    page.wait_for_function("() => document.querySelector('#top-class').textContent !== '–'")
    assert page.text_content("#top-class") == "1"
    assert len(page.query_selector_all("#bars .bar")) == 10
    assert page.get_attribute("#input-image", "src").startswith("data:image/png;base64,")
    captions = page.locator("#maps figcaption").all_text_contents()
    assert [c.split()[0] for c in captions] == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "conv2d_2"]
    assert "(None, 26, 26, 32)" in captions[0]
    page.wait_for_function("() => [...document.querySelectorAll('#maps img')].every((i) => i.naturalWidth > 0)")

    page.click("#maps figure >> nth=0")  # enlarge a layer
    assert page.is_visible("#zoom")
    assert page.text_content("#zoom-title").startswith("conv2d (Conv2D)")
    page.keyboard.press("Escape")
    assert not page.is_visible("#zoom")

    one = page.get_attribute("#input-image", "src")
    draw(page, [(0.3, 0.3), (0.7, 0.3)])  # a second stroke: the model's input changes ...
    settled(page)
    assert page.get_attribute("#input-image", "src") != one
    page.click("#undo")  # ... and undoing it brings back exactly the first input
    settled(page)
    assert page.get_attribute("#input-image", "src") == one
    assert page.text_content("#top-class") == "1"
    page.click("#clear")
    assert page.text_content("#top-class") == "–"
    assert page.locator("#maps figure").count() == 0

    draw(page, [(0.25, 0.22), (0.75, 0.22)])  # a 7 in two strokes
    draw(page, [(0.75, 0.22), (0.45, 0.82)])
    settled(page)
    assert page.text_content("#top-class") == "7"
    shot(page, "web-try.png")


def test_draw_with_a_finger(browser, server):
    base, _ = server
    context = browser.new_context(viewport={"width": 800, "height": 900}, has_touch=True, is_mobile=True)
    try:
        pg = context.new_page()
        pg.goto(base + "/")
        pg.wait_for_selector("#served:not(.none)")
        box = pg.locator("#pad").bounding_box()
        x = box["x"] + box["width"] / 2
        ys = [box["y"] + box["height"] * (0.15 + 0.7 * t / 12) for t in range(13)]
        cdp = context.new_cdp_session(pg)  # a real touch sequence; Playwright's touchscreen only taps
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": ys[0]}]})
        for y in ys[1:]:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        settled(pg)
        assert pg.text_content("#top-class") == "1"
        assert pg.locator("#maps figure").count() == 5
        assert pg.evaluate("() => window.scrollY") == 0  # the stroke drew; it did not scroll the page
    finally:
        context.close()


def test_upload_an_mnist_test_image_and_see_its_label(page, trained, tmp_path):
    data = web_support.mnist()
    model = load_model(trained)
    # the first test image the model gets right with confidence, as the core itself computes
    for i in range(50):
        x = to_model_input(Image.fromarray(data.x_test[i][:, :, 0]), model.spec.input_shape, model.preprocessing)
        probs = model.predict(x[None])[0]
        if probs.argmax() == data.y_test[i] and probs.max() > 0.9:
            break
    path = tmp_path / f"mnist-test-{i}.png"
    path.write_bytes(web_support.png_bytes(data.x_test[i]))
    page.set_input_files("#upload", str(path))
    settled(page)
    page.wait_for_function("() => document.querySelectorAll('#maps figure').length >= 5")
    assert page.text_content("#top-class") == str(data.y_test[i])
    assert page.locator("#predict-error").text_content() == ""

    # dropped on the pad, as a file dragged from the desktop arrives
    j = next(k for k in range(i + 1, 100) if data.y_test[k] != data.y_test[i])
    x = to_model_input(Image.fromarray(data.x_test[j][:, :, 0]), model.spec.input_shape, model.preprocessing)
    expected = str(model.predict(x[None])[0].argmax())  # the core's own answer for this image
    dropped = page.evaluate_handle(
        """(b64) => {
             const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
             const transfer = new DataTransfer();
             transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
             return transfer;
           }""", base64.b64encode(web_support.png_bytes(data.x_test[j])).decode())
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    settled(page)
    page.wait_for_function("(want) => document.querySelector('#top-class').textContent === want", arg=expected)

    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"just some text")
    page.set_input_files("#upload", str(bad))
    page.wait_for_function("() => document.querySelector('#predict-error').textContent !== ''")
    assert "not an image" in page.text_content("#predict-error")


def test_model_view_and_a_confusion_cell(page, trained):
    page.click("nav button[data-view=model]")
    page.wait_for_selector("#confusion td.cell")
    rows = page.locator("#summary tbody tr").count()
    assert rows == len(load_model(trained).spec.layers) + 1  # the layers and the total
    assert "93,322" in page.text_content("#summary")
    assert int(page.get_attribute("#model-loss", "data-points")) >= 1
    cm = np.array(json.loads((trained / "metrics.json").read_text())["confusion_matrix"])
    t, p = np.unravel_index(np.argmax(cm - np.diag(np.diag(cm))), cm.shape)  # the most common mistake
    cell = page.locator(f"#confusion td[data-true='{t}'][data-predicted='{p}']")
    count = int(cell.text_content())
    assert count == cm[t, p] > 0
    cell.click()
    page.wait_for_selector("#examples figure")
    assert page.locator("#examples figure").count() == min(count, 60)
    assert page.text_content("#examples-note").startswith(f"{count} image")
    shot(page, "web-model.png")


def test_train_one_epoch_on_a_subset_and_serve_it(page, server):
    _, runs_dir = server
    page.click("nav button[data-view=train]")
    page.wait_for_selector("#spec-summary tbody tr")

    # a pasted spec is checked as it is typed
    page.click("#t-spec")
    page.keyboard.type("conv8k3:relu flatten dense5")
    page.wait_for_function("() => document.querySelector('#spec-error').textContent.includes('10 classes')")
    assert page.is_disabled("#t-start")
    page.fill("#t-spec", "conv8k3:relu max2 flatten dense10:softmax")
    page.wait_for_function("() => document.querySelector('#spec-error').textContent === ''")
    assert "13, 13, 8" in page.text_content("#spec-summary")
    page.check("input[name=model-kind][value=zoo]")
    page.select_option("#t-zoo", "seed")
    page.wait_for_function("() => document.querySelector('#spec-summary').textContent.includes('93,322')")

    page.fill("#t-epochs", "1")
    page.fill("#t-batch", "32")
    page.fill("#t-limit-train", "1500")
    page.fill("#t-limit-test", "300")
    page.click("#t-start")
    page.wait_for_function("() => Number(document.querySelector('#live-loss').dataset.points) >= 3")  # the curve grows
    page.wait_for_selector("#train-status button", timeout=120_000)
    status = page.text_content("#train-status")
    assert "saved run" in status and "test accuracy" in status
    run = status.split("saved run ")[1].split(":")[0]
    assert (runs_dir / run / "model.safetensors").is_file()
    assert int(page.get_attribute("#live-acc", "data-points")) >= 3
    assert "epoch 1: loss" in page.text_content("#train-log")
    shot(page, "web-train.png")

    page.click("#train-status button")  # Serve this run
    page.wait_for_function(f"() => document.querySelector('#served').textContent.includes('{run}')")
    page.click("nav button[data-view=runs]")
    page.wait_for_selector(f"#runs tr[data-run='{run}'] .badge")
    assert page.locator("#runs tbody tr").count() >= 2
    shot(page, "web-runs.png")


# --- a model of colour photos: `cnnlab serve imagenet` ------------------------------------------------
@pytest.fixture(scope="module")
def photo_server(tmp_path_factory: pytest.TempPathFactory, browser):
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))  # no folder called "imagenet" here: the name means the zoo model
    try:
        app = create_app(run="imagenet", runs_dir=tmp_path_factory.mktemp("runs"))
    finally:
        os.chdir(here)
    with serving(app) as base:
        yield base


def test_a_photo_model_takes_photos_and_shows_where_it_looked(browser, photo_server, tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from cnnlab.backbones.preprocess import class_names
    cats = [class_names()[i] for i in range(281, 286)]  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    cat, coffee = tmp_path / "chelsea.jpg", tmp_path / "coffee.png"
    Image.fromarray(skimage_data.chelsea()).save(cat, quality=90)
    Image.fromarray(skimage_data.coffee()).save(coffee)
    with opened(browser, photo_server) as pg:
        pg.wait_for_selector("#view-try.photo")  # no drawing pad for a photo model
        assert pg.text_content("#try-title") == "Your photo"
        assert pg.is_visible("#cam-card") and not pg.is_visible("#undo")

        pg.set_input_files("#upload", str(cat))
        settled(pg)
        pg.wait_for_function("() => document.querySelector('#cam-heat').naturalWidth === 224")
        top = pg.text_content("#top-class")
        assert top in cats, top
        assert len(pg.query_selector_all("#bars .bar")) == 10
        assert f"“{top}”" in pg.text_content("#cam-caption")
        assert pg.locator("#cam-heat").bounding_box() == pg.locator("#cam-photo").bounding_box()  # laid over it
        captions = pg.locator("#maps figcaption").all_text_contents()
        assert [c.split()[0] for c in captions] == [f"efficientnet_lite0/{s}" for s in
                                                    ["stem", *(f"block{i}" for i in range(1, 8)), "top"]]
        assert "(None, 7, 7, 1280) · first 64 channels" in captions[-1]
        shot(pg, "web-photo.png", full_page=False)  # the photo, its classes, the heat map and the first stages
        pg.fill("#cam-alpha", "80")
        assert pg.evaluate("() => getComputedStyle(document.querySelector('#cam-heat')).opacity") == "0.8"

        with pg.expect_file_chooser() as chooser:  # a click on the frame picks a photo; it draws nothing
            pg.click("#pad")
        chooser.value.set_files(str(coffee))
        settled(pg)
        pg.wait_for_function("() => document.querySelector('#top-class').textContent === 'espresso'")
        pg.wait_for_function("() => document.querySelector('#cam-heat').dataset.class === 'espresso'")

        dropped = pg.evaluate_handle(
            """(b64) => {
                 const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                 const transfer = new DataTransfer();
                 transfer.items.add(new File([bytes], "cat.jpg", { type: "image/jpeg" }));
                 return transfer;
               }""", base64.b64encode(cat.read_bytes()).decode())
        pg.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
        settled(pg)
        pg.wait_for_function("(want) => document.querySelector('#top-class').textContent === want", arg=top)


# --- a folder of photos offered to `cnnlab serve --data`, trained from the Train tab ------------------
def test_a_photo_folder_trains_the_pretrained_backbone_from_the_train_tab(browser, trained, tmp_path, monkeypatch):
    """The page's default plan for a photo folder is the CLI's: the pretrained backbone, the same accuracy."""
    skimage_data = pytest.importorskip("skimage.data")
    import photo_support

    from cnnlab.cli import commands as cli
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "cache"))
    folder = photo_support.photo_folder(tmp_path / "pets_and_coffee",
                                        {"cat": skimage_data.chelsea(), "coffee": skimage_data.coffee()},
                                        n_train=8, n_test=4)
    assert cli.main(["train", "--data", str(folder), "--out", str(tmp_path / "cli-run"), "--quiet"]) == 0
    by_cli = json.loads((tmp_path / "cli-run" / "metrics.json").read_text())
    runs_dir = web_support.runs_dir_with_tiny_run(tmp_path / "web", trained)
    with serving(create_app(runs_dir=runs_dir, data_dirs=[folder])) as base, opened(browser, base) as page:
        page.click("nav button[data-view=train]")
        page.select_option("#t-data", folder.name)
        page.wait_for_function("() => document.querySelector('#t-plan').textContent.includes('pretrained')")
        assert page.input_value("#t-epochs") == "" and page.input_value("#t-opt") == ""  # the plan sets no epochs
        page.click("#t-start")
        page.wait_for_selector("#train-status button", timeout=300_000)
        status = page.text_content("#train-status")
        assert "saved run" in status and "head: Dense(2, softmax)" in page.text_content("#train-log")
        run = status.split("saved run ")[1].split(":")[0]
    by_web = json.loads((runs_dir / run / "metrics.json").read_text())
    assert by_web["test_accuracy"] == by_cli["test_accuracy"] and by_web["n_test"] == by_cli["n_test"] == 8
    assert by_web["confusion_matrix"] == by_cli["confusion_matrix"]
    config = json.loads((runs_dir / run / "config.json").read_text())
    assert config["model"] == "efficientnet_lite2-transfer" and config["spec"]["layers"][0]["type"] == "EfficientNetLite2"
    assert f"{by_web['test_accuracy'] * 100:.1f}%" in status


def test_no_broken_image_before_input_and_no_hint_over_the_photo(page, tmp_path):
    """Issue 21: an <img> without src drew a broken-image icon; the drop hint lay over a dropped photo."""
    for image in ("#input-image", "#cam-photo", "#cam-heat"):
        assert page.eval_on_selector(image, "e => getComputedStyle(e).visibility") == "hidden", image
    assert page.is_visible(".drop-hint")
    path = tmp_path / "digit.png"
    path.write_bytes(web_support.png_bytes(web_support.mnist().x_test[0]))
    page.set_input_files("#upload", str(path))
    settled(page)
    assert not page.is_visible(".drop-hint")
    assert page.eval_on_selector("#input-image", "e => getComputedStyle(e).visibility") == "visible"
    page.click("#clear")
    assert page.is_visible(".drop-hint")
