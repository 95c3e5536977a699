"""`cnnlab predict FOLDER --jsonl` vs onnxruntime running the exported model, on the same images, in one run.

    python bench/predict_folder.py FOLDER [--run imagenet|RUN] [--limit N] [--batch-size 32] [--rounds 1]

Each side runs in its own child process (so its peak RSS is its own, read from wait4's rusage): cnnlab
through the real CLI path (`cnnlab.cli.main(["predict", RUN, FOLDER, "--jsonl", ...])`); onnxruntime on
the model exported as cnnlab exports it (uint8 NHWC in, scaling inside), fed by the same threaded decoder
(`decoded_batches`, the model's own `to_model_input`), so only the network differs. Rounds alternate
(ort, cnnlab, cnnlab, ort, ...) so a noisy shared machine hits both alike. Prints images/s, their ratio, the
peak RSS of each, and the top-1 agreement of the two on every image. Both times run from the start of the
work: listing the folder, loading the model (and for cnnlab building its engine), decoding, predicting.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def export_onnx(run: str, out: Path) -> Path:
    import torch

    from cnnlab.runs.export import PixelsToScores, onnx_bytes
    from cnnlab.runs.open_model import open_model
    model = open_model(run)
    wrapper = PixelsToScores(model.module).eval()
    example = torch.zeros((2, *model.spec.input_shape), dtype=torch.uint8)
    out.write_bytes(onnx_bytes(wrapper, example, {}))
    return out


def worker_cnnlab(run: str, folder: str, out: Path, batch_size: int, limit: int | None) -> None:
    from cnnlab.cli.commands import main
    started = time.perf_counter()
    paths = _files(folder, limit)
    listing = out.with_suffix(".list")
    code = main(["predict", run, *map(str, paths), "--jsonl", str(out), "--batch-size", str(batch_size), "--quiet"])
    seconds = time.perf_counter() - started
    listing.write_text(json.dumps({"code": code, "seconds": seconds, "n": len(paths)}))


def worker_ort(run: str, folder: str, out: Path, batch_size: int, limit: int | None, onnx_file: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    from cnnlab.datasets.decode_stream import decoded_batches
    from cnnlab.runs.open_model import open_model
    started = time.perf_counter()  # from the start, as cnnlab's time includes loading its model
    model = open_model(run)
    shape, preprocessing, names = tuple(model.spec.input_shape), model.preprocessing, model.class_names
    del model  # ort needs only the file; do not count the torch module in its memory
    paths = _files(folder, limit)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    with open(out, "w") as f:
        for batch in decoded_batches(paths, shape, preprocessing, batch_size):
            if len(batch.indices):
                probs = session.run(["probabilities"], {"images": batch.images})[0]
                for i, p in zip(batch.indices, probs):
                    f.write(json.dumps({"path": os.path.abspath(paths[i]), "class": names[int(np.argmax(p))]}) + "\n")
    seconds = time.perf_counter() - started
    out.with_suffix(".list").write_text(json.dumps({"code": 0, "seconds": seconds, "n": len(paths)}))


def _files(folder: str, limit: int | None) -> list[Path]:
    from cnnlab.datasets.image_walk import image_paths
    return image_paths([folder])[0][:limit]


def run_child(args: list[str]) -> int:
    """Run this script as a child; its peak RSS in bytes (Linux reports ru_maxrss in KiB)."""
    proc = subprocess.Popen([sys.executable, __file__, *args])
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child {args[:2]} failed")
    return usage.ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--run", default="imagenet")
    p.add_argument("--limit", type=int)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--worker", choices=["cnnlab", "ort"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--onnx", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker == "cnnlab":
        worker_cnnlab(a.run, a.folder, Path(a.out), a.batch_size, a.limit)
        return 0
    if a.worker == "ort":
        worker_ort(a.run, a.folder, Path(a.out), a.batch_size, a.limit, Path(a.onnx))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export_onnx(a.run, Path(tmp) / "model.onnx")
        results: dict[str, list[tuple[float, int]]] = {"cnnlab": [], "ort": []}
        order = [side for r in range(a.rounds) for side in (("ort", "cnnlab") if r % 2 == 0 else ("cnnlab", "ort"))]
        tops: dict[str, dict[str, str]] = {}
        for k, side in enumerate(order):
            out = Path(tmp) / f"{side}-{k}.jsonl"
            common = [a.folder, "--run", a.run, "--batch-size", str(a.batch_size), "--worker", side, "--out", str(out)]
            rss = run_child(common + (["--limit", str(a.limit)] if a.limit else []) + ["--onnx", str(onnx_file)])
            info = json.loads(out.with_suffix(".list").read_text())
            results[side].append((info["n"] / info["seconds"], rss))
            tops[side] = {r["path"]: r["class"] for r in map(json.loads, out.read_text().splitlines())}
            print(f"{side:>7}: {info['n']:,} images in {info['seconds']:.1f}s = {info['n'] / info['seconds']:.1f} "
                  f"images/s, peak RSS {rss / 2**30:.2f} GiB", flush=True)
    best = {side: max(r[0] for r in rs) for side, rs in results.items()}
    peak = {side: max(r[1] for r in rs) for side, rs in results.items()}
    same = sum(tops["cnnlab"].get(path) == cls for path, cls in tops["ort"].items())
    print(f"cnnlab / onnxruntime images/s: {best['cnnlab'] / best['ort']:.2f}x ({best['cnnlab']:.1f} vs {best['ort']:.1f}); "
          f"peak RSS cnnlab {peak['cnnlab'] / 2**30:.2f} GiB, onnxruntime {peak['ort'] / 2**30:.2f} GiB; "
          f"same top-1 on {same:,} of {len(tops['ort']):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
