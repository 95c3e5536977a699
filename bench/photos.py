"""EfficientNet-Lite feature extraction, images/s: the reference implementation vs cnnlab.backbones, one process.

    python bench/photos.py [--batches 3] [--batch-size 32] [--variant lite0] [--device cpu]

The reference (PyPI efficientnet-lite-pytorch) runs the plain way: eager fp32 NCHW under no_grad.
Ours runs as ``optimize_for_inference`` makes it, in float32 and in the device's preferred dtype.
Rounds are interleaved (reference, ours, ours, reference, ...) so a noisy shared machine hits all
alike; each figure is the median over batches. Also prints the weight load times (cold, warm).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

import torch

from cnnlab.backbones import (
    efficientnet_lite,
    get_variant,
    load_pretrained,
    packaged_weights_path,
)
from cnnlab.backbones.inference import native_bf16, optimize_for_inference


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=3, help="timed batches per model (after one warm-up)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--variant", default="lite0", choices=["lite0", "lite1", "lite2"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-fuse", action="store_true", help="plain ops instead of oneDNN's fused convolutions")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    return p.parse_args(argv)


def load_times(variant: str) -> tuple[float, float]:
    """Seconds for load_pretrained with an empty cache (reads the .pth, writes safetensors), then warm."""
    old = os.environ.get("CNNLAB_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CNNLAB_DATA"] = tmp
        try:
            start = time.perf_counter()
            load_pretrained(variant)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            load_pretrained(variant)
            warm = time.perf_counter() - start
        finally:
            if old is None:
                del os.environ["CNNLAB_DATA"]
            else:
                os.environ["CNNLAB_DATA"] = old
    return cold, warm


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
