"""A progress line with speed and ETA for work over many files (predicting, embedding a folder).

The style of `cnnlab.train.progress`: a live line redrawn in place on a terminal; in a pipe or a log file a
plain line every 10% of the work or every 10 s, whichever comes first (control codes in a log are noise).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

LINE_FRACTION = 0.1  # in a pipe or a log, a line every 10% of the work (of an epoch, in training)...
LINE_SECONDS = 10.0  # ...or every 10 s, whichever comes first


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`: short enough for a progress line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class CountProgress:
    """`embed 1,234/10,000 images  45.2 images/s  ETA 3m14s`, updated by `update(done)`; `close()` ends it.

    Speed and ETA count only the items done in this run (`start` of them were already done, e.g. read from
    a cache), so a resumed run does not promise an ETA from items it never computed.
    """

    def __init__(self, total: int, label: str, what: str = "images", stream: Any = None, start: int = 0,
                 enabled: bool = True, clock: Callable[[], float] = time.perf_counter):
        self.total, self.label, self.what, self.start = total, label, what, start
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > start
        self.live = bool(getattr(self.stream, "isatty", None) and self.stream.isatty())
        self.clock = clock
        self.began = self.last_line = clock()
        self.next_count, self.done, self.printed_at = start, start, -1

    def line(self) -> str:
        elapsed = self.clock() - self.began
        fresh = self.done - self.start
        speed = fresh / elapsed if elapsed > 0 and fresh else 0.0
        text = f"{self.label} {self.done:,}/{self.total:,} {self.what}"
        if speed:
            text += f"  {speed:,.1f} {self.what}/s"
            text += f"  ETA {duration((self.total - self.done) / speed)}" if self.done < self.total else \
                f"  in {duration(elapsed)}"
        return text

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = self.clock()
        if self.live:
            print("\r" + self.line() + "\033[K", end="", file=self.stream, flush=True)
        elif done >= self.next_count or now - self.last_line >= LINE_SECONDS:
            print(self.line(), file=self.stream, flush=True)
            self.last_line, self.printed_at = now, done
            self.next_count = done + max(1, int(self.total * LINE_FRACTION))

    def close(self) -> None:
        if not self.enabled:
            return
        if self.live:
            print("\r" + self.line() + "\033[K", file=self.stream, flush=True)
        elif self.printed_at != self.done:
            print(self.line(), file=self.stream, flush=True)
