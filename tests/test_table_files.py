"""Files as spreadsheets and tools write them: compressed, zipped, workbooks, binary files where text belongs,
a column named twice, thousands separators, and captions whose images sit next to the CSV or in ``images/``.

Each table row is a file as a user hands it over and what must happen: read as the plain file is, or refused
with one ``DataError`` (the CLI's ``ERROR:`` line) that names the file and the column.
"""

from __future__ import annotations

import bz2
import gzip
import importlib
import io
import logging
import lzma
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def timeseries(package):
    return importlib.import_module(f"{package.__name__}.datamodules.timeseries")


@pytest.fixture(scope="module")
def images(package):
    return importlib.import_module(f"{package.__name__}.datamodules.images")


@pytest.fixture(scope="module")
def audio(package):
    return importlib.import_module(f"{package.__name__}.datamodules.audio")


@pytest.fixture(scope="module")
def DataError(package):
    return importlib.import_module(f"{package.__name__}.datamodules.common").DataError


@pytest.fixture(scope="module")
def unpack(package):
    return importlib.import_module(f"{package.__name__}.datamodules.unpack")


def days(n: int) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.bdate_range("2024-01-01", periods=n)]


def prices(n: int = 60, sep: str = ",", price=lambda i: f"{10 + i / 10:.2f}") -> str:
    rows = [sep.join(["A", day, price(i)]) for i, day in enumerate(days(n))]
    return "\n".join([sep.join(["symbol", "date", "price"]), *rows]) + "\n"


def zipped(name: str, data: bytes, *others: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
        for other in others:
            archive.writestr(other, b"x")
    return out.getvalue()


def workbook(text: str) -> bytes:
    out = io.BytesIO()
    pd.read_csv(io.StringIO(text), dtype=str).to_excel(out, index=False)
    return out.getvalue()


def price_module(timeseries, path: Path):
    data = timeseries.PriceDataModule(path=str(path), lookback=10, horizon=3)
    data.setup("fit")
    return data


def price_values(data) -> np.ndarray:
    return np.concatenate([s.prices for s in data.datasets["fit"].series])


# ---- compressed and packed files: read as the plain file ------------------------------------------------------------
PLAIN = prices().encode()
PACKED = {
    "csv.gz": ("prices.csv.gz", gzip.compress(PLAIN)),
    "csv.bz2": ("prices.csv.bz2", bz2.compress(PLAIN)),
    "csv.xz": ("prices.csv.xz", lzma.compress(PLAIN)),
    "zip": ("prices.zip", zipped("prices.csv", PLAIN)),
    "gzip-named-csv": ("prices.csv", gzip.compress(PLAIN)),  # told by its bytes, not its name
    "xlsx": ("prices.xlsx", workbook(prices())),
    "parquet-named-csv": ("prices.csv", None),
}


@pytest.mark.parametrize(("name", "content"), PACKED.values(), ids=PACKED.keys())
def test_compressed_zipped_and_workbook_price_files_read_like_the_plain_one(timeseries, tmp_path, name, content):
    (tmp_path / "plain.csv").write_bytes(PLAIN)
    if content is None:
        pd.read_csv(tmp_path / "plain.csv").to_parquet(tmp_path / name)
    else:
        (tmp_path / name).write_bytes(content)
    plain, packed = price_module(timeseries, tmp_path / "plain.csv"), price_module(timeseries, tmp_path / name)
    np.testing.assert_allclose(price_values(packed), price_values(plain))
    assert packed.spec == plain.spec


def test_compressed_caption_and_speech_files_read_like_the_plain_ones(images, audio, tmp_path):
    (tmp_path / "images").mkdir()
    rows = ["image,caption"]
    for i in range(10):
        (tmp_path / "images" / f"{i}.png").write_bytes(_png(i))
        rows.append(f"{i}.png,a picture number {i}")
    (tmp_path / "captions.csv.gz").write_bytes(gzip.compress("\n".join(rows).encode()))
    dm = images.ImageCaptionDataModule(str(tmp_path / "captions.csv.gz"), image_size=8, val_fraction=0.2)
    dm.setup("fit")
    assert sum(len(s) for s in dm.splits.values()) == 10
    assert audio.files.detect_format(tmp_path / "train.tsv.gz", "auto") == "csv"


def _png(seed: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), seed * 20, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


# ---- what is not text: named as such, with what to do -----------------------------------------------------------
ODS = b"application/vnd.oasis.opendocument.spreadsheet"
BINARY = "(a binary file, not text)"
NOT_TEXT = {
    "xls": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600, f"prices.csv is an Excel 97-2003 workbook (.xls) {BINARY}: export"),  # noqa: E501
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"\0" * 100, "prices.csv is a PDF document (a binary file, not text)"),
    "sqlite": (b"SQLite format 3\x00" + b"\0" * 100, "prices.csv is an SQLite database (a binary file, not text)"),
    "png": (_png(1), "prices.csv is a PNG image (a binary file, not text)"),
    "damaged-zip": (b"PK\x03\x04\x00\x00" * 20, "prices.csv is a damaged ZIP archive (a binary file, not text"),
    "zip-of-many": (zipped("a.csv", PLAIN, "b.csv", "c.csv"), "prices.csv is a ZIP archive of 3 files (a.csv, b.csv,"),
    "cut-gzip": (gzip.compress(PLAIN)[:40], "prices.csv is a damaged gzip file"),
    "ods": (zipped("mimetype", ODS), f"prices.csv is an OpenDocument spreadsheet (.ods) {BINARY}: export it as CSV"),
}  # fmt: skip


