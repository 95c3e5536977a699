"""Measure: MNIST exported as PNG folders and read back by `train --data DIR` trains as well as the arrays.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/folder_vs_arrays.py [--epochs 2] [--dir /tmp/mnist-png]

Exports all 70,000 MNIST images as PNG files (train/ and test/ split folders), then trains the same
model with the same TrainConfig and seed twice: from the built-in arrays and from the folder. Prints
both test accuracies, their difference (the issue asks for at most 0.3 points), the decode time of the
folder and the time to load it again from the cache. Takes a few minutes on a CPU.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cnnlab.datasets.folders.export import export_images
from cnnlab.datasets.folders.load import load_folder
from cnnlab.datasets.registry import load
from cnnlab.runs import run_folder
from cnnlab.spec import zoo
from cnnlab.train.config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="seed")
    parser.add_argument("--dir", help="where to export the PNGs (default: a temporary folder)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    arrays = load("mnist")
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cnnlab-bench-"))
    folder = work / "mnist-png"
    t = time.perf_counter()
    if not folder.exists():
        export_images(arrays, folder, "png", "splits")
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    from_folder = load_folder(folder)
    decode_s = time.perf_counter() - t
    t = time.perf_counter()
    again = load_folder(folder)
    cached_s = time.perf_counter() - t
    assert again.report.cached
    print(f"export {export_s:.1f}s, first load (decode) {decode_s:.1f}s, cached load {cached_s:.2f}s; "
          f"{len(from_folder.x_train):,} train / {len(from_folder.x_test):,} test, "
          f"{'x'.join(map(str, from_folder.input_shape))}, bad files: {len(from_folder.report.bad_files)}", flush=True)

    config = TrainConfig(epochs=args.epochs, seed=0, device="cpu")
    results = {}
    for name, data in (("arrays", arrays), ("folder", from_folder)):
        spec, _ = zoo.resolve(args.model, data.input_shape, len(data.class_names))
        t = time.perf_counter()
        _, _, evaluation = run_folder.train_run(data, spec, config, work / f"run-{name}", model_name=args.model, figures=False)
        results[name] = {"test_accuracy": evaluation.accuracy, "seconds": time.perf_counter() - t}
        print(f"{name:>6}: test accuracy {evaluation.accuracy:.4f} ({results[name]['seconds']:.0f}s)", flush=True)
    diff = 100 * (results["folder"]["test_accuracy"] - results["arrays"]["test_accuracy"])
    print(f"folder - arrays = {diff:+.2f} points ({'within' if abs(diff) <= 0.3 else 'OUTSIDE'} the 0.3-point bound)")
    if args.json:
        Path(args.json).write_text(json.dumps({**results, "difference_points": diff, "epochs": args.epochs,
                                               "model": args.model, "decode_seconds": decode_s,
                                               "cached_load_seconds": cached_s}, indent=2) + "\n")


if __name__ == "__main__":
    main()
