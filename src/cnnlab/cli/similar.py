"""`cnnlab similar RUN|imagenet IMAGE --in DIR [--top-k 10]`: the photos of a folder nearest to one image."""
from __future__ import annotations

import argparse
import json
import sys


def add_similar_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="imagenet (the pretrained EfficientNet-Lite0), imagenet-lite1/-lite2, or a photo run "
                   "(its own, maybe fine-tuned, backbone)")
    p.add_argument("image", help="the image to look for")
    p.add_argument("--in", dest="folder", required=True, help="folder to search (walked recursively)")
    p.add_argument("--top-k", type=int, default=10, help="how many images to list (default 10)")
    p.add_argument("--json", action="store_true", help="print the matches as JSON")


def cmd_similar(args: argparse.Namespace) -> int:
    from cnnlab.runs.similar import similar_images
    matches, errors = similar_images(args.run, args.image, args.folder, args.top_k, progress=not args.json)
    for path, reason in list(errors.items())[:20]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"path": str(m.path), "similarity": round(m.similarity, 4)} for m in matches], indent=2))
        return 0
    for rank, m in enumerate(matches, 1):
        print(f"{rank:>3}. {m.similarity:.3f}  {m.path}")
    return 0