@pytest.mark.parametrize(("content", "message"), NOT_TEXT.values(), ids=NOT_TEXT.keys())
def test_binary_files_are_named_as_such(timeseries, DataError, tmp_path, content, message):
    (tmp_path / "prices.csv").write_bytes(content)
    with pytest.raises(DataError) as error:
        price_module(timeseries, tmp_path / "prices.csv")
    assert message in str(error.value)
    assert "is not UTF-8" not in str(error.value) and "NUL" not in str(error.value), "not advice about encodings"


def test_a_workbook_without_an_excel_reader_says_to_export_csv(
    timeseries, images, unpack, DataError, tmp_path, monkeypatch
):  # noqa: E501
    monkeypatch.setattr(unpack, "excel_reader_installed", lambda: False)
    (tmp_path / "prices.xlsx").write_bytes(workbook(prices()))
    with pytest.raises(DataError, match=r"prices.xlsx is an Excel workbook \(.xlsx\) \(a binary file, not text\): "
                       r"export it as CSV .* or install openpyxl"):  # fmt: skip
        price_module(timeseries, tmp_path / "prices.xlsx")
    (tmp_path / "captions.xlsx").write_bytes(workbook("image,caption\na.png,a dog\n"))
    with pytest.raises(DataError, match=r"captions.xlsx is an Excel workbook"):
        images.ImageCaptionDataModule(str(tmp_path / "captions.xlsx")).setup("fit")


# ---- a column named twice ---------------------------------------------------------------------------------------
def test_a_price_column_named_twice_is_refused_by_name(timeseries, DataError, tmp_path):
    n = 40
    frame = pd.DataFrame({"Date": days(n), "Close": np.linspace(10, 20, n), "Volume": range(n)})
    frame.insert(3, "Close ", np.linspace(99, 100, n))  # a second Close (pandas would call it Close.1)
    frame.to_csv(tmp_path / "AAPL.csv", index=False)
    with pytest.raises(DataError, match=r"AAPL.csv: column 'Close' appears 2 times \(columns 2 and 4\); rename"):
        timeseries.PriceDataModule(
            path=str(tmp_path / "AAPL.csv"), date_column="Date", target="Close", series_column=None, lookback=10,
            horizon=3,
        ).setup("fit")  # fmt: skip
    frame.to_parquet(tmp_path / "AAPL.parquet")  # the stripped names are the same: a twin as well
    frame.rename(columns={"Close ": "Volume2"}).assign(Volume2=frame["Volume"]).to_csv(tmp_path / "ok.csv", index=False)
    timeseries.PriceDataModule(
        path=str(tmp_path / "ok.csv"), date_column="Date", target="Close", series_column=None, lookback=10, horizon=3
    ).setup("fit")  # an unused column named like another is no ambiguity


DUPLICATE_HEADERS = {
    "captions": ("captions.csv", "image,caption,caption\na.png,a dog,a cat\n", "captions.csv: column 'caption' appears 2 times"),  # noqa: E501
    "speech": ("data.csv", "path,transcript,path\na.wav,go,b.wav\n", "data.csv: column 'path' appears 2 times (columns 1 and 3)"),  # noqa: E501
}  # fmt: skip


