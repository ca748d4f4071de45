"""The bytes of a text file as users hand it over: compressed (``.gz``, ``.bz2``, ``.xz``), zipped, or a binary file
where text belongs (a workbook, a Parquet file, a PDF), which is named as such instead of being decoded as text.

Compression is told by the file's first bytes, not its name, so ``prices.csv`` that is really gzipped reads too.
Excel workbooks become the CSV text of their first sheet when an Excel reader (openpyxl) is installed; without
one they are refused with the way to export them.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import io
import lzma
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO

MAX_UNPACKED = 2**31  # 2 GiB of text: more from a small archive is a decompression bomb, not a data set
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zip")
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")  # read as CSV (their first sheet), or refused by name
STREAMS = {b"\x1f\x8b": ("gzip", gzip.open), b"BZh": ("bzip2", bz2.open), b"\xfd7zXZ\x00": ("xz", lzma.open)}
# First bytes of the binary files people pick by mistake where a CSV or JSON belongs.
BINARY = {
    b"\xd0\xcf\x11\xe0": "an Excel 97-2003 workbook (.xls)",
    b"PAR1": "a Parquet file",
    b"%PDF": "a PDF document",
    b"SQLite format 3\x00": "an SQLite database",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
}
EXPORT = "export it as CSV (in Excel: File > Save As > 'CSV UTF-8')"


class NotText(ValueError):
    """What a file is when it is not text we can read, and what to do; ``read_text`` names the file."""


def text_bytes(path: Path, data: bytes) -> bytes:
    """``data`` (the bytes of ``path``) unpacked to the text they hold, or NotText saying what the file is."""
    for magic, (kind, opener) in STREAMS.items():
        if data.startswith(magic) and (kind != "bzip2" or data[3:4].isdigit()):
            return _limited(partial(opener, io.BytesIO(data)), f"a damaged {kind} file")
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return _from_zip(path, data)
    for magic, kind in BINARY.items():
        if data.startswith(magic):
            if "Excel" in kind:
                return _excel_as_csv(data, kind)
            raise NotText(
                f"is {kind} (a binary file, not text); save the data as CSV (UTF-8) and point data.path to it"
            )
    return data


def plain_suffix(path: Path) -> str:
    """The suffix that says a file's format, under a compression suffix: ``prices.csv.gz`` -> ``.csv``."""
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSED_SUFFIXES[:3]:
        suffixes.pop()
    if suffixes and suffixes[-1] == ".zip" and path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                names = [i.filename for i in archive.infolist() if not i.is_dir()]
            return Path(names[0]).suffix.lower() if len(names) == 1 else ".zip"
        except (zipfile.BadZipFile, OSError):
            return ".zip"
    return suffixes[-1] if suffixes else ""


def _limited(open_stream: Callable[[], IO[bytes]], damaged: str) -> bytes:
    try:
        with open_stream() as stream:
            out = stream.read(MAX_UNPACKED + 1)
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as error:
        raise NotText(f"is {damaged} ({error}); compress it again, or give the uncompressed file") from None
    if len(out) > MAX_UNPACKED:
        raise NotText(f"unpacks to more than {MAX_UNPACKED / 2**30:.0f} GiB; give the uncompressed file")
    return out


def _from_zip(path: Path, data: bytes) -> bytes:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise NotText(f"is a damaged ZIP archive (a binary file, not text: {error}); unpack it and set data.path "
                      "to the file inside") from None  # fmt: skip
    with archive:
        names = [i.filename for i in archive.infolist() if not i.is_dir()]
        if "[Content_Types].xml" in names and any(n.startswith("xl/") for n in names):
            return _excel_as_csv(data, "an Excel workbook (.xlsx)")
        if "mimetype" in names and b"opendocument.spreadsheet" in archive.read("mimetype"):
            return _excel_as_csv(data, "an OpenDocument spreadsheet (.ods)")
        if len(names) != 1:
            shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
            raise NotText(
                f"is a ZIP archive of {len(names)} files ({shown}), not one data file; unpack it and set data.path "
                "to the file inside"
            )
        return _limited(partial(archive.open, names[0]), f"a damaged ZIP archive ({names[0]})")


def excel_reader_installed() -> bool:
    """Whether pandas can read workbooks here (openpyxl for .xlsx/.xlsm, odfpy for .ods, xlrd for .xls)."""
    return importlib.util.find_spec("openpyxl") is not None


def _excel_as_csv(data: bytes, kind: str) -> bytes:
    """The first sheet of a workbook as CSV text: every cell as written, so the CSV checks apply unchanged."""
    if kind.endswith("(.xlsx)") and excel_reader_installed():
        import pandas as pd

        try:
            sheet = pd.read_excel(io.BytesIO(data), sheet_name=0, dtype=str, keep_default_na=False)
        except Exception as error:  # openpyxl raises its own types for damaged workbooks
            raise NotText(f"is {kind} that cannot be read ({type(error).__name__}: {error}); {EXPORT}") from None
        return sheet.to_csv(index=False).encode()
    reader = " or install openpyxl to read .xlsx files directly" if kind.endswith("(.xlsx)") else ""
    raise NotText(f"is {kind} (a binary file, not text): {EXPORT}{reader}")
