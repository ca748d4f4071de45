"""Reading what users bring for captioning: images of any mode and size, and captions as COCO, CSV or JSONL.

Images are checked by decoding them in full (a truncated JPEG has a valid header), within a pixel limit set
before decoding (a 30k x 30k PNG is a few kilobytes on disk and 2.7 GB decoded); image names in the captions
must stay inside the image folder unless the user allows otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from ..common import DataError, SkipLog, existing_path, read_text, sniff_separator

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Images that phones and cameras save and may not be decodable here: taken into a folder to caption so that each
# one is decoded or refused by name with the fix, never left out without a word.
OTHER_IMAGE_SUFFIXES = {".heic", ".heif", ".avif", ".jxl", ".svg", ".psd", ".dng", ".cr2", ".nef", ".arw"}
MAX_PIXELS = 100_000_000  # ~300 MB as decoded RGB: a 100-megapixel photo is accepted, a decompression bomb is not
Entry = tuple[str, str, str]  # (image name, caption, where it came from: "captions.csv row 7")
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


def read_image(path: Path, size: int, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Decode any image (grayscale, RGBA, palette, 16-bit) to a ``size`` x ``size`` uint8 RGB tensor."""
    try:
        with Image.open(path) as header:  # reads the header only: the size is known before decoding
            problem = image_size_problem(header, max_pixels)
    except Exception as error:  # PIL raises many types for damaged files; all mean "not an image we can read"
        raise DataError(f"image {str(path)!r} cannot be decoded ({type(error).__name__}: {error})") from None
    if problem:
        raise DataError(f"image {str(path)!r} {problem}")
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as error:
        try:  # formats torchvision does not decode (BMP, TIFF) go through PIL
            with Image.open(path) as pil:
                image = v2.functional.pil_to_tensor(pil.convert("RGB"))
        except Exception:
            raise DataError(f"image {str(path)!r} cannot be decoded ({error}); replace or remove it") from None
    if image.ndim == 4:  # animated GIF: the first frame
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNGs
        image = (image.float() / 257).round().to(torch.uint8)
    if image.shape[-2:] == (size, size):
        return image
    return v2.functional.resize(image, [size, size], antialias=True)


