"""Load an image folder (see `cnnlab.datasets.folders.scan`) as in-memory uint8 arrays, decoded once and cached.

Every image is decoded in parallel threads (Pillow releases the GIL while decoding and resizing),
converted to the chosen colour mode and stretched to one size. The arrays are cached in the cnnlab
cache folder under a key made of every file's path, size and modification time plus the options, so
the next run with unchanged files loads at once, and a changed, added or removed file re-decodes.
Files that cannot be used are skipped and listed in `dataset.report.bad_files` with the reason.
Data too large for memory (or `stream=True`) is decoded once into a disk-backed array instead, see
`cnnlab.datasets.folders.stream`.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.folders import cache as folder_cache
from cnnlab.datasets.folders.report import FolderReport
from cnnlab.datasets.folders.scan import BadFile, Layout, scan
from cnnlab.datasets.image_files import BadImageError, decode_side, open_image, to_model_input
from cnnlab.printable import printable

COLORS = ("auto", "rgb", "grayscale")
MAX_DEFAULT_SIDE = 128  # the chosen default size never exceeds this, so photos train in reasonable time on a CPU
_CHUNK = 64  # files per thread task: few enough futures for 100k files, small enough to balance the threads


@dataclass(frozen=True)
class FolderDataset(Dataset):
    """A Dataset read from an image folder; `report` says what was found, chosen and skipped."""
    report: FolderReport | None = field(default=None, compare=False)


def load_folder(path: str | os.PathLike, image_size: tuple[int, int] | None = None, color: str = "auto",
                holdout: float = 0.2, seed: int = 0, workers: int | None = None, cache: bool = True,
                on_progress: Callable[[int, int], None] | None = None, stream: bool | None = None,
                resize_to: int | None = None) -> FolderDataset:
    """Read an image folder into uint8 (N, H, W, C) arrays with int64 labels and the class names.

    image_size (H, W): every image is stretched to it; None chooses the median size of the images,
    scaled down to at most 128 pixels a side. color: "rgb", "grayscale" or "auto" (grayscale when every
    image is gray). Without split folders a stratified `holdout` fraction of each class (chosen with
    `seed`) becomes the test set; with train/ + val/ + test/ the val/ images become `x_val`.
    `on_progress(done, total)` is called while decoding. stream: True gives `numpy.memmap` arrays
    read from a file in the cache folder (always written there, `cache=False` only skips reusing
    one); None (default) streams when the arrays would need more than half the free memory
    (`stream.should_stream`); False keeps them in memory and refuses data that would not fit.
    resize_to: instead of stretching, the short side is bicubic-resized to it and the centre `image_size` crop kept
    (a pretrained backbone's evaluation crop; needs a square `image_size`), the rule `predict` applies to a model
    whose preprocessing records it (`cnnlab.datasets.image_files.to_model_input`).
    """
    from cnnlab.datasets.folders import stream as disk
    started = time.perf_counter()
    if image_size is not None:
        image_size = _check_size(image_size)
    color_choice(color, False)  # a bad colour stops it before any work
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction between 0 and 1, got {holdout!r}")
    if resize_to is not None:
        resize_to = _check_crop(image_size, resize_to)
    layout = scan(path)
    files = layout.files()
    options = {"image_size": image_size, "color": color, **({"resize_to": resize_to} if resize_to else {})}
    cache_file = folder_cache.cache_file(layout, files, options)
    stream_file = disk.stream_file(cache_file, holdout, seed)
    notes: list[str] = []  # what the caches had to say (damaged, cannot be written), for the report
    if cache and stream is not True and (loaded := folder_cache.read_cache(cache_file, notes.append)) is not None:
        return _assemble(layout, files, *loaded, holdout, seed, True, cache_file, time.perf_counter() - started)
    if cache and stream is not False and folder_cache.fresh(stream_file) and (found := disk.read(stream_file)) is not None:
        return _assemble_streamed(layout, files, *found, holdout, seed, True, stream_file, started)
    image_size, size_note = _plan_size(files, image_size, workers)
    if resize_to:
        size_note = crop_note(image_size[0], resize_to)
    channels = 1 if color == "grayscale" else 3
    if stream or (stream is None and disk.should_stream(len(files), image_size, channels)):
        folder_cache.note_racy(stream_file)
        meta = disk.write(stream_file, (len(files), *image_size, channels),
                          lambda x: _decode_into(x, files, image_size, color, size_note, workers, on_progress,
                                                        resize_to),
                          lambda meta: [idx for _, idx in _arrange(layout, files, meta, holdout, seed)[0]])
        folder_cache.drop_orphans(stream_file)
        return _assemble_streamed(layout, files, disk.open_rows(stream_file), meta, holdout, seed, False, stream_file,
                                  started)
    _check_memory(len(files), image_size, channels)
    x = np.zeros((len(files), *image_size, channels), dtype=np.uint8)  # (N, H, W, C)
    meta = _decode_into(x, files, image_size, color, size_note, workers, on_progress, resize_to)
    if meta["color"] == "grayscale" and channels == 3:
        x = np.ascontiguousarray(x[..., :1])
    written = cache and folder_cache.write_cache(cache_file, x, meta, notes.append)
    data = _assemble(layout, files, x, meta, holdout, seed, False, cache_file if written else None,
                     time.perf_counter() - started)
    return dataclasses.replace(data, report=dataclasses.replace(data.report, notes=tuple(notes))) if notes else data


def _check_size(size: Any) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {size!r}") from None
    if not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise ValueError(f"image_size must be between 1x1 and 4096x4096 pixels, got {h}x{w}")
    return h, w


def _check_crop(image_size: tuple[int, int] | None, resize_to: Any) -> int:
    if image_size is None or image_size[0] != image_size[1]:
        raise ValueError(f"resize_to (resize, then centre crop) needs a square image_size, got {image_size!r}")
    if not isinstance(resize_to, int) or isinstance(resize_to, bool) or not image_size[0] <= resize_to <= 4096:
        raise ValueError(f"resize_to must be a whole number of pixels from the crop size {image_size[0]} to 4096, "
                         f"got {resize_to!r}")
    return resize_to


def default_image_size(sizes: list[tuple[int, int]], cap: int = MAX_DEFAULT_SIDE) -> tuple[int, int]:
    """The median (height, width), scaled down keeping its aspect so no side exceeds `cap`.

    Sides of 32 pixels or more are rounded to a multiple of 4 so pooling layers divide them evenly.
    """
    if not sizes:
        raise ValueError("no image sizes to choose a default from")
    h, w = statistics.median(s[0] for s in sizes), statistics.median(s[1] for s in sizes)
    shrink = min(1.0, cap / max(h, w))
    h, w = h * shrink, w * shrink
    return tuple(max(1, int(4 * round(v / 4)) if v >= 32 else int(round(v))) for v in (h, w))  # type: ignore[return-value]


# --- decoding -----------------------------------------------------------------------------------------
def map_in_threads(fn: Callable[[Path], Any], paths: list[Path], workers: int | None = None,
                   on_progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """[fn(p) for p in paths], computed by a thread pool in chunks; results in the order of `paths`."""
    return [r for _, part in iter_in_threads(fn, paths, workers, on_progress) for r in part]


def iter_in_threads(fn: Callable[[Path], Any], paths: list[Path], workers: int | None = None,
                    on_progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, list[Any]]]:
    """(start, [fn(p) for p in chunk]) in order, with few chunks in flight, so the caller can write
    each result away and memory stays bounded however many files there are."""
    workers = workers or min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    starts = iter(range(0, len(paths), _CHUNK))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[int, Future]] = deque()
        for start in itertools.islice(starts, 4 * workers):
            pending.append((start, pool.submit(lambda s: [fn(p) for p in paths[s:s + _CHUNK]], start)))
        while pending:
            start, future = pending.popleft()
            part = future.result()
            for nxt in itertools.islice(starts, 1):
                pending.append((nxt, pool.submit(lambda s: [fn(p) for p in paths[s:s + _CHUNK]], nxt)))
            if on_progress:
                on_progress(start + len(part), len(paths))
            yield start, part


def _probe(path: Path) -> tuple[int, int] | None:
    """(height, width) after EXIF rotation, from the header alone; None when the file is unusable."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # orientations that swap width and height
                w, h = h, w
            return h, w
    except Exception:  # noqa: BLE001 - the full decode fails on the same file and gives the reason
        return None


def _decode(path: Path, size: tuple[int, int], color: str, resize_to: int | None = None) -> tuple[np.ndarray, bool] | str:
    """One file as `predict` reads it for a model of this input (and preprocessing), and whether it is gray."""
    preprocessing = {"resize_to": resize_to} if resize_to else None
    try:
        shape = (*size, 1 if color == "grayscale" else 3)
        img = open_image(path, decode_side(shape, preprocessing))
    except (BadImageError, FileNotFoundError) as exc:
        return getattr(exc, "reason", "disappeared while reading")
    try:
        arr = to_model_input(img, shape, preprocessing)
    except Exception as exc:  # noqa: BLE001 - an exotic pixel format Pillow cannot convert: skip the file like any bad one
        return f"cannot convert its {img.mode} pixels to {color} ({exc})"
    gray = arr.shape[2] == 1 or bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
    return arr, gray


def _plan_size(files: list[tuple[str, int, Path]], image_size: tuple[int, int] | None,
               workers: int | None) -> tuple[tuple[int, int], str]:
    """The image size to use and the sentence that explains it; probes the headers when not given."""
    if image_size is not None:
        return image_size, f"image size {image_size[0]}x{image_size[1]} (as asked)"
    probed = map_in_threads(_probe, [p for _, _, p in files], workers, None)
    sizes = [s for s in probed if s is not None]
    if not sizes:
        return (1, 1), "no readable images"  # nothing decodes; _assemble names the empty class folders
    image_size = default_image_size(sizes)
    hs, ws = [s[0] for s in sizes], [s[1] for s in sizes]
    median = f"{statistics.median(hs):g}x{statistics.median(ws):g}"
    spread = f"from {min(hs)}x{min(ws)} to {max(hs)}x{max(ws)}" if len(set(sizes)) > 1 else "all the same size"
    capped = f", scaled to fit {MAX_DEFAULT_SIDE}" if image_size != default_image_size(sizes, cap=10**9) else ""
    return image_size, (f"image size {image_size[0]}x{image_size[1]}: the median size {median} of {len(sizes):,} "
                        f"images ({spread}){capped}; change it with --image-size HxW")


def _decode_into(x: np.ndarray, files: list[tuple[str, int, Path]], image_size: tuple[int, int], color: str,
                 size_note: str, workers: int | None, on_progress: Callable[[int, int], None] | None,
                 resize_to: int | None = None) -> dict[str, Any]:
    """Decode every file into its row of x (N, H, W, C), chunk by chunk; returns the meta the cache keeps.

    With color "auto", x has 3 channels and meta["color"] says whether the caller may keep only the first.
    """
    bad: dict[int, str] = {}
    all_gray = True
    for start, part in iter_in_threads(lambda p: _decode(p, image_size, color, resize_to), [p for _, _, p in files], workers,
                                       on_progress):
        for i, result in enumerate(part, start):
            if isinstance(result, str):
                bad[i] = result
            else:
                x[i] = result[0]
                all_gray &= result[1]
    color, color_note = color_choice(color, all_gray)
    return {"image_size": list(image_size), "size_note": size_note, "color": color, "color_note": color_note,
            "bad": {str(i): reason for i, reason in bad.items()}, **({"resize_to": resize_to} if resize_to else {})}


def crop_note(size: int, resize_to: int) -> str:
    return (f"image size {size}x{size}: the short side resized to {resize_to} (bicubic), then the centre crop, "
            "as the pretrained backbone saw its photos")


def color_choice(color: str, all_gray: bool) -> tuple[str, str]:
    """(colour mode, the sentence that says why) for `color` as asked, `all_gray`: every usable image is gray."""
    if color not in COLORS:
        raise ValueError(f"color must be {', '.join(COLORS)}, got {color!r}")
    if color != "auto":
        return color, f"colour: {color} (as asked)"
    if all_gray:
        return "grayscale", "colour: grayscale (every image is gray; --color rgb keeps 3 channels)"
    return "rgb", "colour: rgb (some images have colour; --color grayscale converts them)"


def all_gray(paths: list[Path], image_size: tuple[int, int], resize_to: int | None = None) -> bool:
    """Whether every usable file is gray as `load_folder`'s "auto" colour judges it (unusable ones do not count);
    reads the files in order and stops at the first in colour, so a colour folder costs one decode."""
    for path in paths:
        result = _decode(path, image_size, "auto", resize_to)
        if not isinstance(result, str) and not result[1]:
            return False
    return True


def _check_memory(n: int, size: tuple[int, int], channels: int) -> None:
    """Refuse before decoding when the arrays would not fit in half of the free memory."""
    from cnnlab.datasets.folders.stream import memory_need
    need, free = memory_need(n, size, channels)
    if free is not None and need > free // 2:
        raise ValueError(f"{n:,} images of {size[0]}x{size[1]}x{channels} need {need / 1e9:.1f} GB in memory but only "
                         f"{free / 1e9:.1f} GB is free; stream them from disk (--stream, or stream=True) or "
                         "choose a smaller --image-size")


# --- assembling the splits ---------------------------------------------------------------------------
def stratified_split(y: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) indices: about `fraction` of every class held out; a class of one is kept whole."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        k = min(max(int(round(len(idx) * fraction)), 1), len(idx) - 1) if len(idx) > 1 else 0
        held.append(idx[:k])
        keep.append(idx[k:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def _arrange(layout: Layout, files: list[tuple[str, int, Path]], meta: dict[str, Any], holdout: float,
             seed: int) -> tuple[list[tuple[str, np.ndarray]], dict[str, dict[str, int]], tuple[BadFile, ...], str]:
    """([(part, rows)], counts, bad files, where the test images came from): which decoded rows (file order)
    make x_train, x_val (when there is one) and x_test, in their final order."""
    bad = {int(i): reason for i, reason in meta["bad"].items()}
    bad_files = tuple(sorted([*layout.skipped, *(BadFile(layout.rel(files[i][2]), r) for i, r in bad.items())],
                             key=lambda b: b.path))
    split_of = np.array([s for s, _, _ in files])
    y = np.array([label for _, label, _ in files], dtype=np.int64)
    ok = np.ones(len(files), dtype=bool)
    ok[list(bad)] = False
    counts: dict[str, dict[str, int]] = {}
    for split, classes in layout.splits.items():
        counts[split] = {}
        for label, name in enumerate(layout.class_names):
            if name not in classes:
                continue
            n = int(np.sum(ok & (split_of == split) & (y == label)))
            if n == 0:
                where = f"{layout.split_folders[split]}{name}/" if layout.split_folders else f"{name}/"
                total = len(classes[name])
                reason = next((b.reason for b in bad_files if printable(b.path).startswith(where)), "unreadable")
                raise ValueError(f"class folder {where} in {layout.root} has no usable image"
                                 + (f" ({total} file{'s' * (total != 1)} could not be read: {reason})" if total else ""))
            counts[split][name] = n

    def rows(split: str) -> np.ndarray:
        return np.flatnonzero(ok & (split_of == split))

    train, parts = rows("train"), []
    if "test" in layout.splits:
        test = rows("test")
        test_from = f"{layout.split_folders['test']} ({len(test):,})"
        if "val" in layout.splits:
            parts.append(("val", rows("val")))
            test_from += f"; {layout.split_folders['val']} ({len(parts[0][1]):,}) is the validation data during training"
    elif "val" in layout.splits:
        test = rows("val")
        test_from = f"{layout.split_folders['val']} ({len(test):,}; there is no test/ folder)"
    else:
        keep, held = stratified_split(y[train], holdout, seed)
        test, train = train[held], train[keep]
        test_from = f"{len(test):,} images held out, {holdout:.0%} of each class (stratified, seed {seed})"
    # Shuffled once (seeded) so that a validation_split, which takes the last images, sees every class.
    train = train[np.random.default_rng(seed).permutation(len(train))]
    return [("train", train), *parts, ("test", test)], counts, bad_files, test_from


def _assemble(layout: Layout, files: list[tuple[str, int, Path]], x: np.ndarray, meta: dict[str, Any],
              holdout: float, seed: int, cached: bool, cache_file: Path | None, seconds: float) -> FolderDataset:
    """The dataset from in-memory decoded rows (file order)."""
    parts, counts, bad_files, test_from = _arrange(layout, files, meta, holdout, seed)
    return _dataset(layout, files, {name: x[idx] for name, idx in parts}, parts, meta, counts, bad_files, test_from,
                    cached, cache_file, seconds)


def _assemble_streamed(layout: Layout, files: list[tuple[str, int, Path]], x: np.ndarray, meta: dict[str, Any],
                       holdout: float, seed: int, cached: bool, stream_file: Path, started: float) -> FolderDataset:
    """The dataset from a memmap whose rows are already the parts in order: each part is a slice, still a memmap."""
    parts, counts, bad_files, test_from = _arrange(layout, files, meta, holdout, seed)
    if len(x) != sum(len(idx) for _, idx in parts):
        raise ValueError(f"the streamed cache {stream_file} has {len(x):,} rows, not the "
                         f"{sum(len(idx) for _, idx in parts):,} expected; delete it to decode again")
    bounds = np.cumsum([0, *(len(idx) for _, idx in parts)])
    xs = {name: x[a:b] for (name, _), a, b in zip(parts, bounds[:-1], bounds[1:])}
    return _dataset(layout, files, xs, parts, meta, counts, bad_files, test_from, cached, stream_file,
                    time.perf_counter() - started)


def _dataset(layout: Layout, files: list[tuple[str, int, Path]], xs: dict[str, np.ndarray],
             parts: list[tuple[str, np.ndarray]], meta: dict[str, Any], counts: dict[str, dict[str, int]],
             bad_files: tuple[BadFile, ...], test_from: str, cached: bool, cache_file: Path | None,
             seconds: float) -> FolderDataset:
    y = np.array([label for _, label, _ in files], dtype=np.int64)
    ys = {name: y[idx] for name, idx in parts}
    report = _report(layout, meta, counts, bad_files, test_from, cached, cache_file, seconds)
    return FolderDataset(str(layout.root), xs["train"], ys["train"], xs["test"], ys["test"], layout.class_names,
                         str(layout.root), x_val=xs.get("val"), y_val=ys.get("val"), report=report)


def _report(layout: Layout, meta: dict[str, Any], counts: dict[str, dict[str, int]], bad_files: tuple[BadFile, ...],
            test_from: str, cached: bool, cache_file: Path | None, seconds: float) -> FolderReport:
    return FolderReport(str(layout.root), "splits" if layout.split_folders else "classes", dict(layout.split_folders),
                        test_from, tuple(meta["image_size"]), meta["size_note"], meta["color"], meta["color_note"],
                        counts, bad_files, cached, str(cache_file) if cache_file else None, seconds,
                        meta.get("resize_to"))


@dataclass(frozen=True)
class FolderFiles:
    """An image folder's files in `load_folder`'s splits, without their pixels: for a stream of batches from disk."""
    name: str
    paths: list[Path]  # every candidate file, in the scan's order
    labels: np.ndarray  # (N,) int64, of each path
    parts: dict[str, np.ndarray]  # "train", "val" (only beside a test/), "test" -> positions in `paths`, as load_folder
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    report: FolderReport

    @property
    def source(self) -> str:
        return self.name


def split_files(layout: Layout, bad: dict[int, str], meta: dict[str, Any], holdout: float = 0.2, seed: int = 0,
                cached: bool = False, cache_file: Path | None = None, seconds: float = 0.0) -> FolderFiles:
    """`layout`'s files split exactly as `load_folder` splits the images it decoded, given the files that could not
    be used (`bad`: position in `layout.files()` -> reason) and the `meta` it would keep (image_size, size_note,
    color, color_note, resize_to)."""
    files = layout.files()
    parts, counts, bad_files, test_from = _arrange(layout, files, {**meta, "bad": bad}, holdout, seed)
    report = _report(layout, meta, counts, bad_files, test_from, cached, cache_file, seconds)
    channels = 1 if meta["color"] == "grayscale" else 3
    return FolderFiles(str(layout.root), [p for _, _, p in files], np.array([y for _, y, _ in files], dtype=np.int64),
                       dict(parts), layout.class_names, (*meta["image_size"], channels), report)
