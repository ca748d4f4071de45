"""Price forecasting: the data is read strictly, the model trains, forecasts come back in prices."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import PROJECT, run_cli

from {{ cookiecutter.package_name }}.datamodules.common import DataError
from {{ cookiecutter.package_name }}.datamodules.timeseries import PriceDataModule


def test_sample_prices_make_leak_free_windows(sample_path) -> None:
    data = PriceDataModule(path=str(sample_path("forecasting")), lookback=20, horizon=5)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["past"].shape[1:] == (20, 1)
    assert batch["target"].shape[1:] == (5,)
    assert (batch["past"][:, -1, 0] == 0).all(), "prices enter relative to the last observed price"
    train_ends = {data.datasets["fit"].series[s].dates[e + 4] for s, e in data.datasets["fit"].windows}
    val_starts = {data.datasets["validate"].series[s].dates[e] for s, e in data.datasets["validate"].windows}
    assert max(train_ends) < min(val_starts)


def test_a_bad_price_is_named_by_row(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    pd.DataFrame(
        {"symbol": ["A"] * 3, "date": ["2024-01-01", "2024-01-02", "2024-01-03"], "price": [1, "12 USD", 2]}
    ).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"prices.csv row 3: price '12 USD' is not a number"):
        PriceDataModule(path=str(path)).setup("fit")


def test_fit_then_predict(sample_path, tmp_path: Path) -> None:
    prices = sample_path("forecasting")
    config = str(PROJECT / "configs" / "forecasting.yaml")
    quick = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "2"]
    run_cli(
        tmp_path,
        "fit",
        "--config",
        config,
        "--data.path",
        str(prices),
        *quick,
        "--trainer.enable_progress_bar",
        "false",
    )
    run_cli(
        tmp_path,
        "predict",
        "--config",
        config,
        "--ckpt_path",
        "best",
        "--data.predict_path",
        str(prices),
        "--trainer.logger",
        "false",
    )
    forecast = pd.read_csv(tmp_path / "predictions" / "forecasting.csv")
    series = pd.read_csv(prices)["symbol"].nunique()
    assert len(forecast) == series * 10
    assert {"series", "date", "price", "price_q10", "price_q90"} <= set(forecast.columns)
    assert (forecast["price_q10"] <= forecast["price_q90"]).all()
