"""Price series from CSV or Parquet, validated strictly and cut into lookback -> horizon windows.

Wide files (``Date,Open,High,Low,Close,Volume``: one series) and long files (``symbol,date,price``: many) are
both read; the config names the columns. Prices enter the model as log prices relative to the last observed
price of each window, so a model trained on one symbol's price level forecasts any other; the only fitted
scale (the spread of daily log returns) is measured on the training period alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from .common import DataError, existing_path

log = logging.getLogger(__name__)
SAMPLE_HINT = "Run `make sample-data` for the bundled sample, or set data.path to your own file."


@dataclass
class Series:
    """One validated series: dates and prices sorted by date, covariates aligned with them."""

    name: str
    dates: pd.DatetimeIndex
    prices: np.ndarray
    covariates: np.ndarray  # (time, n_covariates)


def read_table(path: Path) -> pd.DataFrame:
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


class WindowDataset(Dataset):
    """Windows ``(series, end)``: lookback ``[end - lookback, end)``, targets ``[end, end + horizon)``.

    A batch is cut from the concatenated series with one gather per field (``__getitems__``, which the
    DataLoader calls with a whole batch of indices): building each window's tensors one by one took about a
    third of a training epoch on a CPU.
    """

    def __init__(self, series: list[Series], windows: list[tuple[int, int]], lookback: int, horizon: int) -> None:
        self.series, self.windows, self.lookback, self.horizon = series, windows, lookback, horizon
        lengths = np.array([len(s.prices) for s in series])
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.prices = np.concatenate([s.prices for s in series]).astype(np.float64)
        self.covariates = np.concatenate([s.covariates for s in series]).astype(np.float64)
        self.starts = np.array([offsets[s] + end - lookback for s, end in windows], dtype=np.int64)
        self.has_future = np.array([end + horizon <= lengths[s] for s, end in windows], dtype=bool)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        rows = self.starts[index, None] + np.arange(self.lookback)  # (batch, lookback) positions
        past_price = self.prices[rows]
        last_price = past_price[:, -1:]
        features = [np.log(past_price / last_price)[..., None]]  # log price relative to the window's last price
        if self.covariates.shape[1]:
            covariates = self.covariates[rows]  # standardized within each window
            mean, std = covariates.mean(axis=1, keepdims=True), covariates.std(axis=1, keepdims=True)
            features.append((covariates - mean) / (std + 1e-8))
        batch = {
            "index": torch.from_numpy(index),
            "past": _float(np.concatenate(features, axis=-1)),
            "past_price": _float(past_price),
            "last_price": _float(last_price[:, 0]),
        }
        with_future = self.has_future[index]
        if with_future.all():  # every window but those that end a series for predict
            future = self.prices[rows[:, -1:] + 1 + np.arange(self.horizon)]
            batch["target"] = _float(np.log(future / last_price))
            batch["target_price"] = _float(future)
        elif with_future.any():
            raise ValueError("a batch mixes windows with and without targets")
        return batch


def _float(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _batched(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DataLoader's collate function: ``WindowDataset.__getitems__`` returns whole batches already."""
    return batch


