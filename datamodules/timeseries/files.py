"""Reading price files (CSV or Parquet, wide or long) into validated series; every problem names file, row, column.

CSV files are read as users save them: UTF-8 with or without a byte-order mark or UTF-16 (Excel), separated by
commas, semicolons, tabs or bars (told by the header). Dates with time zones are converted to UTC, and the log
says so; a file that mixes dates with and without a zone is refused, since no single reading is right.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..common import DataError, read_text, sniff_separator

log = logging.getLogger(__name__)
# A time of day followed by a zone: "10:00Z", "10:00:00+01:00", "10:00 +0100", "10:00:00 UTC".
ZONED = re.compile(r"\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:[zZ]|UTC|GMT|[+-]\d\d(?::?\d\d)?)$")
# Values the model can hold: it computes in 32-bit floats (about 1e-38 to 3e38) on log prices and their ratios.
LARGEST = 1e30


@dataclass
class Series:
    """One validated series: dates and prices sorted by date, covariates aligned with them."""

    name: str
    dates: pd.DatetimeIndex
    prices: np.ndarray
    covariates: np.ndarray  # (time, n_covariates)


def read_table(path: Path) -> pd.DataFrame:
    """The file as strings (CSV) or typed columns (Parquet); parsing and checks follow in ``parse_series``."""
    if path.suffix.lower() in (".parquet", ".pq"):
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
        return pd.read_csv(
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


def parse_dates(where: str, raw: pd.Series, column: str, row: pd.Series) -> pd.Series:
    """The dates of a column as naive time stamps (UTC when the file gives zones); the first bad one is named."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):  # typed Parquet time stamps with a zone
        log.warning("%s: %s has time zone %s; converted to UTC", where, column, raw.dtype.tz)
        return raw.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        dates = raw
    else:
        text = raw.astype("string").str.strip()
        empty = text.isna() | (text == "")
        if empty.any():
            raise DataError(f"{where} row {row[empty.idxmax()]}: {column} is empty; every row needs a date")
        zoned = text.str.contains(ZONED, na=False)
        if zoned.any() and not zoned.all():
            i, j = zoned.idxmax(), (~zoned).idxmax()
            raise DataError(
                f"{where} rows {row[i]} and {row[j]}: {column} {text[i]!r} has a time zone and {text[j]!r} has "
                "none; write every date with a zone, or every date without one"
            )
        dates = _to_datetime(text, utc=bool(zoned.any()))
        if zoned.any():
            offsets = sorted(set(text[zoned].str.extract(r"([zZ]|UTC|GMT|[+-]\d\d(?::?\d\d)?)$")[0].dropna()))
            log.warning("%s: %s has time zones (%s); converted to UTC", where, column, ", ".join(offsets[:4]))
            dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    bad = dates.isna()
    if bad.any():
        i = bad.idxmax()
        raise DataError(f"{where} row {row[i]}: {column} {raw[i]!r} is not a date")
    return dates


def _to_datetime(text: pd.Series, utc: bool) -> pd.Series:
    """Parse with the format pandas infers from the first date, then row by row where it does not fit."""
    try:
        dates = pd.to_datetime(text, errors="coerce", utc=utc)
        if dates.isna().any():
            dates = pd.to_datetime(text, errors="coerce", utc=utc, format="mixed")
    except (ValueError, TypeError, OverflowError):  # zones pandas reads and ZONED does not (names like "EST")
        dates = pd.Series([_one_date(t) for t in text], index=text.index, dtype="datetime64[us]")
    if not (pd.api.types.is_datetime64_dtype(dates.dtype) or isinstance(dates.dtype, pd.DatetimeTZDtype)):
        dates = pd.Series([_one_date(t) for t in text], index=text.index, dtype="datetime64[us]")
    return dates


def _one_date(text: str) -> pd.Timestamp:
    """One date as a naive time stamp, NaT when it is not a date or has a zone ``ZONED`` missed (refused as such)."""
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return pd.NaT
    return pd.NaT if stamp.tzinfo is not None else stamp


def parse_numbers(where: str, raw: pd.Series, column: str, row: pd.Series) -> pd.Series:
    """A column as finite floats (empty cells are NaN); text, inf and out-of-range values are named by row."""
    numbers = pd.to_numeric(raw, errors="coerce").astype(float)
    present = raw.notna() & (raw.astype("string").str.strip() != "").fillna(False)
    not_number = numbers.isna() & present
    if not_number.any():
        i = not_number.idxmax()
        hint = " (a decimal comma? write 1.5, not 1,5)" if re.fullmatch(r"-?\d+,\d+", str(raw[i]).strip()) else ""
        raise DataError(f"{where} row {row[i]}: {column} {raw[i]!r} is not a number{hint}")
    huge = numbers.abs() > LARGEST  # inf, -inf and overflows such as 1e999 included
    if huge.any():
        i = huge.idxmax()
        raise DataError(
            f"{where} row {row[i]}: {column} {raw[i]!r} is not a finite number the model can use "
            f"(at most {LARGEST:g} in size)"
        )
    return numbers.where(present)


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
    frame = frame.rename(columns=lambda c: str(c).strip())
    needed = [date_column, target, *covariates] + ([series_column] if series_column else [])
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
    values = {column: parse_numbers(where, frame[column], column, row) for column in [target, *covariates]}
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
            f"{where} row {first}: {column} is empty. Fill it in, or set data.missing: ffill to carry "
            "the previous value forward."
        )
    if empty.iloc[0].any():
        column = empty.iloc[0].idxmax()
        raise DataError(f"{where} row {table.index[0]}: {column} is empty at the start of series {name!r}")
    log.warning("%s: forward-filled %d empty value(s) in series %r", where, int(empty.sum().sum()), name)
    return table.ffill()
