"""Predict many image files: streamed in batches, one row per image, resumable, optionally sorted into folders.

Files are decoded in threads while the model runs (`datasets.decode_stream`), through the model's own
input rule (`to_model_input`), in moderate batches, on the fast path of `runs.fast_predict`; memory holds
a few batches, whatever the number of files. Rows go to a `ResultFile` as they are made, so a stopped run
is resumed by running it again: files already in the file are skipped. Under `torchrun` (WORLD_SIZE > 1)
each process takes every WORLD_SIZE-th file into its own part file, and rank 0 merges the parts.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from cnnlab.datasets.decode_stream import decoded_batches
from cnnlab.progress import CountProgress
from cnnlab.runs.fast_predict import Classifier
from cnnlab.runs.predict import top_k
from cnnlab.runs.result_file import ResultFile
from cnnlab.runs.sort_into import class_folder_name, place_copy

BATCH_SIZE = 32  # enough to keep the convolutions efficient; 32 decoded 224 px photos are ~5 MB


@dataclass(frozen=True)
class FolderPrediction:
    """What a run over many files did: rows written now, rows found from an earlier run, errors among the new."""
    written: int
    resumed: int
    errors: int
    seconds: float


def prediction_rows(model: Any, files: Sequence[Path], k: int = 3, batch_size: int = BATCH_SIZE,
                    classifier: Classifier | None = None, progress: bool = True, stream: Any = None,
                    already: int = 0, total: int | None = None, engine: str = "auto"):
    """Yield one row per file, in order: {"path", "class", "probability", "top", "error"}."""
    classifier = classifier or Classifier(model, engine=engine)
    bar = CountProgress(total or len(files) + already, "predict", start=already, enabled=progress, stream=stream)
    done = already
    try:
        for batch in decoded_batches(files, tuple(model.spec.input_shape), model.preprocessing, batch_size):
            rows: dict[int, dict[str, Any]] = {}
            if len(batch.indices):
                tops = top_k(classifier(batch.images), model.class_names, k)
                for i, top in zip(batch.indices, tops):
                    rows[i] = {"path": str(files[i]), "class": top[0]["class"],
                               "probability": top[0]["probability"], "top": top, "error": None}
            for i, reason in batch.errors:
                rows[i] = {"path": str(files[i]), "class": None, "probability": None, "top": [], "error": reason}
            for i in sorted(rows):
                yield rows[i]
            done += len(rows)
            bar.update(done)
    finally:
        bar.close()


def predict_to_file(model: Any, files: Sequence[Path], out: ResultFile, k: int = 3, batch_size: int = BATCH_SIZE,
                    sort_into: Path | None = None, copy: bool = False, progress: bool = True,
                    stream: Any = None, clock: Callable[[], float] | None = None, engine: str = "auto"
                    ) -> FolderPrediction:
    """Append a row to `out` for each file it does not hold yet (paths made absolute)."""
    clock = clock or time.perf_counter
    started = clock()
    absolute = [Path(os.path.abspath(f)) for f in files]
    done = out.done()
    todo = [f for f in absolute if str(f) not in done]
    resumed = len(absolute) - len(todo)
    written = errors = 0
    out.open()
    try:
        for row in prediction_rows(model, todo, k, batch_size, progress=progress, stream=stream,
                                   already=resumed, total=len(absolute), engine=engine):
            if sort_into is not None and row["class"] is not None:
                row["sorted_to"] = str(place_copy(Path(row["path"]), sort_into / class_folder_name(row["class"]), copy))
            out.append(row)
            written += 1
            errors += row["error"] is not None
    finally:
        out.close()
    return FolderPrediction(written, resumed, errors, clock() - started)


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def part_file(out: ResultFile, rank: int, world: int) -> ResultFile:
    return ResultFile(out.path.with_name(f"{out.path.name}.part{rank}-of-{world}"), out.kind)


def merge_parts(out: ResultFile, world: int) -> int:
    """Rank 0, after every rank finished: append the parts' rows that `out` lacks, then remove the parts.
    Returns the rows added. A part is removed only after its rows are in `out`."""
    done = out.done()
    out.open()
    added = 0
    try:
        for rank in range(world):
            part = part_file(out, rank, world)
            if not part.path.exists():
                continue
            part.done()  # cuts a torn last line
            for line in part.path.read_bytes().splitlines(keepends=True)[1 if part.kind == "csv" else 0:]:
                path = _row_path(part, line)
                if path not in done:
                    out._write(line)
                    done.add(path)
                    added += 1
    finally:
        out.close()
    for rank in range(world):
        part_file(out, rank, world).path.unlink(missing_ok=True)
    return added


def _row_path(part: ResultFile, line: bytes) -> str:
    import csv
    import json
    text = line.decode("utf-8")
    return json.loads(text)["path"] if part.kind == "jsonl" else next(csv.reader([text]))[0]
