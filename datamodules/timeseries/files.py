"""Reading price files (CSV or Parquet, wide or long) into validated series; every problem names file, row, column."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..common import DataError

log = logging.getLogger(__name__)


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
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


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
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise DataError(
            f"{where}: column(s) {absent} not found; the file has {list(frame.columns)}. "
            "Set data.date_column / data.target / data.series_column / data.covariates to match."
        )
    row = pd.Series(np.arange(len(frame)) + 2, index=frame.index)  # row number as a spreadsheet shows it
    dates = pd.to_datetime(frame[date_column], errors="coerce")
    bad = dates.isna()
    if bad.any():  # the inferred format may not fit every row: parse row by row before blaming one
        dates = pd.to_datetime(frame[date_column], errors="coerce", format="mixed")
        bad = dates.isna()
    if bad.any():
        i = bad.idxmax()
        raise DataError(f"{where} row {row[i]}: {date_column} {frame.at[i, date_column]!r} is not a date")
    values = {}
    for column in [target, *covariates]:
        raw = frame[column]
        numbers = pd.to_numeric(raw, errors="coerce")
        not_number = numbers.isna() & raw.notna()
        if not_number.any():
            i = not_number.idxmax()
            raise DataError(f"{where} row {row[i]}: {column} {raw[i]!r} is not a number")
        values[column] = numbers.astype(float)
    keys = frame[series_column].astype(str) if series_column else pd.Series(target, index=frame.index)
    result = []
    for name, index in keys.groupby(keys, sort=True).groups.items():
        order = dates[index].sort_values(kind="stable").index
        duplicated = dates[order].duplicated(keep=False)
        if duplicated.any():
            rows = row[order][duplicated.to_numpy()].tolist()[:4]
            raise DataError(
                f"{where} rows {rows}: date {dates[order][duplicated].iloc[0].date()} appears more than once"
                + (f" in series {name!r}" if series_column else "")
                + "; keep one row per date."
            )
        table = pd.DataFrame({c: values[c][order].to_numpy() for c in values}, index=row[order].to_numpy())
        empty = table.isna()
        if empty.any().any():
            column = empty.any().idxmax()
            first = empty[column].idxmax()
            if missing == "error":
                raise DataError(
                    f"{where} row {first}: {column} is empty. Fill it in, or set data.missing: ffill to carry "
                    "the previous value forward."
                )
            if empty.iloc[0].any():
                raise DataError(f"{where} row {table.index[0]}: {column} is empty at the start of series {name!r}")
            log.warning("%s: forward-filled %d empty value(s) in series %r", where, int(empty.sum().sum()), name)
            table = table.ffill()
        prices = table[target].to_numpy()
        if (prices <= 0).any():
            i = int(np.argmax(prices <= 0))
            raise DataError(f"{where} row {table.index[i]}: {target} {prices[i]} is not a positive price")
        result.append(
            Series(str(name), pd.DatetimeIndex(dates[order]), prices, table[covariates].to_numpy(dtype=float))
        )
    return result
