"""`cnnlab data check|export`: what is in an image folder, and a built-in dataset written out as image files."""
from __future__ import annotations

import argparse
import json


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="class counts, imbalance, sizes, unreadable files and duplicates of an "
                           "image folder, each with a suggested fix")
    check.add_argument("path", help="image folder (one subfolder per class, or train/ val/ test/ split folders)")
    check.add_argument("--json", action="store_true", help="print the report as JSON, for scripts")
    from cnnlab.cli.audit import add_audit_arguments
    add_audit_arguments(check)
    export = sub.add_parser("export", help="write a built-in dataset as image files in the folder layout that "
                            "`train --data DIR` reads")
    export.add_argument("name", help="built-in dataset (mnist, fashion_mnist, ...)")
    export.add_argument("--out", required=True, help="folder to create")
    export.add_argument("--format", choices=["png", "bmp", "webp", "jpeg"], default="png",
                        help="image format (default png; all but jpeg are lossless)")
    export.add_argument("--layout", choices=["splits", "classes"], default="splits",
                        help="splits: OUT/train/<class>/, OUT/test/<class>/ (default); classes: OUT/<class>/")
    export.add_argument("--limit", type=int, help="only the first N images of each split")
    export.add_argument("--data-dir", help="folder holding the dataset's files, when not in the usual places")
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "check":
        from cnnlab.cli.audit import add_audit
        from cnnlab.datasets.folders.check import check_folder, format_check
        report = check_folder(args.path)
        text = add_audit(report, args)
        print(json.dumps(report, indent=2) if args.json else format_check(report) + text)
        return 0
    from cnnlab.datasets.folders.export import export_images
    from cnnlab.datasets.registry import load
    data = load(args.name, args.data_dir)
    summary = export_images(data, args.out, args.format, args.layout, args.limit, overwrite=args.overwrite)
    where = ", ".join(f"{n:,} in {summary.out / split}" if split else f"{n:,} in {summary.out}"
                      for split, n in summary.counts.items())
    print(f"wrote {sum(summary.counts.values()):,} {args.format.upper()} files ({where}), one folder per class: "
          f"{', '.join(summary.folder_names)}")
    print(f"train on them with: cnnlab train --data {summary.out}")
    return 0
