"""The model the page talks to: predictions, response maps, Grad-CAM and misclassified test images of one run.

A run is what `cnnlab.runs.open_model` opens: a run folder, a `.safetensors` or `.keras` file, or a
pretrained classifier such as `imagenet`.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cnnlab import explain
from cnnlab.datasets.image_files import decode_side, to_model_input
from cnnlab.runs import model_file, run_folder
from cnnlab.runs import predict as predictions
from cnnlab.runs.open_model import OpenedModel, open_model
from cnnlab.spec import compact
from cnnlab.spec.layers import SpecError
from cnnlab.spec.summary import summary_dict
from cnnlab.web.encode import heat_png, mosaic, png_data_url
from cnnlab.web.stores import DataStore, NotFound
from cnnlab.web.uploads import decode_cost, decode_image

KEEP_INPUTS = 64  # recent model inputs, so GET /api/explain/maps and /gradcam can name one by id
EXAMPLES_BATCH = 256  # test images per forward pass of the examples' evaluation (~50 ms for the seed CNN)


class Served:
    """One loaded model; a lock serialises use of its module (explain attaches hooks to it)."""

    def __init__(self, path: str | Path, name: str):
        self.path = Path(path)
        self.name = name
        self.model: OpenedModel = open_model(self.path)
        self.input_shape = self.model.spec.input_shape  # the spec is rebuilt on each access: read it once
        self.decode_side = decode_side(self.input_shape, self.model.preprocessing)
        folder = run_folder.folder_of(self.path)  # a run folder, or the model file inside one
        self.config: dict[str, Any] | None = run_folder.read_config(folder) if folder else None
        self.metrics: dict[str, Any] | None = self._optional(folder, "metrics.json")
        has_history = self._optional(folder, "history.json") is not None
        self.history: dict[str, list[float]] | None = run_folder.read_history(folder) if has_history else None
        self._lock = threading.Lock()
        self._asking = 0  # requests waiting for the module: the examples' background evaluation lets them go first
        self._asking_lock = threading.Lock()
        self._inputs: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._test: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None  # x, y, pred, prob
        self._test_once = threading.Lock()

    @contextlib.contextmanager
    def _module(self) -> Iterator[None]:
        """The module for a request: counted while it waits, so the background evaluation, which takes the
        module batch by batch, leaves it the next turn (a Lock is not fair: its releaser may take it again)."""
        with self._asking_lock:
            self._asking += 1
        try:
            self._lock.acquire()
        finally:
            with self._asking_lock:
                self._asking -= 1
        try:
            yield
        finally:
            self._lock.release()

    @staticmethod
    def _optional(folder: Path | None, file: str) -> dict[str, Any] | None:
        return model_file.read_json(folder / file) if folder is not None and (folder / file).is_file() else None

    def describe(self) -> dict[str, Any]:
        spec = self.model.spec
        try:
            compact_text = compact.format(spec)
        except SpecError:  # named layers have no compact form
            compact_text = None
        metrics = {k: v for k, v in (self.metrics or {}).items()
                   if k in ("test_accuracy", "test_loss", "n_test", "confusion_matrix", "per_class", "train_seconds")}
        return {"name": self.name, "class_names": self.model.class_names, "input_shape": list(spec.input_shape),
                "preprocessing": self.model.preprocessing, "summary": summary_dict(spec), "compact": compact_text,
                "config": self.config, "metrics": metrics or None, "history": self.history}

    def prepare(self, raw: bytes) -> np.ndarray:
        """Image file bytes -> the uint8 (H, W, C) input this model takes."""
        return to_model_input(decode_image(raw, self.decode_side), self.input_shape, self.model.preprocessing)

    def decode_cost(self, raw: bytes) -> int:
        """Bytes `prepare(raw)` will hold at its peak (see `uploads.decode_cost`), from the image's header."""
        mnist_style = bool((self.model.preprocessing or {}).get("mnist_style")) and self.input_shape[-1] == 1
        return decode_cost(raw, self.input_shape, mnist_style, self.decode_side)

    def forward(self, images: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(N, H, W, C) prepared inputs -> (N, classes) probabilities and an id per input for `maps`."""
        ids = [hashlib.sha256(x.tobytes()).hexdigest()[:16] for x in images]
        with self._module():
            probs = predictions.class_probabilities(self.model.module, images)
            for image_id, x, row in zip(ids, images, probs):
                self._inputs[image_id] = (x, row)  # the probabilities too: Grad-CAM names the predicted class
                self._inputs.move_to_end(image_id)
            while len(self._inputs) > KEEP_INPUTS:
                self._inputs.popitem(last=False)
        return probs, ids

    def answer(self, x: np.ndarray, probs: np.ndarray, image_id: str, top_k: int, echo: bool) -> dict[str, Any]:
        """The JSON reply for one input: top-k classes, all probabilities, the input as a PNG if asked for."""
        body = {"image_id": image_id, "classes": list(self.model.class_names), "probabilities": probs.tolist(),
                "top": predictions.top_k(probs[None], self.model.class_names, top_k)[0],
                "input_shape": list(x.shape)}
        if echo:
            body["input"] = png_data_url(x)
        return body

    def predict(self, raw: bytes, top_k: int = 5, echo: bool = True) -> dict[str, Any]:
        """Image file bytes -> `answer`, without batching (one forward pass for this image)."""
        started = time.perf_counter()
        x = self.prepare(raw)
        probs, ids = self.forward(x[None])
        body = self.answer(x, probs[0], ids[0], top_k, echo)
        return {**body, "milliseconds": round((time.perf_counter() - started) * 1000, 2)}

    def maps(self, image_id: str) -> dict[str, Any]:
        """Response maps of every spatial layer (a backbone: of its stages) for an input predicted before,
        as viridis mosaics of at most `encode.MAX_TILES` channels."""
        with self._module():
            maps = explain.feature_maps(self.model.module, self._recent(image_id)[0])
        rows = {r["name"]: r for r in summary_dict(self.model.spec)["layers"]}
        stages = explain.backbone_stages(self.model.module)  # maps the summary has no row for
        layers = []
        for name, fmap in maps:
            row = rows.get(name) or {"type": stages[name], "output_shape": [None, *fmap.shape]}
            tiles = mosaic(fmap)
            layers.append({"name": name, "type": row["type"], "output_shape": row["output_shape"],
                           "rows": tiles.rows, "cols": tiles.cols, "channels": tiles.channels, "tile": list(tiles.tile),
                           "image": png_data_url(tiles.image)})
        return {"image_id": image_id, "layers": layers}

    def grad_cam(self, image_id: str, class_index: int | None = None) -> dict[str, Any]:
        """Grad-CAM of an input predicted before, for a class (default: the predicted one), as a jet PNG of its size."""
        started = time.perf_counter()
        with self._module():
            x, probs = self._recent(image_id)
            index = int(probs.argmax()) if class_index is None else class_index
            heat = explain.grad_cam(self.model.module, x, index)  # a ValueError names a class out of range
        return {"image_id": image_id, "class": self.model.class_names[index], "index": index,
                "probability": float(probs[index]), "size": list(heat.shape), "heatmap": heat_png(heat),
                "milliseconds": round((time.perf_counter() - started) * 1000, 2)}

    def _recent(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(input, probabilities) of an image predicted lately."""
        found = self._inputs.get(image_id)
        if found is None:
            raise NotFound(f"no recent image {image_id!r}; POST it to /api/predict first")
        return found

    def examples(self, data: DataStore, true: int, predicted: int, limit: int) -> dict[str, Any]:
        """Test images of class `true` that the model called `predicted` (the confusion matrix cell)."""
        names = self.model.class_names
        for what, value in (("true", true), ("predicted", predicted)):
            if not 0 <= value < len(names):
                raise ValueError(f"{what} must be a class index 0..{len(names) - 1}, got {value}")
        x, y, pred, prob = self._test_predictions(data)
        chosen = np.flatnonzero((y == true) & (pred == predicted))
        return {"true": names[true], "predicted": names[predicted], "count": int(len(chosen)),
                "images": [{"index": int(i), "image": png_data_url(x[i]), "probability": float(prob[i])}
                           for i in chosen[:limit]]}

    def _test_predictions(self, data: DataStore) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, predicted class, its probability) of the run's test images, computed by the first request;
        requests arriving meanwhile wait for that one instead of each evaluating the test set again."""
        with self._test_once:
            if self._test is None:
                self._test = self._evaluate_test(data)
        return self._test

    def _evaluate_test(self, data: DataStore) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self.config is None:
            raise NotFound(f"no test set for {self.name}: a bare model file or a pretrained model does not "
                           "say which dataset it was tested on")
        dataset = data.for_run(self.path, self.model.preprocessing)
        # a run trained on a subset (the web's limit_test) was tested on the first n_test images
        n = (self.metrics or {}).get("n_test") or len(dataset.x_test)
        x, y = dataset.x_test[:n], dataset.y_test[:n]
        chunks = []
        for start in range(0, len(x), EXAMPLES_BATCH):
            while self._asking:  # requests first: a prediction waits for one batch at most, never the test set
                time.sleep(0.001)
            with self._lock:
                chunks.append(predictions.class_probabilities(self.model.module, x[start:start + EXAMPLES_BATCH]))
        probs = np.concatenate(chunks) if chunks else np.zeros((0, len(self.model.class_names)), np.float32)
        pred = probs.argmax(1)
        return x, y, pred, probs[np.arange(len(pred)), pred]
