"""Uploaded images: size limits, type sniffed from the bytes, decoding that refuses bombs and damaged files."""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from PIL import Image

from cnnlab.datasets.image_files import BadImageError, TooManyPixels, decode_bytes

MAX_IMAGE_BYTES = 8 * 1024 * 1024  # an encoded photo from a phone fits; more is not a digit
MAX_BODY_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024  # the same image as base64 inside JSON

# Magic numbers: a name or a Content-Type header says nothing about what the bytes are.
SIGNATURES: dict[bytes, str] = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}


class UploadError(ValueError):
    """An upload the server will not decode; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def sniff(raw: bytes) -> str | None:
    """The image format the bytes start with (PNG, JPEG, GIF, BMP, WEBP), or None."""
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in SIGNATURES.items() if raw.startswith(magic)), None)


def decode_image(raw: bytes, at_least: int | None = None) -> Image.Image:
    """Bytes of an image file -> a loaded PIL image, EXIF orientation applied, first frame of an animation.

    Decoding is `cnnlab.datasets.image_files`' (one decoder, one pixel limit); this adds the byte limit,
    the format sniffed from the bytes, and the HTTP status of each refusal.
    """
    if not raw:
        raise UploadError(400, "the image is empty (0 bytes)")
    if len(raw) > MAX_IMAGE_BYTES:
        raise UploadError(413, f"the image is {len(raw):,} bytes; the limit is {MAX_IMAGE_BYTES:,}")
    fmt = sniff(raw)
    if fmt is None:
        raise UploadError(415, "not an image this server reads: expected PNG, JPEG, GIF, BMP or WEBP bytes")
    try:
        return decode_bytes(raw, f"the {fmt} image", formats=[fmt], at_least=at_least)
    except TooManyPixels as exc:
        raise UploadError(413, str(exc)) from None
    except BadImageError as exc:
        raise UploadError(400, str(exc)) from None


def image_from_json(body: bytes) -> bytes:
    """`{"image": "data:image/png;base64,..."}` (or bare base64) -> the image's bytes."""
    try:
        data: Any = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UploadError(400, f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("image"), str):
        raise UploadError(422, 'send {"image": "<base64 PNG or data: URL>"}')
    text = data["image"]
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise UploadError(422, "the data: URL must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UploadError(400, f"the image is not valid base64 ({exc})") from None
