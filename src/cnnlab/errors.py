"""The errors that a user's input or environment causes; front ends report these in one line, no traceback.

Anything else is a bug in cnnlab and keeps its traceback.
"""
from __future__ import annotations


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says what to `pip install`."""


class ModelFileError(ValueError):
    """A model file, checkpoint or run folder is missing, damaged, or not cnnlab's."""


# ValueError: bad input (SpecError, ModelFileError, IDXError, image errors, bad settings).
# OSError: files, folders, disks and networks (missing, exists, no permission, full, unreachable).
# FloatingPointError: training diverged (the message says where and what was kept).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError, MissingExtra)
