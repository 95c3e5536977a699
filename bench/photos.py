"""EfficientNet-Lite feature extraction, images/s: the reference implementation vs cnnlab.backbones, one process;
then `cnnlab train` end to end on an exported folder of real photos, head alone and with --fine-tune.

    python bench/photos.py [--batches 3] [--batch-size 32] [--variant lite0] [--device cpu] [--train-photos 40]
    python bench/photos.py --folder PHOTOS [--classes dress,hat]

--folder: a careful practitioner against `cnnlab train --data PHOTOS` (no flags) on the same folder, one run:
the reference implementation (efficientnet-lite-pytorch) of EfficientNet-Lite0 with the packaged weights, its
evaluation crop (short side to 256 bicubic, centre 224), pooled features and scikit-learn's LogisticRegressionCV
(C by 5-fold CV); trained on train/ (+ val/ when there is a test/), scored on test/ (else val/), as cnnlab does.
Accuracy, log loss and seconds (weights, decoding and features included, empty cnnlab cache) for both.

The reference (PyPI efficientnet-lite-pytorch) runs the plain way: eager fp32 NCHW under no_grad.
Ours runs as ``optimize_for_inference`` makes it, in float32 and in the device's preferred dtype.
Rounds are interleaved (reference, ours, ours, reference, ...) so a noisy shared machine hits all
alike; each figure is the median over batches. Also prints the weight load times (cold, warm).

The train lines: small crops (4-10% of the side, so not every crop is easy) of scikit-image's chelsea the cat and
cup of coffee, --train-photos a class for train/ and half that for test/, written by `export_images` as JPEGs and
trained by `cnnlab.cli.main(["train", ...])` in this process with an empty cache (decoding and features included).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnlab.backbones import (
    efficientnet_lite,
    get_variant,
    load_pretrained,
    packaged_weights_path,
)
from cnnlab.backbones.inference import native_bf16, optimize_for_inference
from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.folders.export import export_images


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=3, help="timed batches per model (after one warm-up)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--variant", default="lite0", choices=["lite0", "lite1", "lite2"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-fuse", action="store_true", help="plain ops instead of oneDNN's fused convolutions")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--train-photos", type=int, default=40, help="photos a class in the train/ of the timed folder "
                   "(test/ gets half); 0 skips the train lines")
    p.add_argument("--folder", help="compare with the practitioner on this photo folder (train/ + val/ and/or test/)")
    p.add_argument("--classes", help="with --folder: only these class folders, comma-separated")
    return p.parse_args(argv)


@contextlib.contextmanager
def empty_cache():
    """CNNLAB_DATA pointed at a new empty folder (so decoding and features are timed), put back afterwards."""
    old = os.environ.get("CNNLAB_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CNNLAB_DATA"] = tmp
        try:
            yield Path(tmp)
        finally:
            if old is None:
                del os.environ["CNNLAB_DATA"]
            else:
                os.environ["CNNLAB_DATA"] = old


def load_times(variant: str) -> tuple[float, float]:
    """Seconds for load_pretrained with an empty cache (reads the .pth, writes safetensors), then warm."""
    with empty_cache():
        start = time.perf_counter()
        load_pretrained(variant)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        load_pretrained(variant)
        warm = time.perf_counter() - start
    return cold, warm


def photo_crops(per_class: int, seed: int = 0, size: int = 128) -> Dataset:
    """A 2-class Dataset of small crops of two real photos, resized to size x size (train: per_class, test: half)."""
    from skimage import data as photos
    rng = np.random.default_rng(seed)
    splits: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "test": ([], [])}
    for label, photo in enumerate((photos.chelsea(), photos.coffee())):
        h, w = photo.shape[:2]
        for split, n in (("train", per_class), ("test", max(1, per_class // 2))):
            for _ in range(n):
                s = rng.uniform(0.04, 0.10)
                ch, cw = max(8, int(h * s)), max(8, int(w * s))
                y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
                crop = Image.fromarray(photo[y:y + ch, x:x + cw]).resize((size, size), Image.Resampling.BICUBIC)
                splits[split][0].append(np.asarray(crop))
                splits[split][1].append(label)
    (x_train, y_train), (x_test, y_test) = ((np.stack(x), np.array(y)) for x, y in splits.values())
    return Dataset("cat-or-coffee", x_train, y_train, x_test, y_test, ("cat", "coffee"), "skimage crops")


def train_seconds(per_class: int) -> list[str]:
    """`cnnlab train` on the exported folder, head alone then --fine-tune, each with an empty cache."""
    from cnnlab import cli
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_images(photo_crops(per_class), Path(tmp) / "cat-or-coffee", fmt="jpeg").out
        head_seconds = None
        for label, flags in (("train (head)", []), ("train --fine-tune", ["--fine-tune"])):
            out = Path(tmp) / f"run{len(lines)}"
            with empty_cache(), contextlib.redirect_stdout(io.StringIO()):
                start = time.perf_counter()
                code = cli.main(["train", "--data", str(folder), "--out", str(out), *flags])
                seconds = time.perf_counter() - start
            if code != 0:
                raise RuntimeError(f"cnnlab train {' '.join(flags)} failed with exit code {code}")
            accuracy = json.loads((out / "metrics.json").read_text())["test_accuracy"]
            tuned = json.loads((out / "config.json").read_text())["transfer"].get("fine_tune")
            note = ""
            if tuned:
                note = (f"  x{seconds / head_seconds:4.1f} the head's; {tuned['epochs']} epochs, val loss "
                        f"{tuned['val_loss_before']:.4f} -> {tuned['val_loss_after']:.4f}, "
                        + ("kept" if tuned["improved"] else "not kept (head alone)"))
            head_seconds = head_seconds or seconds
            lines.append(f"  {label:18s} {seconds:6.1f} s end to end  test accuracy {accuracy:.4f}{note}")
    n_test = max(1, per_class // 2)
    return [f"cnnlab train on an exported folder: 2 classes x ({per_class} train + {n_test} test) photo crops, "
            f"{torch.get_num_threads()} threads, empty cache", *lines]


def splits_of(folder: Path) -> tuple[list[Path], list[Path]]:
    """(training split folders, the held-out one), as `cnnlab train` reads a folder with split folders."""
    named = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    val = next((named[n] for n in ("val", "valid", "validation") if n in named), None)
    if "test" in named:
        return [named["train"], *([val] if val else [])], named["test"]
    return [named["train"]], val


def labelled(split_dirs: list[Path], classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files = [(f, i) for d in split_dirs for i, c in enumerate(classes) for f in sorted((d / c).iterdir()) if f.is_file()]
    return [f for f, _ in files], np.array([i for _, i in files])


def practitioner(folder: Path, classes: list[str]) -> tuple[float, float, float, float]:
    """(accuracy, log loss, seconds, C): Lite0 reference features with the evaluation crop + LogisticRegressionCV."""
    from efficientnet_lite_pytorch import EfficientNet
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import log_loss

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(packaged_weights_path("lite0")))
    net.eval()

    def features(paths: list[Path]) -> np.ndarray:
        out = []
        for i in range(0, len(paths), 32):
            batch = []
            for path in paths[i:i + 32]:
                img = Image.open(path).convert("RGB")
                scale = 256 / min(img.size)
                img = img.resize((max(256, round(img.width * scale)), max(256, round(img.height * scale))),
                                 Image.Resampling.BICUBIC)
                left, top = (img.width - 224) // 2, (img.height - 224) // 2
                batch.append(np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32))
            x = (torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2) - 127.0) / 128.0
            with torch.no_grad():
                out.append(net.extract_features(x).mean(dim=(2, 3)).numpy())
        return np.concatenate(out)

    train_dirs, held_dir = splits_of(folder)
    train_files, y_train = labelled(train_dirs, classes)
    test_files, y_test = labelled([held_dir], classes)
    model = LogisticRegressionCV(Cs=10, cv=5, max_iter=1000).fit(features(train_files), y_train)
    probs = model.predict_proba(features(test_files))
    seconds = time.perf_counter() - start
    return (float((probs.argmax(1) == y_test).mean()), float(log_loss(y_test, probs, labels=range(len(classes)))),
            seconds, float(np.atleast_1d(model.C_)[0]))


def cnnlab_default(folder: Path) -> tuple[float, float, float, dict]:
    """(accuracy, log loss, seconds, the run's transfer record) of `cnnlab train --data folder`, empty cache."""
    from cnnlab import cli
    with tempfile.TemporaryDirectory() as tmp, empty_cache():
        out = Path(tmp) / "run"
        start = time.perf_counter()
        code = cli.main(["train", "--data", str(folder), "--out", str(out)])
        seconds = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"cnnlab train failed with exit code {code}")
        metrics = json.loads((out / "metrics.json").read_text())
        record = json.loads((out / "config.json").read_text())["transfer"]
    return metrics["test_accuracy"], metrics["test_loss"], seconds, record