@pytest.mark.parametrize(("name", "text", "message"), DUPLICATE_HEADERS.values(), ids=DUPLICATE_HEADERS.keys())
def test_caption_and_speech_columns_named_twice_are_refused(images, audio, DataError, tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    make = images.ImageCaptionDataModule if name == "captions.csv" else audio.SpeechDataModule
    with pytest.raises(DataError) as error:
        make(str(tmp_path / name)).setup("fit")
    assert message in str(error.value)


# ---- thousands separators -----------------------------------------------------------------------------------------
def us(i: int) -> str:
    return f'"{2000 + i * 10.25:,.2f}"'  # "2,010.25": quoted, as spreadsheets export it


READ_NUMBERS = {
    "us-quoted": (prices(price=us), lambda i: 2000 + i * 10.25),
    "us-semicolons": (prices(sep=";", price=lambda i: f"{2000 + i * 10.25:,.2f}"), lambda i: 2000 + i * 10.25),
    "millions": (prices(price=lambda i: f'"{1_000_000 + i * 1000:,}"'), lambda i: 1_000_000 + i * 1000),
    "us-and-plain": (prices(price=lambda i: us(i) if i % 2 else f"{2000 + i * 10.25:.2f}"), lambda i: 2000 + i * 10.25),
    "german": (prices(sep=";", price=lambda i: f"{2000 + i * 10.25:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")), lambda i: 2000 + i * 10.25),  # noqa: E501
    "thousands-next-to-a-decimal-point": (prices(price=lambda i: '"2,500"' if i == 3 else f"{10 + i / 4:.2f}"), lambda i: 2500 if i == 3 else 10 + i / 4),  # noqa: E501
}  # fmt: skip


@pytest.mark.parametrize(("text", "value"), READ_NUMBERS.values(), ids=READ_NUMBERS.keys())
def test_thousands_separators_and_decimal_commas_are_read_when_unambiguous(timeseries, tmp_path, text, value):
    (tmp_path / "prices.csv").write_text(text)
    data = timeseries.PriceDataModule(path=str(tmp_path / "prices.csv"), lookback=10, horizon=3)
    data.setup("fit")
    series = data.datasets["fit"].series[0]
    np.testing.assert_allclose(series.prices[:8], [value(i) for i in range(8)], rtol=1e-9)


REFUSED_NUMBERS = {
    "only-1,234": (prices(price=lambda i: f'"{i + 1},{i + 100}"'), "row 2: price '1,100' is not a number (a thousands separator or"),  # noqa: E501
    "us-among-german": (prices(sep=";", price=lambda i: "2,503.15" if i == 5 else f"{10 + i},5"), "row 7: price '2,503.15' is not written like the"),  # noqa: E501
}  # fmt: skip


@pytest.mark.parametrize(("text", "message"), REFUSED_NUMBERS.values(), ids=REFUSED_NUMBERS.keys())
def test_ambiguous_numbers_are_refused_by_row(timeseries, DataError, tmp_path, text, message):
    (tmp_path / "prices.csv").write_text(text)
    with pytest.raises(DataError) as error:
        price_module(timeseries, tmp_path / "prices.csv")
    assert message in str(error.value)


# ---- where a CSV's image names are relative to ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "used"),
    [("next-to-csv", ""), ("in-images", "images"), ("both", "images"), ("most-next-to-csv", "")],
)
def test_csv_image_names_are_found_next_to_the_csv_or_in_images_and_the_log_says_which(
    images, tmp_path, caplog, where, used
):
    (tmp_path / "images").mkdir()
    rows = ["image,caption"]
    for i in range(10):
        folders = {"next-to-csv": [""], "in-images": ["images"], "both": ["", "images"]}.get(where)
        folders = folders or (["images"] if i < 3 else [""])
        for folder in folders:
            (tmp_path / folder / f"{i}.png").write_bytes(_png(i))
        rows.append(f"{i}.png,a picture number {i}")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    dm = images.ImageCaptionDataModule(
        str(tmp_path / "captions.csv"), image_size=8, val_fraction=0.2, on_bad_input="skip"
    )
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    root = tmp_path / used
    assert {p.parent for s in dm.splits.values() for p, _ in s} == {root}
    assert f"image names are relative to {root}" in caplog.text


def test_the_generated_readme_says_where_csv_image_names_are_looked_up(project):
    readme = " ".join((project / "README.md").read_text().split())
    assert "image names relative to the CSV or to `images/` next to it (whichever holds them" in readme


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("prices.csv.gz", ".csv"), ("train.tsv.xz", ".tsv"), ("a.b.jsonl.bz2", ".jsonl"), ("x.csv", ".csv")],
)
def test_the_format_is_told_by_the_suffix_under_the_compression_one(unpack, name, suffix):
    assert unpack.plain_suffix(Path(name)) == suffix
