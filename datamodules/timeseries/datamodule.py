"""The price DataModule: validated series cut into leak-free train/validation/test windows, and its ``PriceSpec``.

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
from torch.utils.data import DataLoader

from ..common import DataError, SpecDataModule, check_fractions, check_positive, existing_path
from ..workers import loader_settings, loader_workers
from .calendar import future_stamps, labels
from .files import Series, parse_series, read_table
from .windows import WindowDataset, _batched

log = logging.getLogger(__name__)
SAMPLE_HINT = "Run `make sample-data` for the bundled sample, or set data.path to your own file."


@dataclass(frozen=True)
class PriceSpec:
    """What a forecaster needs to know of its data: window sizes, inputs and the scale fitted on training prices.

    Made by ``setup("fit")``, saved in the checkpoint; ``use_spec`` makes test and predict data follow it.
    """

    lookback: int
    horizon: int
    covariates: tuple[str, ...]
    target_scale: float  # spread of daily log returns in the training period
    target: str = "price"  # the forecast column's name, as the user's file calls it (Close, Adj Close, ...)

    def __post_init__(self) -> None:  # a checkpoint or a config may hold a list
        object.__setattr__(self, "covariates", tuple(self.covariates))

    @property
    def num_features(self) -> int:
        return 1 + len(self.covariates)


class PriceDataModule(SpecDataModule):
    """Price series -> windows of past prices (and covariates) with the next ``horizon`` prices as targets.

    Args:
        path: CSV or Parquet file.
        date_column, target, series_column: column names; ``series_column: null`` for a one-series (wide) file.
        covariates: extra numeric columns fed to the model (e.g. ``[Volume]``).
        lookback, horizon: days the model sees and days it forecasts.
        val_fraction, test_fraction: the last parts of the time axis, common to all series (no look-ahead).
        missing: ``error`` on an empty value, or ``ffill`` to carry the previous value forward (counted in the log).
        predict_path: a file in the same format; the forecast starts after its last date, per series, and
            follows the series' calendar (its weekdays, session hours or month ends).
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
        num_workers: int | Literal["auto"] = 0,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        check_positive(lookback=lookback, horizon=horizon, batch_size=batch_size)
        loader_workers(num_workers)  # "auto" (the GPU presets), or a number of processes the machine can hold
        check_fractions(val_fraction, test_fraction)
        self.save_hyperparameters()
        self.spec: PriceSpec | None = None
        self.datasets: dict[str, WindowDataset] = {}

    def use_spec(self, spec: PriceSpec) -> None:
        """Cut windows as a trained model expects them (test, predict): its lookback, horizon and inputs.

        A model takes windows of the size it was trained on, so settings that differ from it are replaced, and
        the log says which.
        """
        hp = self.hparams
        ours = {"lookback": hp.lookback, "horizon": hp.horizon, "covariates": tuple(hp.covariates or ())}
        differ = [f"{k} {v!r} -> {getattr(spec, k)!r}" for k, v in ours.items() if v != getattr(spec, k)]
        if differ:
            log.warning("data.%s: the data follows the trained model (its checkpoint)", ", data.".join(differ))
        self.spec = spec

    @property
    def _window(self) -> tuple[int, int, list[str]]:
        """Lookback, horizon and covariates: the trained model's when there is one, else the config's."""
        if self.spec is not None:
            return self.spec.lookback, self.spec.horizon, list(self.spec.covariates)
        return self.hparams.lookback, self.hparams.horizon, list(self.hparams.covariates or [])

    def _load(self, path: str) -> list[Series]:
        hp = self.hparams
        file = existing_path(path, "price file", SAMPLE_HINT)
        frame = read_table(file)
        return parse_series(file, frame, hp.date_column, hp.target, hp.series_column, self._window[2], hp.missing)

    def read_splits(self) -> None:
        """Read and check the series, cut them into train/validation/test windows by time, fit the price scale."""
        hp = self.hparams
        lookback, horizon, covariates = self._window
        series = self._load(hp.path)
        need = lookback + horizon
        short = [f"{s.name} ({len(s.prices)} rows)" for s in series if len(s.prices) < need]
        if short:
            raise DataError(
                f"{Path(hp.path).name}: series {', '.join(short)} shorter than lookback + horizon = {need} rows; "
                "lower data.lookback / data.horizon or drop those series."
            )
        all_dates = np.sort(np.concatenate([s.dates.values for s in series]))
        n = len(all_dates)
        val_start = all_dates[min(int(n * (1 - hp.val_fraction - hp.test_fraction)), n - 1)]
        test_start = all_dates[min(int(n * (1 - hp.test_fraction)), n - 1)] if hp.test_fraction > 0 else None
        parts: dict[str, list[tuple[int, int]]] = {"fit": [], "validate": [], "test": []}
        for i, s in enumerate(series):
            for end in range(lookback, len(s.prices) - horizon + 1):
                first, last = s.dates.values[end], s.dates.values[end + horizon - 1]
                if last < val_start:
                    parts["fit"].append((i, end))
                elif first >= val_start and (test_start is None or last < test_start):
                    parts["validate"].append((i, end))
                elif test_start is not None and first >= test_start:
                    parts["test"].append((i, end))  # windows straddling a boundary are dropped: no leakage
        empty = [name for name, windows in parts.items() if not windows and (name != "test" or test_start)]
        if empty:
            raise DataError(
                f"{Path(hp.path).name}: no complete {'/'.join(empty)} windows; the series are too short for "
                f"lookback={lookback}, horizon={horizon} and the split fractions: use more rows or smaller values."
            )
        if self.spec is None:  # the only fitted value, from the training period alone
            returns = [np.diff(np.log(s.prices[s.dates.values < val_start])) for s in series]
            scale = float(np.concatenate(returns).std()) or 1.0
            self.spec = PriceSpec(lookback, horizon, tuple(covariates), scale, hp.target)
        self.datasets = {k: WindowDataset(series, w, lookback, horizon) for k, w in parts.items()}
        log.info("windows: %s", {k: len(w) for k, w in parts.items()})

    def read_predict(self) -> None:
        """The series of ``predict_path``, each forecast from its last ``lookback`` rows."""
        hp = self.hparams
        lookback, horizon, _ = self._window
        if not hp.predict_path:
            raise DataError("set data.predict_path (make predict INPUT=prices.csv) to the prices to forecast from")
        series = self._load(hp.predict_path)
        short = [s.name for s in series if len(s.prices) < lookback]
        if short:
            raise DataError(
                f"{Path(hp.predict_path).name}: series {short} have fewer than lookback = {lookback} rows to "
                "forecast from"
            )
        dates = []
        for s in series:
            future = future_stamps(s.dates, horizon)
            dates.append(labels(future, like=s.dates[-lookback:]))
        windows = [(i, len(s.prices)) for i, s in enumerate(series)]
        self.datasets["predict"] = WindowDataset(series, windows, lookback, horizon, forecast_dates=dates)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            collate_fn=_batched,
            **loader_settings(self.hparams.num_workers),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("fit", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validate")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
