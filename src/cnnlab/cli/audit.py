"""The embedding audit's part of `cnnlab data check`: options, and the report's extra keys and text."""
from __future__ import annotations

import argparse
from typing import Any


def add_audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="also find near-duplicates and likely label errors from a pretrained backbone's embeddings "
                        "(default: on for photo folders, off for small images such as digits)")
    p.add_argument("--sheet", metavar="OUT.png", help="write the near-duplicate groups as a contact sheet PNG")


def add_audit(report: dict[str, Any], args: argparse.Namespace) -> str:
    """Add the audit's keys to `report` when asked for (or for photos); returns its text for the terminal."""
    from cnnlab.train.transfer import is_photo_folder
    wanted = args.embeddings if args.embeddings is not None else report["images"] > 0 and is_photo_folder(args.path)[0]
    if not wanted:
        return ""
    from cnnlab.runs.audit import audit_folder
    audit = audit_folder(args.path, progress=not args.json)
    report["near_duplicates"], report["suspect_labels"] = audit["near_duplicates"], audit["suspect_labels"]
    report["embeddings"] = audit["embeddings"]
    if args.sheet:
        from cnnlab.datasets.folders.contact_sheet import contact_sheet
        report["contact_sheet"] = str(contact_sheet(report["root"], audit["near_duplicates"], args.sheet))
    return "\n" + audit_text(report)


def audit_text(r: dict[str, Any]) -> str:
    groups, suspects = r["near_duplicates"], r["suspect_labels"]
    out = [f"near-duplicates ({len(groups)} group{'s' * (len(groups) != 1)}; resized, recompressed, mirrored or "
           f"slightly cropped copies, from {r['embeddings']['model']} embeddings):"]
    for g in groups:
        where = []
        if len(g["classes"]) > 1:
            where.append(f"across classes {' and '.join(g['classes'])}")
        if len(g["splits"]) > 1:
            where.append(f"across splits {' and '.join(g['splits'])} (leakage)")
        out.append(f"  {g['similarity']:.3f}  " + ", ".join(g["paths"]) + (f"  [{'; '.join(where)}]" if where else ""))
    if r["embeddings"]["label_check"] != "done":
        out.append(r["embeddings"]["label_check"])
    else:
        out.append(f"likely label errors ({len(suspects)}; a cross-validated head on the embeddings disagrees with the "
                   "folder, the least likely label first):")
        out += [f"  {s['path']}: filed as {s['label']}, looks like {s['suggested']} ({s['confidence']:.2f})"
                for s in suspects]
    if "contact_sheet" in r:
        out.append(f"contact sheet: {r['contact_sheet']}")
    return "\n".join(out)
