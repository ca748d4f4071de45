"""Price forecasting in a baked project: strict parsing, a tracked training that beats the naive forecast, predict."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import mlflow_runs, run_cli, run_make

EPOCHS = 4


@pytest.fixture(scope="module")
def timeseries(package):
    from demo_project.datamodules import timeseries

    return timeseries


@pytest.fixture(scope="module")
def DataError(package):
    from demo_project.datamodules.common import DataError

    return DataError


@pytest.fixture(scope="module")
def sample_prices(project: Path, package) -> Path:
    from demo_project import sample_data

    return sample_data.write("forecasting", project / "data" / "sample")


def write(path: Path, rows: dict) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def days(n: int, start: str = "2024-01-01") -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.bdate_range(start, periods=n)]


def test_sample_splits_are_chronological_and_scale_is_fitted_on_training_only(timeseries, sample_prices, tmp_path):
    data = timeseries.PriceDataModule(path=str(sample_prices))
    data.setup("fit")
    sets = data.datasets
    last_train_target = max(sets["fit"].series[s].dates[e + 9] for s, e in sets["fit"].windows)
    first_val_target = min(sets["validate"].series[s].dates[e] for s, e in sets["validate"].windows)
    last_val_target = max(sets["validate"].series[s].dates[e + 9] for s, e in sets["validate"].windows)
    first_test_target = min(sets["test"].series[s].dates[e] for s, e in sets["test"].windows)
    assert last_train_target < first_val_target <= last_val_target < first_test_target
    # Wild prices in the test period must not change what was fitted on the training period.
    frame = pd.read_csv(sample_prices)
    late = frame["date"] > sorted(frame["date"])[int(len(frame) * 0.9)]
    frame.loc[late, "price"] *= 50
    changed = timeseries.PriceDataModule(path=str(write(tmp_path / "wild.csv", frame)))
    changed.setup("fit")
    assert changed.spec.target_scale == pytest.approx(data.spec.target_scale)


def test_wide_file_with_covariate(timeseries, tmp_path):
    n = 120
    rng = np.random.default_rng(0)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    path = write(
        tmp_path / "AAPL.csv",
        {
            "Date": days(n),
            "Open": close,
            "High": close,
            "Low": close,
            "Close": close,
            "Volume": rng.integers(1e5, 1e6, n),
        },
    )
    data = timeseries.PriceDataModule(
        path=str(path),
        date_column="Date",
        target="Close",
        series_column=None,
        covariates=["Volume"],
        lookback=20,
        horizon=5,
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["past"].shape[1:] == (20, 2)
    assert data.spec.num_features == 2
    assert_batch_holds_its_windows(data.datasets["fit"], batch)


def assert_batch_holds_its_windows(dataset, batch: dict) -> None:
    """Each row of ``batch`` is the window it indexes: prices, features, standardized covariates, targets."""
    lookback, horizon = dataset.lookback, dataset.horizon
    for row, index in enumerate(batch["index"].tolist()):
        s, end = dataset.windows[index]
        series = dataset.series[s]
        past, future = series.prices[end - lookback : end], series.prices[end : end + horizon]
        np.testing.assert_allclose(batch["past_price"][row], past, rtol=1e-6)
        assert batch["last_price"][row].item() == pytest.approx(past[-1], rel=1e-6)
        np.testing.assert_allclose(batch["past"][row, :, 0], np.log(past / past[-1]), atol=1e-6)
        for c in range(series.covariates.shape[1]):
            values = series.covariates[end - lookback : end, c]
            expected = (values - values.mean()) / (values.std() + 1e-8)
            np.testing.assert_allclose(batch["past"][row, :, 1 + c], expected, atol=1e-5)
        np.testing.assert_allclose(batch["target"][row], np.log(future / past[-1]), atol=1e-6)
        np.testing.assert_allclose(batch["target_price"][row], future, rtol=1e-6)


def test_batches_hold_the_windows_they_index(timeseries, sample_prices):
    data = timeseries.PriceDataModule(path=str(sample_prices), batch_size=256)
    data.setup("fit")
    for split, loader in (("fit", data.train_dataloader()), ("validate", data.val_dataloader())):
        batches = list(loader)
        assert sum(len(b["index"]) for b in batches) == len(data.datasets[split]), "each window once per epoch"
        assert len({data.datasets[split].windows[i][0] for b in batches for i in b["index"].tolist()}) > 1
        for batch in batches[:2]:
            assert_batch_holds_its_windows(data.datasets[split], batch)


def test_parquet_is_read(timeseries, sample_prices, tmp_path):
    path = tmp_path / "prices.parquet"
    pd.read_csv(sample_prices).to_parquet(path)
    data = timeseries.PriceDataModule(path=str(path))
    data.setup("fit")
    assert len(data.datasets["fit"]) > 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            {"symbol": ["A"] * 3, "date": ["2024-01-01", "2024-13-01", "2024-01-03"], "price": [1, 2, 3]},
            r"prices.csv row 3: date '2024-13-01' is not a date",
        ),
        (
            {"symbol": ["A"] * 3, "date": ["2024-01-01", "2024-01-02", "2024-01-02"], "price": [1, 2, 3]},
            r"prices.csv rows \[3, 4\]: date 2024-01-02 appears more than once in series 'A'",
        ),
        (
            {"symbol": ["A"] * 3, "date": ["2024-01-01", "2024-01-02", "2024-01-03"], "price": [1, "1,5", 3]},
            r"prices.csv row 3: price '1,5' is not a number",
        ),
        (
            {"symbol": ["A"] * 3, "date": ["2024-01-01", "2024-01-02", "2024-01-03"], "price": [1, -2, 3]},
            r"prices.csv row 3: price -2.0 is not a positive price",
        ),
        (
            {"symbol": ["A"] * 3, "date": ["2024-01-01", "2024-01-02", "2024-01-03"], "price": [1, None, 3]},
            r"prices.csv row 3: price is empty. Fill it in, or set data.missing: ffill",
        ),
        (
            {"ticker": ["A"] * 3, "date": ["2024-01-01", "2024-01-02", "2024-01-03"], "price": [1, 2, 3]},
            r"prices.csv: column\(s\) \['symbol'\] not found; the file has \['ticker', 'date', 'price'\]",
        ),
        (
            {"symbol": ["A"] * 30, "date": days(30), "price": np.linspace(1, 2, 30)},
            r"prices.csv: series A \(30 rows\) shorter than lookback \+ horizon = 50 rows",
        ),
    ],
    ids=["bad-date", "duplicate-date", "not-a-number", "negative", "empty", "missing-column", "too-short"],
)
def test_bad_files_are_rejected_with_row_and_column(timeseries, DataError, tmp_path, rows, message):
    path = write(tmp_path / "prices.csv", rows)
    with pytest.raises(DataError, match=message):
        timeseries.PriceDataModule(path=str(path)).setup("fit")


def test_missing_file_says_how_to_get_data(timeseries, DataError, tmp_path):
    with pytest.raises(DataError, match=r"price file .*nope.csv' does not exist.*make sample-data"):
        timeseries.PriceDataModule(path=str(tmp_path / "nope.csv")).setup("fit")


def test_forward_fill_is_counted(timeseries, tmp_path, caplog):
    n = 80
    price = list(np.linspace(10, 20, n))
    price[10] = price[11] = None
    path = write(tmp_path / "prices.csv", {"symbol": ["A"] * n, "date": days(n), "price": price})
    data = timeseries.PriceDataModule(path=str(path), missing="ffill", lookback=10, horizon=2)
    with caplog.at_level(logging.WARNING):
        data.setup("fit")
    assert "forward-filled 2 empty value(s) in series 'A'" in caplog.text
    assert data.datasets["fit"].series[0].prices[11] == pytest.approx(price[9])


def test_bad_file_through_the_cli_is_a_clear_error_not_a_traceback(project, tmp_path):
    bad = write(tmp_path / "prices.csv", {"symbol": ["A"] * 2, "date": ["2024-01-01", "yesterday"], "price": [1, 2]})
    result = run_cli(project, "fit", "--config", "configs/forecasting.yaml", "--data.path", str(bad), check=False)
    assert result.returncode == 1
    assert "ERROR: prices.csv row 3: date 'yesterday' is not a date" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def trained(project: Path, sample_prices: Path):
    """One short training through `make train`, shared by the tests that inspect its results."""
    run_make(
        project, "train", "TASK=forecasting", f"ARGS=--trainer.max_epochs {EPOCHS} --trainer.enable_progress_bar false"
    )
    return mlflow_runs(project, "forecasting")[0]


def test_training_is_tracked_in_mlflow(project, trained):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert trained.info.status == "FINISHED"
    history = client.get_metric_history(trained.info.run_id, "train/loss")
    assert len(history) >= 5 and len({m.step for m in history}) == len(history)
    steps = sorted(m.step for m in history)
    assert {b - a for a, b in zip(steps, steps[1:], strict=False)} == {10}, "every log_every_n_steps (10) steps"
    epoch_means = client.get_metric_history(trained.info.run_id, "train/loss_epoch")
    assert len(epoch_means) == EPOCHS
    values = [m.value for m in history]
    assert min(values) <= epoch_means[-1].value <= max(values)
    assert len(client.get_metric_history(trained.info.run_id, "val/loss")) == EPOCHS
    for name in ("test/mase", "test/naive_mase", "test/snaive_mase", "test/mae", "test/smape"):
        assert name in trained.data.metrics
    assert trained.data.params["backbone"] == "lstm" and trained.data.params["lookback"] == "40"
    artifacts = {a.path for a in client.list_artifacts(trained.info.run_id)}
    assert {"config.yaml", "checkpoints", "samples"} <= artifacts
    samples = {a.path for a in client.list_artifacts(trained.info.run_id, "samples/val_epoch000")}
    assert {f"samples/val_epoch000/{f}" for f in ("figure.png", "predictions.csv", "predictions.html")} <= samples
    assert len(client.list_artifacts(trained.info.run_id, "samples")) == EPOCHS + 1, "each epoch, and the test"
    config = client.download_artifacts(trained.info.run_id, "config.yaml")
    assert "PriceForecaster" in Path(config).read_text()
    assert Path(trained.data.tags["best_checkpoint"]).exists()


def test_model_beats_the_naive_forecast(trained):
    metrics = trained.data.metrics
    assert metrics["test/mase"] < 0.9 * metrics["test/naive_mase"], metrics


def test_predict_writes_forecasts_with_intervals_per_series(project, trained, sample_prices, tmp_path):
    recent = pd.read_csv(sample_prices).groupby("symbol").tail(60)
    recent = recent[recent["symbol"].isin(["ALPHA", "BRAVO"])]
    recent.to_csv(tmp_path / "recent.csv", index=False)
    run_make(project, "predict", "TASK=forecasting", f"INPUT={tmp_path / 'recent.csv'}")
    forecast = pd.read_csv(project / "predictions" / "forecasting.csv")
    assert len(forecast) == 2 * 10
    assert list(forecast.columns) == ["series", "date", "step", "price", "price_q10", "price_q90"]
    assert set(forecast["series"]) == {"ALPHA", "BRAVO"}
    assert (forecast["price_q10"] <= forecast["price"]).all() and (forecast["price"] <= forecast["price_q90"]).all()
    last_date = recent["date"].max()
    assert (forecast["date"] > last_date).all()
    assert (project / "predictions" / "forecasting.png").stat().st_size > 10_000