def compare(folder: Path, classes: list[str] | None) -> None:
    """The practitioner, then cnnlab's default, on `folder` (only `classes` when given: linked into a temp copy)."""
    train_dirs, held_dir = splits_of(folder)
    every = sorted(p.name for p in train_dirs[0].iterdir() if p.is_dir())
    classes = classes or every
    with tempfile.TemporaryDirectory() as tmp:
        if classes != every:
            subset = Path(tmp) / f"{folder.name}-{'-'.join(classes)}"
            for split in [*train_dirs, held_dir]:
                for c in classes:
                    (subset / split.name / c).mkdir(parents=True)
                    for f in (split / c).iterdir():
                        os.link(f, subset / split.name / c / f.name)
            folder = subset
        train_files, _ = labelled(splits_of(folder)[0], classes)
        test_files, _ = labelled([splits_of(folder)[1]], classes)
        print(f"{folder.name}: {len(classes)} classes, {len(train_files):,} training photos, {len(test_files):,} held "
              f"out; {torch.get_num_threads()} threads", flush=True)
        ref = practitioner(folder, classes)
        print(f"  practitioner (Lite0 reference, crop, LogisticRegressionCV C {ref[3]:.3g}): accuracy {ref[0]:.4f}  "
              f"log loss {ref[1]:.4f}  {ref[2]:.1f} s", flush=True)
        with contextlib.redirect_stdout(io.StringIO()) as said:
            ours = cnnlab_default(folder)
        chosen = [line.strip() for line in said.getvalue().splitlines() if line.startswith("  EfficientNet")]
        print(f"  cnnlab train (default: {ours[3]['backbone']}, flip {ours[3]['flip_features']}, C {ours[3]['c']:.3g}): "
              f"accuracy {ours[0]:.4f}  log loss {ours[1]:.4f}  {ours[2]:.1f} s")
        for line in chosen:
            print(f"    {line}")
        print(f"  ratio: time x{ours[2] / ref[2]:.2f} of the practitioner's; accuracy {ours[0] - ref[0]:+.4f}, "
              f"log loss {ours[1] - ref[1]:+.4f}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.folder:
        compare(Path(args.folder), args.classes.split(",") if args.classes else None)
        return 0
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError:
        print("needs the reference implementation: pip install efficientnet-lite-pytorch --no-deps", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    variant = get_variant(args.variant)
    size, n = variant.resolution, args.batch_size

    cold, warm = load_times(variant.name)
    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints a line when it loads
        ref = EfficientNet.from_pretrained(f"efficientnet-{variant.name}",
                                           weights_path=str(packaged_weights_path(variant.name)))
    ref = ref.eval().to(device)
    ours = efficientnet_lite(variant.name, include_top=False).to(device)
    fast_dtype = torch.bfloat16 if native_bf16(device) else torch.float32
    dtypes = [torch.float32] + ([fast_dtype] if fast_dtype != torch.float32 else [])
    fast = {dt: optimize_for_inference(ours, dt, fuse=not args.no_fuse) for dt in dtypes}

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=gen).to(device)
    x = (images.permute(0, 3, 1, 2).float() - 127.0) / 128.0  # (N, 3, H, W), plain NCHW for the reference
    x = x.contiguous()
    x_fast = {dt: x.to(dt).contiguous(memory_format=torch.channels_last) for dt in dtypes}

    runs = {"reference": lambda: ref.extract_features(x)}
    for dt in dtypes:
        runs[f"ours {str(dt).removeprefix('torch.')}"] = lambda dt=dt: fast[dt](x_fast[dt])
    contexts = {"reference": torch.no_grad}
    outputs, seconds = {}, {name: [] for name in runs}
    for round_ in range(args.batches + 1):  # round 0 warms up
        order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
        for name in order:
            with contexts.get(name, torch.inference_mode)():
                sync(device)
                start = time.perf_counter()
                out = runs[name]()
                sync(device)
                if round_:
                    seconds[name].append(time.perf_counter() - start)
                outputs[name] = out.float()

    print(f"EfficientNet-{variant.name.capitalize()} features {tuple(outputs['reference'].shape[1:])} at {size}px, "
          f"batch {n}, {args.batches} batches, {torch.get_num_threads()} threads, {device}")
    ref_rate = n / statistics.median(seconds["reference"])
    for name in runs:
        rate = n / statistics.median(seconds[name])
        diff = (outputs[name] - outputs["reference"]).abs().max().item()
        print(f"  {name:16s} {rate:8.1f} images/s  x{rate / ref_rate:5.2f}  max |diff| {diff:.2e}")
    print(f"  weights load: cold {cold * 1000:.0f} ms (.pth -> safetensors cache), warm {warm * 1000:.0f} ms")
    if args.train_photos:
        for line in train_seconds(args.train_photos):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
