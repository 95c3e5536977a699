"""Prediction rows appended to a CSV or JSON Lines file, one atomic write per row, so a run can resume.

Each row is written with a single `os.write` on a file opened with O_APPEND: a killed run (even by
SIGKILL) leaves whole rows and at most one torn last line, which the next run cuts off before it reads
which paths are done. Paths are stored absolute, so a rerun from another folder still recognises them.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

CSV_COLUMNS = ["path", "class", "probability", "top_k", "error"]


def _top_text(top: list[dict[str, Any]]) -> str:
    return "; ".join(f"{t['class']} {t['probability']:.4f}" for t in top)


class ResultFile:
    """Rows of a `--csv` or `--jsonl` file: `done()` lists the paths already in it, `append(row)` adds one."""

    def __init__(self, path: str | os.PathLike, kind: str):
        if kind not in ("csv", "jsonl"):
            raise ValueError(f"result format must be 'csv' or 'jsonl', got {kind!r}")
        self.path, self.kind = Path(path), kind
        if self.path.is_dir():
            raise IsADirectoryError(f"--{kind} {self.path} is a folder; name a file to write")

    def done(self) -> set[str]:
        """The paths already written (whole rows only; a torn last line is cut off the file first)."""
        if not self.path.exists():
            return set()
        self._cut_torn_tail()
        text = self.path.read_text(encoding="utf-8")
        if not text:
            return set()
        if self.kind == "jsonl":
            return {json.loads(line)["path"] for line in text.splitlines() if line.strip()}
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames != CSV_COLUMNS:
            raise ValueError(f"{self.path} has the columns {reader.fieldnames}, not those of cnnlab predict "
                             f"({', '.join(CSV_COLUMNS)}); name another --csv file")
        return {row["path"] for row in reader}

    def _cut_torn_tail(self) -> None:
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return
            step, end = 1 << 16, size
            while end > 0:  # find the last newline: what follows it is the torn row
                start = max(0, end - step)
                f.seek(start)
                cut = f.read(end - start).rfind(b"\n")
                if cut >= 0:
                    f.truncate(start + cut + 1)
                    return
                end = start
            f.truncate(0)

    def line(self, row: dict[str, Any]) -> bytes:
        if self.kind == "jsonl":
            return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        buf = io.StringIO()
        prob = "" if row.get("probability") is None else f"{row['probability']:.6f}"
        csv.writer(buf, lineterminator="\n").writerow(
            [row["path"], row.get("class") or "", prob, _top_text(row.get("top") or []), row.get("error") or ""])
        return buf.getvalue().encode("utf-8")

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        if new and self.kind == "csv":
            self._write(",".join(CSV_COLUMNS).encode() + b"\n")

    def _write(self, data: bytes) -> None:
        written = os.write(self.fd, data)
        if written != len(data):  # a full disk: the torn line is cut off on the next run
            raise OSError(f"could not write a whole row to {self.path} (disk full?)")

    def append(self, row: dict[str, Any]) -> None:
        self._write(self.line(row))

    def close(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None
