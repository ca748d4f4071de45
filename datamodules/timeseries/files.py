"""Reading price files (CSV or Parquet, wide or long) into validated series; every problem names file, row, column.

CSV files are read as users save them: UTF-8 with or without a byte-order mark or UTF-16 (Excel), separated by
commas, semicolons, tabs or bars (told by the header); ``values.py`` reads their dates and numbers.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..common import DataError, read_text, refuse_duplicates, sniff_separator
from .values import LARGEST, parse_dates, parse_numbers

log = logging.getLogger(__name__)


@dataclass
class Series:
    """One validated series: dates and prices sorted by date, covariates aligned with them."""

    name: str
    dates: pd.DatetimeIndex
    prices: np.ndarray
    covariates: np.ndarray  # (time, n_covariates)


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False  # read_text names the reason


def read_table(path: Path) -> pd.DataFrame:
    """The file as strings (CSV) or typed columns (Parquet); parsing and checks follow in ``parse_series``."""
    if path.suffix.lower() in (".parquet", ".pq") or _starts_with(path, b"PAR1"):
        try:
            return pd.read_parquet(path)
        except Exception as error:  # pyarrow raises its own types for each way a file can be damaged
            raise DataError(f"{path.name} is not a readable Parquet file ({type(error).__name__}: {error})") from None
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path.name} is empty; it needs a header row and one row per date")
    separator = sniff_separator(text.splitlines()[0])
    if separator != ",":
        log.info("%s: read as a %r-separated file", path.name, separator)
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep=separator, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True
        )
    except pd.errors.ParserError as error:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        if found:
            expected, line, saw = found.groups()
            raise DataError(
                f"{path.name} line {line}: {saw} fields where the header has {expected} ({separator!r}-separated); "
                "quote values that contain the separator, or fix the row"
            ) from None
        raise DataError(f"{path.name} cannot be read as a {separator!r}-separated table: {error}".strip()) from None
    frame.attrs["separator"] = separator  # a file not separated by commas may write decimal commas
    frame.attrs["header"] = next(csv.reader(io.StringIO(text), delimiter=separator), [])  # before pandas renames twins
    return frame


def parse_series(
    path: Path,
    frame: pd.DataFrame,
    date_column: str,
    target: str,
    series_column: str | None,
    covariates: list[str],
    missing: Literal["error", "ffill"],
) -> list[Series]:
    """Validate ``frame`` and split it into series; every problem names the file, row and column."""
    where = path.name
    needed = [date_column, target, *covariates] + ([series_column] if series_column else [])
    refuse_duplicates(where, frame.attrs.get("header") or list(frame.columns), needed)
    frame = frame.rename(columns=lambda c: str(c).strip())
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise DataError(
            f"{where}: column(s) {absent} not found; the file has {list(frame.columns)}. "
            "Set data.date_column / data.target / data.series_column / data.covariates to match."
        )
    if frame.empty:
        raise DataError(f"{where} has a header but no rows")
    frame = frame.reset_index(drop=True)
    row = pd.Series(np.arange(len(frame)) + 2, index=frame.index)  # row number as a spreadsheet shows it
    dates = parse_dates(where, frame[date_column], date_column, row)
    comma = frame.attrs.get("separator", ",") != ","
    values = {column: parse_numbers(where, frame[column], column, row, comma) for column in [target, *covariates]}
    if series_column:
        keys = frame[series_column].astype("string").str.strip()
        empty = keys.isna() | (keys == "")
        if empty.any():
            raise DataError(
                f"{where} row {row[empty.idxmax()]}: {series_column} is empty; name the series of every row"
            )
    else:
        keys = pd.Series(target, index=frame.index)
    result = []
    for name, index in keys.groupby(keys, sort=True).groups.items():
        order = dates[index].sort_values(kind="stable").index
        duplicated = dates[order].duplicated(keep=False)
        if duplicated.any():
            rows = row[order][duplicated.to_numpy()].tolist()[:4]
            stamp = dates[order][duplicated].iloc[0]
            raise DataError(
                f"{where} rows {rows}: date {stamp.date() if stamp == stamp.normalize() else stamp} appears more "
                "than once" + (f" in series {name!r}" if series_column else "") + "; keep one row per date."
            )
        table = pd.DataFrame({c: values[c][order].to_numpy() for c in values}, index=row[order].to_numpy())
        table = _fill(where, table, str(name), missing)
        prices = table[target].to_numpy()
        small = prices < 1 / LARGEST
        if small.any():
            i = int(np.argmax(small))
            problem = "is not a positive price" if prices[i] <= 0 else f"is too small (under {1 / LARGEST:g})"
            raise DataError(f"{where} row {table.index[i]}: {target} {prices[i]} {problem}")
        result.append(
            Series(str(name), pd.DatetimeIndex(dates[order]), prices, table[covariates].to_numpy(dtype=float))
        )
    return result


def _fill(where: str, table: pd.DataFrame, name: str, missing: Literal["error", "ffill"]) -> pd.DataFrame:
    """Empty values refused by row, or carried forward from the previous row (counted in the log)."""
    empty = table.isna()
    if not empty.any().any():
        return table
    column = empty.any().idxmax()
    first = empty[column].idxmax()
    if missing == "error":
        raise DataError(
            f"{where} row {first}: {column} is empty (or marked missing: null, NaN, N/A). Fill it in, or set "
            "data.missing: ffill to carry the previous value forward."
        )
    if empty.iloc[0].any():
        column = empty.iloc[0].idxmax()
        raise DataError(f"{where} row {table.index[0]}: {column} is empty at the start of series {name!r}")
    log.warning("%s: forward-filled %d empty value(s) in series %r", where, int(empty.sum().sum()), name)
    return table.ffill()
