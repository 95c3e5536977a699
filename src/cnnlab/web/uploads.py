"""Uploaded images: size limits, type sniffed from the bytes, decoding that refuses bombs and damaged files."""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
from typing import Any

from PIL import Image

from cnnlab.datasets.image_files import MAX_PIXELS, MAX_PIXELS_PER_BYTE, BadImageError, TooManyPixels, decode_bytes

MAX_IMAGE_BYTES = 8 * 1024 * 1024  # an encoded photo from a phone fits; more is not a digit
MAX_BODY_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024  # the same image as base64 inside JSON

EXIF_ORIENTATION = 0x0112
# Bytes a pixel of the whole image that preprocessing holds beside the decoded pixels, at its peak. Measured
# (peak RSS, 16-megapixel PNGs, 2026-12-04) with a 12-25% margin: 16-bit or float images are scaled to 8 bits
# in float64 (28 B/px in all for I;16); MNIST-style digits are cleaned in float32 copies (17-20 B/px in all);
# colour conversions and the transparency composite of RGBA need up to 16 B/px in all.
WORK_BYTES_PER_PIXEL = {"high_bit": 30, "mnist_style": 18, "colour": 14}

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


def image_format(raw: bytes) -> str:
    """The format of an upload's bytes; UploadError for an empty, too large or unknown one."""
    if not raw:
        raise UploadError(400, "the image is empty (0 bytes)")
    if len(raw) > MAX_IMAGE_BYTES:
        raise UploadError(413, f"the image is {len(raw):,} bytes; the limit is {MAX_IMAGE_BYTES:,}")
    fmt = sniff(raw)
    if fmt is None:
        raise UploadError(415, "not an image this server reads: expected PNG, JPEG, GIF, BMP or WEBP bytes")
    return fmt


def decode_cost(raw: bytes, input_shape: tuple[int, ...], mnist_style: bool, at_least: int | None = None) -> int:
    """Bytes that decoding `raw` into a model input will hold at its peak, estimated from the image's header.

    The decoded pixels (Pillow keeps 1, 2 or 4 bytes a pixel; twice when EXIF turns the image), the copies
    that preprocessing makes of the whole image (`WORK_BYTES_PER_PIXEL`) and the model input (uint8 and
    float32). 0 for an image the decoder refuses from its header (too many pixels, not readable): that
    refusal allocates nothing.
    """
    fmt = image_format(raw)
    try:
        with Image.open(io.BytesIO(raw), formats=[fmt]) as img:
            if at_least and img.format == "JPEG":
                img.draft(None, (at_least, at_least))  # as the decoder will: smaller sides, fewer bytes
            (width, height), mode = img.size, img.mode
            turned = _may_turn(img)
    except Exception:  # noqa: BLE001 - the decode raises the same problem with its reason, before allocating
        return 0
    pixels = width * height
    if pixels > MAX_PIXELS or pixels > MAX_PIXELS_PER_BYTE * len(raw):
        return 0
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    kind = "high_bit" if mode in ("I", "F") or mode.startswith("I;16") else "mnist_style" if mnist_style else "colour"
    return pixels * (stored * (2 if turned else 1) + WORK_BYTES_PER_PIXEL[kind]) + 5 * math.prod(input_shape)


def _may_turn(img: Image.Image) -> bool:
    """Whether EXIF may turn the image (a turned copy is made), without decoding any pixel."""
    if img.format in ("JPEG", "WEBP") or "exif" in img.info:  # EXIF read with the header
        return img.getexif().get(EXIF_ORIENTATION, 1) != 1
    # A PNG's eXIf chunk may follow the pixels, and Pillow's getexif() would decode them all to find it
    return img.format == "PNG"


def decode_image(raw: bytes, at_least: int | None = None) -> Image.Image:
    """Bytes of an image file -> a loaded PIL image, EXIF orientation applied, first frame of an animation.

    Decoding is `cnnlab.datasets.image_files`' (one decoder, one pixel limit); this adds the byte limit,
    the format sniffed from the bytes, and the HTTP status of each refusal.
    """
    fmt = image_format(raw)
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