class PriceDataModule(LightningDataModule):
    """Price series -> windows of past prices (and covariates) with the next ``horizon`` prices as targets.

    Args:
        path: CSV or Parquet file.
        date_column, target, series_column: column names; ``series_column: null`` for a one-series (wide) file.
        covariates: extra numeric columns fed to the model (e.g. ``[Volume]``).
        lookback, horizon: days the model sees and days it forecasts.
        val_fraction, test_fraction: the last parts of the time axis, common to all series (no look-ahead).
        missing: ``error`` on an empty value, or ``ffill`` to carry the previous value forward (counted in the log).
        predict_path: a file in the same format; the forecast starts after its last date, per series.
    """

    def __init__(
        self,
        path: str = "data/sample/forecasting/prices.csv",
        date_column: str = "date",
        target: str = "price",
        series_column: str | None = "symbol",
        covariates: list[str] | None = None,
        lookback: int = 40,
        horizon: int = 10,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        missing: Literal["error", "ffill"] = "error",
        batch_size: int = 64,
        num_workers: int = 0,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.covariates = list(covariates or [])
        self.datasets: dict[str, WindowDataset] = {}
        self.target_scale = 1.0
        self.predict_info: list[dict] = []

    @property
    def num_features(self) -> int:
        return 1 + len(self.covariates)

    def _load(self, path: str) -> list[Series]:
        hp = self.hparams
        file = existing_path(path, "price file", SAMPLE_HINT)
        frame = read_table(file)
        return parse_series(file, frame, hp.date_column, hp.target, hp.series_column, self.covariates, hp.missing)

    def setup(self, stage: str) -> None:
        if stage == "predict":
            self._setup_predict()
            return
        if self.datasets:
            return
        hp = self.hparams
        series = self._load(hp.path)
        need = hp.lookback + hp.horizon
        short = [f"{s.name} ({len(s.prices)} rows)" for s in series if len(s.prices) < need]
        if short:
            raise DataError(
                f"{Path(hp.path).name}: series {', '.join(short)} shorter than lookback + horizon = {need} rows; "
                "lower data.lookback / data.horizon or drop those series."
            )
        all_dates = np.sort(np.concatenate([s.dates.values for s in series]))
        val_start = all_dates[int(len(all_dates) * (1 - hp.val_fraction - hp.test_fraction))]
        test_start = all_dates[int(len(all_dates) * (1 - hp.test_fraction))]
        parts: dict[str, list[tuple[int, int]]] = {"fit": [], "validate": [], "test": []}
        for i, s in enumerate(series):
            for end in range(hp.lookback, len(s.prices) - hp.horizon + 1):
                first, last = s.dates.values[end], s.dates.values[end + hp.horizon - 1]
                if last < val_start:
                    parts["fit"].append((i, end))
                elif first >= val_start and last < test_start:
                    parts["validate"].append((i, end))
                elif first >= test_start:
                    parts["test"].append((i, end))  # windows straddling a boundary are dropped: no leakage
        empty = [name for name, windows in parts.items() if not windows]
        if empty:
            raise DataError(
                f"{Path(hp.path).name}: no complete {'/'.join(empty)} windows; the series are too short for "
                f"lookback={hp.lookback}, horizon={hp.horizon} and the split fractions: use more rows or smaller "
                "values."
            )
        returns = [np.diff(np.log(s.prices[s.dates.values < val_start])) for s in series]
        self.target_scale = float(np.concatenate(returns).std()) or 1.0  # fitted on the training period only
        self.datasets = {k: WindowDataset(series, w, hp.lookback, hp.horizon) for k, w in parts.items()}
        log.info("windows: %s", {k: len(w) for k, w in parts.items()})

    def _setup_predict(self) -> None:
        hp = self.hparams
        if not hp.predict_path:
            raise DataError("set data.predict_path (make predict INPUT=prices.csv) to the prices to forecast from")
        series = self._load(hp.predict_path)
        short = [s.name for s in series if len(s.prices) < hp.lookback]
        if short:
            raise DataError(
                f"{Path(hp.predict_path).name}: series {short} have fewer than lookback = {hp.lookback} rows to "
                "forecast from"
            )
        self.predict_info = []
        for s in series:
            freq = pd.infer_freq(s.dates[-min(len(s.dates), 30) :]) or pd.tseries.frequencies.to_offset(
                s.dates.to_series().diff().median()
            )
            future = pd.date_range(s.dates[-1], periods=hp.horizon + 1, freq=freq)[1:]
            self.predict_info.append({"series": s.name, "dates": [d.strftime("%Y-%m-%d") for d in future]})
            self.predict_info[-1]["history"] = (s.dates[-hp.lookback :], s.prices[-hp.lookback :])
        windows = [(i, len(s.prices)) for i, s in enumerate(series)]
        self.datasets["predict"] = WindowDataset(series, windows, hp.lookback, hp.horizon)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            collate_fn=_batched,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("fit", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validate")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
