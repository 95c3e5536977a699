"""Read image files and turn them into the input a trained model expects (size, colour, scale)."""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # refuse decompression bombs well before they exhaust memory
# No honest file holds more pixels per byte than this: flat lossless WebP reaches ~25,000, a blank
# 1-bit fax TIFF ~13,000. A header claiming more describes data the file does not have.
MAX_PIXELS_PER_BYTE = 100_000


class ImageError(ValueError):
    """An image file cannot be decoded, or is too large to decode safely, or cannot be converted."""


class BadImageError(ImageError):
    """A file that is not a usable image; `reason` says why in a few words, for lists of skipped files."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class TooManyPixels(BadImageError):
    """An image whose header claims more pixels than cnnlab decodes (a possible decompression bomb)."""


def open_image(path: str | os.PathLike, at_least: int | None = None) -> Image.Image:
    """Decode an image file (first frame of a GIF) with EXIF orientation applied.

    `at_least` (see `decode_side`): a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay
    at least this long (its DCT scaling: a 12-megapixel photo decodes ~8x faster, already smoothed).
    Raises FileNotFoundError for a missing file and BadImageError, whose `reason` names the problem
    (empty, not an image, truncated, too many pixels, unreadable), for anything that cannot be used.
    """
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):  # a FIFO would block open() forever
            raise BadImageError(path, "not a regular file (a FIFO, device or socket), not an image file")
        size = info.st_size
        with open(path, "rb") as file:
            return _decode(file, size, path, at_least=at_least)
    except FileNotFoundError:
        if os.path.lexists(path):  # it is listed, but as a link whose target is gone: "not found" would puzzle
            raise BadImageError(path, f"a broken link (its target {os.readlink(path)!r} does not exist), "
                                      "not an image file") from None
        raise FileNotFoundError(f"image {str(path)!r} not found") from None
    except PermissionError:
        raise BadImageError(path, "unreadable (permission denied)") from None
    except IsADirectoryError:
        raise BadImageError(path, "is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise BadImageError(path, _not_an_image(path)) from None


def decode_bytes(raw: bytes, name: str = "image", formats: list[str] | None = None,
                 at_least: int | None = None) -> Image.Image:
    """`open_image` for bytes already in memory (an upload); `formats` limits the decoders Pillow may try."""
    try:
        return _decode(io.BytesIO(raw), len(raw), name, formats, at_least)
    except UnidentifiedImageError:
        raise BadImageError(name, "not an image Pillow can read") from None


def _decode(file: BinaryIO, size: int, name: str | os.PathLike, formats: list[str] | None = None,
            at_least: int | None = None) -> Image.Image:
    """The one decoder: pixel limits checked from the header before any pixel is decoded."""
    if size == 0:
        raise BadImageError(name, "empty file (0 bytes)")
    try:
        img = Image.open(file, formats=formats)
        if img.width * img.height > MAX_PIXELS:
            raise TooManyPixels(name, f"{img.width}x{img.height} pixels is over the {MAX_PIXELS:,}-pixel limit "
                                      "(refused as a possible decompression bomb)")
        if img.width * img.height > MAX_PIXELS_PER_BYTE * size:
            raise BadImageError(name, f"its header claims {img.width}x{img.height} pixels, more than a "
                                      f"{size:,}-byte file can hold; the file is damaged")
        img.seek(0)
        if at_least and img.format == "JPEG":
            img.draft(None, (at_least, at_least))  # both sides >= at_least, whichever way EXIF turns the photo
        img.load()  # decode now, so truncated or corrupt data fails here and not later
        ImageOps.exif_transpose(img, in_place=True)  # in place: a copy of every upload would cost more than its decode
        return img
    except (BadImageError, UnidentifiedImageError):
        raise
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(name, f"refused as a possible decompression bomb ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types (SyntaxError, struct.error...) on bad data
        raise _damaged(name, exc) from None


def _damaged(name: str | os.PathLike, exc: BaseException) -> BadImageError:
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower():
        return BadImageError(name, "truncated image data (an incomplete download or copy?)")
    return BadImageError(name, f"corrupt image data ({text})")


def _not_an_image(path: Path) -> str:
    try:
        head = path.read_bytes()[:512]
    except OSError:
        return "not an image Pillow can read"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return f"not an image: a text file named {path.suffix or 'without a suffix'}"
        except UnicodeDecodeError:
            pass
    return "not an image Pillow can read (unknown or damaged header)"


def decode_side(input_shape: tuple[int, ...], preprocessing: dict[str, Any] | None = None) -> int | None:
    """The shortest side an image may be decoded at for this model input (`open_image`'s `at_least`); None: full
    size. MNIST-style digits keep every pixel: their ink is cropped before it is resized."""
    h, w, c = input_shape
    if (preprocessing or {}).get("mnist_style") and c == 1:
        return None
    return int((preprocessing or {}).get("resize_to") or max(h, w))


def to_model_input(img: Image.Image, input_shape: tuple[int, ...], preprocessing: dict[str, Any] | None = None) -> np.ndarray:
    """uint8 (H, W, C) of the model's input size and channels; transparency is put on white.

    Other sizes are stretched to (H, W) with an antialiasing bilinear filter, as the folder loader does
    for training images, so a photo is seen by `predict` exactly as its training images were. A model
    pretrained on ImageNet says `"resize_to": 256` instead: the short side bicubic-resized to 256, then
    the centre (H, W) crop, as its evaluation photos were (`cnnlab.backbones.preprocess.resize_and_crop`).
    """
    h, w, c = input_shape
    img = _eight_bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    try:
        img = img.convert("L" if c == 1 else "RGB")
    except ValueError:  # Pillow has no conversion for a few modes (LAB, La)
        raise ImageError(f"cannot use an image of mode {img.mode!r}; save it as RGB or grayscale") from None
    if (preprocessing or {}).get("mnist_style") and c == 1:
        from cnnlab.datasets.digits import mnist_style
        return mnist_style(np.asarray(img), (h, w))[..., None]
    resize_to = (preprocessing or {}).get("resize_to")
    if resize_to and c == 3:
        from cnnlab.backbones.preprocess import resize_and_crop
        if h != w:
            raise ValueError(f"a centre crop after resize_to needs a square input, got {h}x{w}")
        return np.array(resize_and_crop(img, h, int(resize_to)), dtype=np.uint8)  # writable, as torch wants
    img = img.resize((w, h), Image.Resampling.BILINEAR) if img.size != (w, h) else img
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if c == 1 else arr


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit and float grayscale -> 8-bit L by scaling, since PIL's convert('L') would clip at 255."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    a = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = 1.0 if a.size and a.max() <= 1.0 else 255.0
    else:
        top = 65535.0 if a.size and a.max() > 255 else 255.0
    return Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def load_image_for(path: str | os.PathLike, input_shape: tuple[int, ...], preprocessing: dict[str, Any] | None = None) -> np.ndarray:
    """An image file as the uint8 (H, W, C) array a model with this input shape and preprocessing sees."""
    return to_model_input(open_image(path, decode_side(input_shape, preprocessing)), input_shape, preprocessing)


def save_input_png(arr: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 (H, W, C) model input as a PNG with exactly those pixels (no scaling, no margins)."""
    from cnnlab.fsutil import atomic_path
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"expected a uint8 (H, W, 1 or 3) image, got {arr.dtype} {arr.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(tmp, format="PNG")
    return path
