"""Windows over price series: lookback prices (and covariates) in, the next ``horizon`` prices out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .calendar import labels
from .files import Series


class WindowDataset(Dataset):
    """Windows ``(series, end)``: lookback ``[end - lookback, end)``, targets ``[end, end + horizon)``.

    A batch is cut from the concatenated series with one gather per field (``__getitems__``, which the
    DataLoader calls with a whole batch of indices): building each window's tensors one by one took about a
    third of a training epoch on a CPU.
    """

    def __init__(
        self,
        series: list[Series],
        windows: list[tuple[int, int]],
        lookback: int,
        horizon: int,
        forecast_dates: list[list[str]] | None = None,
    ) -> None:
        self.series, self.windows, self.lookback, self.horizon = series, windows, lookback, horizon
        self.forecast_dates = forecast_dates  # per window, for predict: the dates its forecast is for
        lengths = np.array([len(s.prices) for s in series])
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.prices = np.concatenate([s.prices for s in series]).astype(np.float64)
        self.covariates = np.concatenate([s.covariates for s in series]).astype(np.float64)
        self.starts = np.array([offsets[s] + end - lookback for s, end in windows], dtype=np.int64)
        self.has_future = np.array([end + horizon <= lengths[s] for s, end in windows], dtype=bool)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
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
        if self.forecast_dates is not None:  # what predict_step needs to label its forecasts
            windows = [self.windows[i] for i in indices]
            batch["series"] = [self.series[s].name for s, _ in windows]
            batch["past_dates"] = [labels(self.series[s].dates[end - self.lookback : end]) for s, end in windows]
            batch["dates"] = [self.forecast_dates[i] for i in indices]
        return batch


def _float(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _batched(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DataLoader's collate function: ``WindowDataset.__getitems__`` returns whole batches already."""
    return batch
