"""Keras's session state: the counters behind automatic names (conv2d, conv2d_1, ...) and `clear_session`."""
from __future__ import annotations

_COUNTS: dict[str, int] = {}


def get_uid(prefix: str) -> int:
    """How many times `prefix` was asked for before in this session: 0, 1, 2, ..."""
    n = _COUNTS.get(prefix, 0)
    _COUNTS[prefix] = n + 1
    return n


def auto_name(prefix: str) -> str:
    """`prefix` the first time in a session, then `prefix_1`, `prefix_2`, ..., as Keras names layers and models."""
    n = get_uid(prefix)
    return prefix if n == 0 else f"{prefix}_{n}"


def clear_session() -> None:
    """Forget every automatic name given so far: the next Conv2D is `conv2d` again (keras.backend.clear_session)."""
    _COUNTS.clear()
