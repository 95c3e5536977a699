"""Names from the disk or a model file made safe for a terminal: no escape sequences, no line breaks, no crash.

A class folder named `\\x1b[2J` would clear the screen when printed raw, one named `a\\nb` would forge an
output line, and a file name whose bytes are not UTF-8 (kept by Python as surrogate escapes) would make
`print` raise UnicodeEncodeError. `printable` shows each such character as its escape instead.
"""
from __future__ import annotations


def printable(text: object) -> str:
    """`text` with control and other non-printable characters escaped (`\\x1b`, `\\n`, `\\u202e`) and the
    undecodable bytes of a file name shown as `\\xNN`; ordinary text, spaces and any script are kept."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif 0xDC80 <= ord(c) <= 0xDCFF:  # os.fsdecode's surrogate escape of a byte that is not UTF-8
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        else:
            out.append(repr(c)[1:-1])
    return "".join(out)
