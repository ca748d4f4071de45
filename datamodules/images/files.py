"""Reading what users bring for captioning: captions as COCO, CSV or JSONL, naming images (``decode.py`` reads those).

Image names in the captions must stay inside the image folder unless the user allows otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ..common import DataError, SkipLog, existing_path, read_text, refuse_duplicates, sniff_separator
from ..unpack import EXCEL_SUFFIXES, plain_suffix

log = logging.getLogger(__name__)
Entry = tuple[str, str, str]  # (image name, caption, where it came from: "captions.csv row 7")


def inside(root: Path, name: str) -> bool:
    """Whether ``root / name`` stays inside ``root`` (``../x.png`` and absolute names do not), by the path alone."""
    base = os.path.normpath(root)
    target = os.path.normpath(root / name)
    return target.startswith(base.rstrip(os.sep) + os.sep)


def detect_format(path: Path, format: str) -> str:
    """``coco``, ``csv`` or ``jsonl``: ``format`` unless it is ``auto``, else told by the path."""
    if format != "auto":
        return format
    suffix = plain_suffix(path)  # captions.csv.gz is a CSV
    if path.is_dir() or path.name == "metadata.jsonl" or suffix == ".jsonl":
        return "jsonl"
    if suffix in (".json", ".csv", ".tsv", ".txt", *EXCEL_SUFFIXES):  # Flickr8k ships its CSV as captions.txt
        return "coco" if suffix == ".json" else "csv"
    raise DataError(
        f"cannot tell the format of {str(path)!r}: use a .json (COCO), .csv or metadata.jsonl, "
        "or set data.format to coco, csv or jsonl"
    )


def image_root(path: Path, fmt: str, given: str | None, names: Iterable[str] = ()) -> Path:
    """Where image names are relative to: ``given``, else the folder of the captions file or ``images/`` in it.

    With both at hand, the one that holds more of the named images (of the first 200) is used, ``images/`` on a
    tie, and the log says which: COCO exports keep images in ``images/``, Flickr8k-style CSVs next to the file.
    """
    if given:
        return existing_path(given, "image root", "Set data.image_root to the image folder.")
    base = path if path.is_dir() else path.parent
    if not base.is_dir():
        raise DataError(f"image root {str(base)!r} does not exist; set data.image_root to the image folder")
    folder = base / "images"
    if fmt == "jsonl" or not folder.is_dir():
        return base
    sample = sorted(set(names))[:200]
    found = {root: sum((root / n).is_file() for n in sample) for root in (folder, base)}
    root = base if found[base] > found[folder] else folder
    log.info(
        "%s: image names are relative to %s (%d of %d checked found there, %d in %s); set data.image_root to choose",
        path.name, root, found[root], len(sample), found[base if root == folder else folder],
        base if root == folder else folder,
    )  # fmt: skip
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
        refuse_duplicates(path.name, header, ["image", "caption"])
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
