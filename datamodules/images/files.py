"""Reading what users bring for captioning: images of any mode and size, and captions as COCO, CSV or JSONL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from ..common import DataError, SkipLog, existing_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
Entry = tuple[str, str, str]  # (image name, caption, where it came from: "captions.csv row 7")


def read_image(path: Path, size: int) -> torch.Tensor:
    """Decode any image (grayscale, RGBA, palette, 16-bit) to a ``size`` x ``size`` uint8 RGB tensor."""
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as error:
        try:  # formats torchvision does not decode (BMP, TIFF) go through PIL
            with Image.open(path) as pil:
                image = v2.functional.pil_to_tensor(pil.convert("RGB"))
        except (OSError, ValueError):
            raise DataError(f"image {str(path)!r} cannot be decoded ({error}); replace or remove it") from None
    if image.ndim == 4:  # animated GIF: the first frame
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNGs
        image = (image.float() / 257).round().to(torch.uint8)
    if image.shape[-2:] == (size, size):
        return image
    return v2.functional.resize(image, [size, size], antialias=True)


def check_image(path: Path) -> str | None:
    """Why ``path`` is not a usable image (cheap: reads the header and checks the file), or None."""
    if not path.is_file():
        return "does not exist"
    try:
        with Image.open(path) as image:
            image.verify()
    except Image.DecompressionBombError:
        return None  # very large but valid; torchvision decodes it
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"is not a readable image ({type(error).__name__}: {error})"
    return None


def detect_format(path: Path, format: str) -> str:
    """``coco``, ``csv`` or ``jsonl``: ``format`` unless it is ``auto``, else told by the path."""
    if format != "auto":
        return format
    if path.is_dir() or path.name == "metadata.jsonl" or path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix.lower() in (".json", ".csv"):
        return path.suffix.lower()[1:].replace("json", "coco")
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


def read_coco(path: Path, skips: SkipLog) -> list[Entry]:
    try:
        data = json.loads(path.read_text())
        names = {im["id"]: im["file_name"] for im in data["images"]}
        annotations = data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(
            f"{path} is not a COCO captions file ({type(error).__name__}: {error}); it needs "
            "'images' [{id, file_name}] and 'annotations' [{image_id, caption}]"
        ) from None
    out = []
    for i, ann in enumerate(annotations):
        where = f"{path.name} annotations[{i}]"
        if not isinstance(ann, dict):
            skips.bad(f"{where}: not an object with image_id and caption")
        elif ann.get("image_id") not in names:
            skips.bad(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        else:
            out.append((names[ann["image_id"]], str(ann.get("caption") or ""), where))
    return out


def read_csv(path: Path, skips: SkipLog) -> list[Entry]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"image", "caption"} <= set(reader.fieldnames or []):
            raise DataError(f"{path} needs the columns 'image,caption'; it has {reader.fieldnames}")
        rows = enumerate(reader, start=2)  # row 1 is the header
        return [(r["image"] or "", r["caption"] or "", f"{path.name} row {i}") for i, r in rows]


def read_jsonl(path: Path, skips: SkipLog) -> list[Entry]:
    meta = path / "metadata.jsonl" if path.is_dir() else path
    existing_path(meta, "metadata file", "A jsonl folder needs metadata.jsonl with file_name and text.")
    out = []
    for i, line in enumerate(meta.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append((str(row["file_name"]), str(row.get("text") or ""), f"{meta.name} line {i + 1}"))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            skips.bad(f"{meta.name} line {i + 1}: not a JSON object with file_name and text ({error})")
    return out


READERS = {"coco": read_coco, "csv": read_csv, "jsonl": read_jsonl}