def check_image(path: Path, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why ``path`` is not a usable image, or None: it exists, is within the pixel limit and decodes to the end."""
    if not path.is_file():
        return "does not exist"
    try:
        with Image.open(path) as image:
            problem = image_size_problem(image, max_pixels)
            if problem:
                return problem
            image.draft("RGB", (64, 64))  # JPEG: decode at up to 1/8 scale; every byte is still read
            image.load()
    except Exception as error:  # any decoder failure (truncated, corrupt, unsupported) means "not readable"
        fix = "; convert it to PNG or JPEG" if path.suffix.lower() in OTHER_IMAGE_SUFFIXES else ""
        return f"is not a readable image ({type(error).__name__}: {error}){fix}"
    return None


def inside(root: Path, name: str) -> bool:
    """Whether ``root / name`` stays inside ``root`` (``../x.png`` and absolute names do not), by the path alone."""
    base = os.path.normpath(root)
    target = os.path.normpath(root / name)
    return target.startswith(base.rstrip(os.sep) + os.sep)


CAPTION_FILES = {".json": "COCO captions", ".csv": "image,caption table", ".tsv": "image,caption table"}


def detect_format(path: Path, format: str) -> str:
    """``coco``, ``csv`` or ``jsonl``: ``format`` unless it is ``auto``, else told by the path."""
    if format != "auto":
        return format
    if path.is_dir() or path.name == "metadata.jsonl" or path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix.lower() in (".json", ".csv", ".tsv", ".txt"):  # Flickr8k ships its CSV as captions.txt
        return "coco" if path.suffix.lower() == ".json" else "csv"
    raise DataError(
        f"cannot tell the format of {str(path)!r}: use a .json (COCO), .csv or metadata.jsonl, "
        "or set data.format to coco, csv or jsonl"
    )


def image_root(path: Path, fmt: str, given: str | None) -> Path:
    """Where image names are relative to: ``given``, else ``images/`` next to the captions if present, else there."""
    if given:
        return existing_path(given, "image root", "Set data.image_root to the image folder.")
    base = path if path.is_dir() else path.parent
    root = base / "images" if fmt != "jsonl" and (base / "images").is_dir() else base
    if not root.is_dir():
        raise DataError(f"image root {str(root)!r} does not exist; set data.image_root to the image folder")
    return root


def _is_id(value: object) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def read_coco(path: Path, skips: SkipLog) -> list[Entry]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path.name} line {error.lineno} column {error.colno}: not valid JSON ({error.msg})") from None
    if not (
        isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list)
    ):
        raise DataError(
            f"{path.name} is not a COCO captions file: it needs "
            "'images' [{id, file_name}] and 'annotations' [{image_id, caption}]"
        )
    names: dict[int | str, str] = {}
    for i, image in enumerate(data["images"]):
        where = f"{path.name} images[{i}]"
        if not isinstance(image, dict):
            skips.bad(f"{where}: not an object with id and file_name")
        elif not _is_id(image.get("id")):
            skips.bad(f"{where}: id {image.get('id')!r} is not a number or a string")
        elif not isinstance(image.get("file_name"), str) or not image["file_name"].strip():
            skips.bad(f"{where}: file_name {image.get('file_name')!r} is not a file name")
        elif image["id"] in names:
            skips.bad(f"{where}: id {image['id']!r} is already used by another image")
        else:
            names[image["id"]] = image["file_name"]
    out = []
    for i, ann in enumerate(data["annotations"]):
        where = f"{path.name} annotations[{i}]"
        caption = ann.get("caption") if isinstance(ann, dict) else None
        if not isinstance(ann, dict):
            skips.bad(f"{where}: not an object with image_id and caption")
        elif not _is_id(ann.get("image_id")) or ann["image_id"] not in names:
            skips.bad(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        elif caption is not None and not isinstance(caption, str):
            skips.bad(f"{where}: caption {caption!r} is not text")
        else:
            out.append((names[ann["image_id"]], caption or "", where))
    return out


def read_csv(path: Path, skips: SkipLog) -> list[Entry]:
    text = read_text(path)
    separator = sniff_separator(text.partition("\n")[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    try:
        header = [c.strip().lower() for c in next(reader, [])]
        if not {"image", "caption"} <= set(header):
            raise DataError(f"{path.name} needs the columns 'image,caption'; it has {header} ({separator!r}-separated)")
        image, caption = header.index("image"), header.index("caption")
        out = []
        for row in reader:
            where = f"{path.name} row {reader.line_num}"  # the line the row ends on, as an editor shows it
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(image, caption):
                skips.bad(f"{where}: {len(row)} field(s), the header has {len(header)}")
                continue
            out.append((row[image].strip(), row[caption], where))
    except csv.Error as error:
        raise DataError(f"{path.name} row {reader.line_num}: {error}") from None
    return out


def read_jsonl(path: Path, skips: SkipLog) -> list[Entry]:
    meta = path / "metadata.jsonl" if path.is_dir() else path
    existing_path(meta, "metadata file", "A jsonl folder needs metadata.jsonl with file_name and text.")
    out = []
    for i, line in enumerate(read_text(meta).splitlines()):
        where = f"{meta.name} line {i + 1}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            skips.bad(f"{where}: not valid JSON ({error.msg})")
            continue
        name = row.get("file_name") if isinstance(row, dict) else None
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(name, str) or not name.strip():
            skips.bad(f"{where}: not a JSON object with a file_name and text")
        elif text is not None and not isinstance(text, str):
            skips.bad(f"{where}: text {text!r} is not text")
        else:
            out.append((name, text or "", where))
    return out


READERS = {"coco": read_coco, "csv": read_csv, "jsonl": read_jsonl}
