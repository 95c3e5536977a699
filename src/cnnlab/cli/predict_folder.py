"""`cnnlab predict RUN PATH... --csv FILE | --jsonl FILE [--sort-into DIR]`: folders of images, streamed."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def wants_folder_mode(args: argparse.Namespace) -> bool:
    """A folder among the paths, or a results file or sorting asked for: the streaming path."""
    return bool(args.csv or args.jsonl or args.sort_into) or any(Path(p).is_dir() for p in args.images)


def run(args: argparse.Namespace) -> int:
    from cnnlab.datasets.image_walk import image_paths
    from cnnlab.runs import predict_folder as pf
    from cnnlab.runs.open_model import open_model
    from cnnlab.runs.result_file import ResultFile

    if args.csv and args.jsonl:
        raise ValueError("give --csv or --jsonl, not both")
    if args.show_input:
        raise ValueError("--show-input works on image files named one by one, not with folders or --csv/--jsonl")
    files, skipped = image_paths(args.images)
    sort_into = Path(args.sort_into).resolve() if args.sort_into else None
    if sort_into is not None:
        for given in args.images:
            root = Path(given).resolve()
            if root.is_dir() and (sort_into == root or root in sort_into.parents):
                raise ValueError(f"--sort-into {args.sort_into} is inside {given}: the sorted copies would be "
                                 "read as new images on the next run; choose a folder outside it")
    for path, reason in skipped[:20]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not files:
        raise ValueError(f"no image files in {' '.join(map(str, args.images))}")
    model = open_model(args.run)
    rank, world = pf.rank_and_world()
    if not (args.csv or args.jsonl):
        for row in pf.prediction_rows(model, files, args.top_k, args.batch_size, progress=not args.quiet,
                                      engine=args.engine):
            print(f"{row['path']}: " + (f"error: {row['error']}" if row["error"] else
                                        ", ".join(f"{t['class']} {t['probability']:.3f}" for t in row["top"])))
        return 0
    out = ResultFile(args.csv or args.jsonl, "csv" if args.csv else "jsonl")
    target = pf.part_file(out, rank, world) if world > 1 else out
    mine = files[rank::world]
    result = pf.predict_to_file(model, mine, target, args.top_k, args.batch_size, sort_into, args.copy,
                                progress=not args.quiet, engine=args.engine)
    speed = f"{result.written / max(result.seconds, 1e-9):.1f} images/s" if result.written else "nothing left to predict"
    print(f"{result.written:,} rows written to {target.path} ({result.errors:,} unreadable), {result.resumed:,} "
          f"already there; {speed}" + (f"; copies in {sort_into}" if sort_into else ""))
    if world > 1:
        _barrier()
        if rank == 0:
            added = pf.merge_parts(out, world)
            print(f"merged {world} parts into {out.path} ({added:,} rows added)")
    return 0


def _barrier() -> None:
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def add_folder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", metavar="FILE", help="write one row per image to FILE (path, class, probability, "
                   "top_k, error); a rerun appends only the images FILE lacks")
    p.add_argument("--jsonl", metavar="FILE", help="as --csv, as JSON Lines")
    p.add_argument("--sort-into", metavar="DIR", help="also hard-link (or copy) each image into DIR/<class>/; "
                   "originals are never moved or overwritten")
    p.add_argument("--copy", action="store_true", help="with --sort-into: copy instead of hard-linking")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--engine", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="for photo models: torch (the fast backbone copy, bf16 where native) or onnxruntime (the "
                        "model's ONNX export, cached); auto: onnxruntime on a CPU without AMX when installed")
