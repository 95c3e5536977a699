"""A contact sheet PNG of near-duplicate groups: one row of captioned thumbnails per group, so a person can
judge each group at a glance before deleting anything."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from cnnlab.datasets.image_files import ImageError, open_image
from cnnlab.fsutil import atomic_path

CELL = 160  # thumbnail side in pixels
CAPTION = 28  # room under each thumbnail for its path
MAX_ROWS = 200  # a sheet of more groups would be too tall to look at; the JSON lists them all


def contact_sheet(root: str | os.PathLike, groups: list[dict[str, Any]], out: str | os.PathLike) -> Path:
    """Write `out`: each of `groups` (`{"paths": [...relative to root], "similarity": s}`) as a row."""
    rows = groups[:MAX_ROWS]
    cols = max((len(g["paths"]) for g in rows), default=1)
    sheet = Image.new("RGB", (cols * CELL, max(1, len(rows)) * (CELL + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, group in enumerate(rows):
        top = r * (CELL + CAPTION)
        for c, rel in enumerate(group["paths"]):
            try:
                thumb = open_image(Path(root) / rel, at_least=CELL).convert("RGB")
                thumb.thumbnail((CELL - 4, CELL - 4))
                sheet.paste(thumb, (c * CELL + (CELL - thumb.width) // 2, top + (CELL - thumb.height) // 2))
            except (ImageError, OSError):
                draw.text((c * CELL + 4, top + CELL // 2), "unreadable", fill="red")
            draw.text((c * CELL + 2, top + CELL), _short(rel), fill="black")
        draw.text((2, top + CELL + 13), f"similarity {group['similarity']:.3f}", fill="gray")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out


def _short(text: str, width: int = 26) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]
