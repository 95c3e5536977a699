"""EfficientNet-Lite feature extraction, images/s: the reference implementation vs cnnlab.backbones, one process;
then `cnnlab train` end to end on an exported folder of real photos, head alone and with --fine-tune.

    python bench/photos.py [--batches 3] [--batch-size 32] [--variant lite0] [--device cpu] [--train-photos 40]

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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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
