"""Dates and numbers of a price file, read as spreadsheets write them; the first value that is not one is named.

Dates: pandas infers the format from the first date; day-first dates (``13.02.2021``) are read day first when
that fits every row, and numeric dates that fit neither order are refused rather than read half one way and
half the other. Dates with time zones become UTC (said in the log); a column that mixes zoned and plain dates
is refused. Numbers: a file separated by semicolons or tabs may use decimal commas (``1.234,5``), any file
thousands separators (``"2,503.15"``) when its numbers show it unambiguously; infinite,
overflowing and out-of-range values are refused, since the model computes in 32-bit floats.
"""

from __future__ import annotations

import logging
import re
import warnings

import pandas as pd

from ..common import DataError

log = logging.getLogger(__name__)
# A time of day followed by a zone: "10:00Z", "10:00:00+01:00", "10:00 +0100", "10:00:00 UTC".
ZONED = re.compile(r"\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:[zZ]|UTC|GMT|[+-]\d\d(?::?\d\d)?)$")
DAY_MONTH = re.compile(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b")  # 01.02.2021, 1/2/21: day or month first?
DECIMAL_COMMA = re.compile(r"-?(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d+)?")  # 1.234,5  1234,5  12
THOUSANDS_COMMA = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")  # 2,503.15  2,503  12.5 (US, UK)
# How spreadsheets and exports mark a missing value (Yahoo Finance writes "null"): read as empty cells.
MISSING_MARKS = {"null", "NULL", "Null", "NA", "N/A", "n/a", "#N/A", "NaN", "nan", "None", "none"}
LARGEST = 1e30  # the model computes in 32-bit floats (about 1e-38 to 3e38) on log prices and their ratios


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
        dates = _to_datetime(where, column, text, utc=bool(zoned.any()))
        if zoned.any():
            offsets = sorted(set(text[zoned].str.extract(r"([zZ]|UTC|GMT|[+-]\d\d(?::?\d\d)?)$")[0].dropna()))
            log.warning("%s: %s has time zones (%s); converted to UTC", where, column, ", ".join(offsets[:4]))
            dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    bad = dates.isna()
    if bad.any():
        i = bad.idxmax()
        hint = " (a spreadsheet's date serial number? format the column as dates)" if str(raw[i]).isdigit() else ""
        if DAY_MONTH.match(str(raw[i])):
            hint = " like the column's other dates (write every date one way; YYYY-MM-DD is unambiguous)"
        raise DataError(f"{where} row {row[i]}: {column} {raw[i]!r} is not a date{hint}")
    return dates


def _to_datetime(where: str, column: str, text: pd.Series, utc: bool) -> pd.Series:
    """Month first or day first, whichever reads more rows (all, normally); row by row only for non-numeric forms."""
    try:
        with warnings.catch_warnings():  # "could not infer format": the rows that fit no format are named below
            warnings.simplefilter("ignore", UserWarning)
            orders = (False, True) if text.str.match(DAY_MONTH).all() else (False,)  # 2021-13-01 is no day first
            tries = [pd.to_datetime(text, errors="coerce", utc=utc, dayfirst=first) for first in orders]
    except (ValueError, TypeError, OverflowError):  # zones pandas reads and ZONED does not (names like "EST")
        return pd.Series([_one_date(t) for t in text], index=text.index, dtype="datetime64[us]")
    missing = [int(t.isna().sum()) for t in tries]
    # On a tie (no day above 12) the usual order of the form decides: 01.02.2021 is day first, 01/02/2021 month first.
    prefer = [0] if len(tries) == 1 else [1, 0] if "." in text.iloc[0] else [0, 1]
    best = min(prefer, key=missing.__getitem__)
    dates = tries[best]
    if best == 1:
        log.info("%s: %s read day first (%r is %s)", where, column, text.iloc[0], dates.iloc[0].date())
    if dates.isna().any() and not text.str.match(DAY_MONTH).any():  # e.g. "2021-01-05" next to "Jan 6, 2021"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dates = pd.to_datetime(text, errors="coerce", utc=utc, format="mixed")
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


def parse_numbers(where: str, raw: pd.Series, column: str, row: pd.Series, decimal_comma: bool) -> pd.Series:
    """A column as finite floats (empty cells are NaN); text, inf and out-of-range values are named by row.

    ``decimal_comma``: the file is separated by something else than commas, so ``1.234,5`` may mean 1234.5.
    """
    text = raw.astype("string").str.strip()
    present = (text.notna() & (text != "") & ~text.isin(MISSING_MARKS)).fillna(False)
    raw = raw.where(present)
    if _thousands_commas(text, present, decimal_comma):
        log.info("%s: %s read with thousands separators (2,503.15)", where, column)
        raw = text.str.replace(",", "", regex=False).where(present)
    elif decimal_comma:
        commas = int((text.str.contains(",", regex=False) & present).sum())
        dots = text.str.fullmatch(r"-?\d+\.\d+") & ~text.str.fullmatch(DECIMAL_COMMA)  # 1.5, not 1.234
        if commas > int(dots.fillna(False).sum()):  # most numbers say which way the column is written
            raw = _decimal_commas(where, text, present, column, row)
    numbers = pd.to_numeric(raw, errors="coerce").astype(float)
    not_number = numbers.isna() & present
    if not_number.any():
        i = not_number.idxmax()
        hint = " (a decimal comma? write 1.5, not 1,5)" if re.fullmatch(r"-?\d+,\d+", str(text[i])) else ""
        if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+", str(text[i])):
            hint = " (a thousands separator or a decimal comma? write 1234 or 1.234)"
        raise DataError(f"{where} row {row[i]}: {column} {text[i]!r} is not a number{hint}")
    huge = numbers.abs() > LARGEST  # inf, -inf and overflows such as 1e999 included
    if huge.any():
        i = huge.idxmax()
        raise DataError(
            f"{where} row {row[i]}: {column} {text[i]!r} is not a finite number the model can use "
            f"(at most {LARGEST:g} in size)"
        )
    return numbers.where(present)


def _thousands_commas(text: pd.Series, present: pd.Series, decimal_comma: bool) -> bool:
    """Whether a column writes thousands separators (``2,503.15``), as far as its numbers show it unambiguously.

    Every number must fit the form, and one must prove it: a comma before a point (``2,503.15``) or two commas
    (``1,234,567``); in a comma-separated file also a decimal point in another row (``12.5`` next to ``2,503``).
    ``1,234`` alone could mean 1.234, and a file separated by semicolons may write ``1.234`` for 1234: not read.
    """
    values = text[present]
    if values.empty or not values.str.contains(",", regex=False).any():
        return False
    if not values.str.fullmatch(THOUSANDS_COMMA).all():
        return False
    both = values.str.contains(",", regex=False) & values.str.contains(".", regex=False)
    proof = both | (values.str.count(",") > 1)
    if not decimal_comma:
        proof |= values.str.contains(".", regex=False)
    return bool(proof.any())


def _decimal_commas(where: str, text: pd.Series, present: pd.Series, column: str, row: pd.Series) -> pd.Series:
    """``1.234,5`` -> ``1234.5`` for a whole column; a value written the other way (``1.5``) is refused by row."""
    fits = text.str.fullmatch(DECIMAL_COMMA).fillna(False) | ~present
    if not fits.all():
        i = (~fits).idxmax()
        raise DataError(
            f"{where} row {row[i]}: {column} {text[i]!r} is not written like the column's other numbers, which "
            "use a decimal comma (1.234,5); write every number one way"
        )
    log.info("%s: %s read with decimal commas", where, column)
    return text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
