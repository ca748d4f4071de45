"""Decoding one image as its camera meant it: upright (EXIF orientation), RGB, 8 bits, the first frame.

Phones store a photo's pixels as the sensor read them and say in the EXIF ``Orientation`` tag how to turn them;
torchvision's decoders ignore the tag, so without it a portrait photo trains and predicts lying on its side. The
tag is read here once, with the size, before anything is decoded, and applied to the decoded pixels whichever
decoder made them. Images are checked by decoding them in full (a truncated JPEG has a valid header), within a
pixel limit set before decoding (a 30k x 30k PNG is a few kilobytes on disk and 2.7 GB decoded). An animated image
is its first frame, decoded alone: its other frames are never decoded, so the frame count costs nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from ..common import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Images that phones and cameras save and may not be decodable here: taken into a folder to caption so that each
# one is decoded or refused by name with the fix, never left out without a word.
OTHER_IMAGE_SUFFIXES = {".heic", ".heif", ".avif", ".jxl", ".svg", ".psd", ".dng", ".cr2", ".nef", ".arw"}
MAX_PIXELS = 100_000_000  # ~300 MB as decoded RGB: a 100-megapixel photo is accepted, a decompression bomb is not
ORIENTATION = 0x0112  # the EXIF tag
# PIL's own bomb check has a fixed limit and would override data.max_image_pixels; the size is checked here instead.
Image.MAX_IMAGE_PIXELS = None


def image_size_problem(image: Image.Image, max_pixels: int) -> str | None:
    """Why an opened (not yet decoded) image is too large or empty to use, or None."""
    width, height = image.size
    if width * height > max_pixels:
        return (
            f"is {width}x{height} pixels ({width * height / 1e6:.0f} MP), more than data.max_image_pixels = "
            f"{max_pixels:,}; shrink it or raise the limit"
        )
    if width * height == 0:
        return "has no pixels"
    return None


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8; 1 is upright) of an opened image, read without decoding its pixels."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # an eXIf chunk after the pixels would need a full decode to find; cameras do not write PNG
    value = image.getexif().get(ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1  # other values have no defined meaning


def upright(image: torch.Tensor, turn: int) -> torch.Tensor:
    """``image`` (..., H, W) turned as EXIF orientation ``turn`` says (the same as PIL's ``exif_transpose``)."""
    if turn in (5, 6, 7, 8):
        image = image.transpose(-1, -2)  # the stored rows are the picture's columns
    if turn in (2, 3, 6, 7):
        image = image.flip(-1)
    if turn in (3, 4, 7, 8):
        image = image.flip(-2)
    return image


def _open(path: Path, max_pixels: int) -> tuple[int, bool]:
    """The orientation and whether the image is animated, or a DataError naming why it cannot be used."""
    try:
        with Image.open(path) as header:  # reads the header only: the size is known before decoding
            problem = image_size_problem(header, max_pixels)
            if not problem:
                return orientation(header), bool(getattr(header, "is_animated", False))
    except Exception as error:  # PIL raises many types for damaged files; all mean "not an image we can read"
        raise DataError(f"image {str(path)!r} cannot be decoded ({type(error).__name__}: {error})") from None
    raise DataError(f"image {str(path)!r} {problem}")


def _turned_tiff(image: Image.Image) -> None:
    """Let PIL decode a turned TIFF at the size it is stored in (it turns it after decoding).

    Pillow 13 reports a TIFF with orientation 5-8 at its upright size before loading and hands that size to its
    decoder, which garbles every mode but RGB and 1-bit; ``_tile_size`` (private) is the size the pixels are stored
    in. tests/test_image_reading.py fails for such TIFFs if this stops holding.
    """
    stored = getattr(image, "_tile_size", None)
    if image.format == "TIFF" and stored and image.size != stored:
        image._size = stored


def _pil_pixels(path: Path) -> torch.Tensor:
    """The first frame through PIL, upright, as (3, H, W) uint8; 16-bit grey scaled (PIL's conversion clips it).

    PIL turns some formats upright itself while loading them (TIFF) and drops the tag; ``exif_transpose`` turns the
    others, and leaves those alone.
    """
    with Image.open(path) as opened:
        opened.seek(0)
        _turned_tiff(opened)
        image = ImageOps.exif_transpose(opened)
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            grey = np.asarray(image, dtype=np.int64)
            if image.mode == "I" and (grey.min() < 0 or grey.max() > 65535):
                raise ValueError("32-bit integer pixels; convert it to an 8- or 16-bit PNG")
            return torch.from_numpy((grey / 257).round().astype(np.uint8)).expand(3, -1, -1).contiguous()
        if image.mode == "F":
            raise ValueError("32-bit float pixels; convert it to an 8- or 16-bit PNG")
        return v2.functional.pil_to_tensor(image.convert("RGB"))


def decode(path: Path, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Any image (grayscale, RGBA, palette, 16-bit, animated, EXIF-rotated) as an upright (3, H, W) uint8 tensor."""
    turn, animated = _open(path, max_pixels)
    if not animated:  # torchvision would decode every frame of an animated GIF
        try:
            image = decode_image(str(path), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError):
            pass  # formats torchvision does not decode (BMP, TIFF) go through PIL
        else:
            if image.dtype != torch.uint8:  # 16-bit PNGs
                image = (image.float() / 257).round().to(torch.uint8)
            return upright(image[0] if image.ndim == 4 else image, turn)
    try:
        return _pil_pixels(path)
    except Exception as error:
        raise DataError(f"image {str(path)!r} cannot be decoded ({error}); replace or remove it") from None


def reduced_jpeg(path: Path, size: int, max_pixels: int = MAX_PIXELS) -> torch.Tensor | None:
    """A JPEG at least twice ``size`` on each side, decoded at 1/2, 1/4 or 1/8 of its size and upright, or None for
    other images. PIL's ``draft`` has the JPEG decoder skip the detail the resize would throw away: a phone photo
    resized to 224 px decodes several times faster, and the result still has at least ``size`` pixels a side."""
    turn, _ = _open(path, max_pixels)
    try:
        with Image.open(path) as image:
            if image.format != "JPEG" or min(image.size) < 2 * size:
                return None
            image.draft("RGB", (size, size))
            pixels = v2.functional.pil_to_tensor(image.convert("RGB"))
    except Exception as error:  # PIL raises many types for damaged files
        raise DataError(f"image {str(path)!r} cannot be decoded ({error}); replace or remove it") from None
    return upright(pixels, turn)


def read_image(path: Path, size: int, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """An image as the model sees it: decoded (at reduced size where it is a large JPEG), then resized to a
    ``size`` x ``size`` uint8 RGB tensor."""
    image = reduced_jpeg(path, size, max_pixels)
    if image is None:
        image = decode(path, max_pixels)
    if image.shape[-2:] == (size, size):
        return image
    return v2.functional.resize(image, [size, size], antialias=True)


def check_image(path: Path, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why ``path`` is not a usable image, or None: it exists, is within the pixel limit, its EXIF orientation can
    be read, and its first frame decodes to the end (in JPEG's reduced-size mode, which still reads every byte)."""
    if not path.is_file():
        return "does not exist"
    try:
        with Image.open(path) as image:
            problem = image_size_problem(image, max_pixels)
            if problem:
                return problem
            orientation(image)  # a damaged EXIF block is found here, not when the image is first read
            if image.mode == "F" or (image.mode == "I" and image.format != "PNG"):
                raise ValueError(f"{image.mode} pixels (32-bit); convert it to an 8- or 16-bit PNG")
            _turned_tiff(image)
            image.draft("RGB", (64, 64))
            image.load()
    except Exception as error:  # any decoder failure (truncated, corrupt, unsupported) means "not readable"
        fix = "; convert it to PNG or JPEG" if path.suffix.lower() in OTHER_IMAGE_SUFFIXES else ""
        return f"is not a readable image ({type(error).__name__}: {error}){fix}"
    return None
