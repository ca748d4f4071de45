"""Price forecasting in a baked project: strict parsing, a tracked training that beats the naive forecast, predict."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_refused, forecasting_project, mlflow_runs, run_cli, run_count, run_make

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


def test_a_wide_file_read_as_a_long_one_says_to_set_series_column_null(timeseries, DataError, tmp_path):
    path = write(tmp_path / "AAPL.csv", {"Date": days(60), "Close": np.linspace(10, 20, 60)})
    with pytest.raises(DataError, match=r"no 'symbol' column: set data.series_column: null"):
        timeseries.PriceDataModule(path=str(path), date_column="Date", target="Close").setup("fit")
    # `--data.series_column None` arrives as the text "None": read as no series column
    data = timeseries.PriceDataModule(path=str(path), date_column="Date", target="Close", series_column="None",
                                      lookback=10, horizon=3)  # fmt: skip
    data.setup("fit")
    assert data.spec.lookback == 10


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
            r"prices.csv row 3: price is empty \(or marked missing: null, NaN, N/A\). Fill it in, or set data.missing",
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


def text_file(rows: int = 60, sep: str = ",") -> str:
    """A long price file of one symbol as text, for byte-level damage."""
    lines = [sep.join(["symbol", "date", "price"])]
    lines += [sep.join(["A", day, f"{10 + i / 10:.2f}"]) for i, day in enumerate(days(rows))]
    return "\n".join(lines) + "\n"


def german_excel() -> str:
    """``text_file()`` as a German spreadsheet exports it: semicolons, day-first dates, decimal commas."""
    lines = text_file().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    german = [f"{s};{d[8:10]}.{d[5:7]}.{d[:4]};{p.replace('.', ',')}" for s, d, p in rows]
    return "\n".join([lines[0].replace(",", ";"), *german]) + "\n"


def with_cell(row: int, column: int, value: str) -> bytes:
    """``text_file()`` with one cell replaced (``row`` 2 is the first data row, as a spreadsheet counts)."""
    lines = [line.split(",") for line in text_file().splitlines()]
    lines[row - 1][column] = value
    return ("\n".join(",".join(line) for line in lines) + "\n").encode()


def zoned_dates(first_naive_row: int | None = None) -> bytes:
    """Daily stamps at 10:00 in Berlin across the spring DST change (+01:00, then +02:00)."""
    stamps = [s.isoformat() for s in pd.date_range("2021-03-20 10:00", periods=60, freq="D", tz="Europe/Berlin")]
    if first_naive_row is not None:
        stamps[first_naive_row - 2] = stamps[first_naive_row - 2][:19].replace("T", " ")
    prices = np.linspace(10, 20, 60)
    return ("symbol,date,price\n" + "".join(f"A,{d},{p}\n" for d, p in zip(stamps, prices, strict=True))).encode()


# What users bring that is damaged: each row a file's bytes and the words its one-line refusal must contain.
BAD_BYTES = {
    "inf": (with_cell(7, 2, "inf"), "prices.csv row 7: price 'inf' is not a finite number"),
    "minus-inf": (with_cell(7, 2, "-inf"), "prices.csv row 7: price '-inf' is not a finite number"),
    "overflow": (with_cell(9, 2, "1e999"), "prices.csv row 9: price '1e999' is not a finite number"),
    "nan": (with_cell(4, 2, "NaN"), "prices.csv row 4: price is empty (or marked missing"),
    "tiny": (with_cell(4, 2, "1e-300"), "prices.csv row 4: price 1e-300 is too small"),
    "zones-and-none": (
        zoned_dates(first_naive_row=12),
        "prices.csv rows 2 and 12: date '2021-03-20T10:00:00+01:00' has",
    ),
    "latin-1": (
        text_file().replace("A,", "Soci\xe9t\xe9,").encode("latin-1"),
        "prices.csv line 2: byte 0xE9 is not UTF-8",
    ),
    "ragged-row": (text_file().encode() + b"A,2025-01-01,3,4\n", "prices.csv line 62: 4 fields where the header has 3"),
    "empty-file": (b"", "prices.csv is empty"),
    "header-only": (b"symbol,date,price\n", "prices.csv has a header but no rows"),
    "empty-symbol": (with_cell(5, 0, ""), "prices.csv row 5: symbol is empty"),
    "binary": (b"PK\x03\x04\x00\x00" * 20, "prices.csv is a damaged ZIP archive (a binary file, not text"),
    "day-and-month-first": (
        german_excel().replace("29.01.2024", "01.29.2024").encode(),
        "prices.csv row 22: date '01.29.2024' is not a date like the column's other dates",
    ),
    "date-serial-numbers": (with_cell(2, 1, "45292"), "prices.csv row 2: date '45292' is not a date (a spreadsheet"),
    "decimal-point-among-commas": (
        german_excel().replace("11,50", "11.50").encode(),
        "prices.csv row 17: price '11.50' is not written like the column's other numbers",
    ),
}


@pytest.mark.parametrize(("content", "message"), BAD_BYTES.values(), ids=BAD_BYTES.keys())
def test_damaged_files_are_refused_by_name(timeseries, DataError, tmp_path, content, message):
    (tmp_path / "prices.csv").write_bytes(content)
    with pytest.raises(DataError) as error:
        timeseries.PriceDataModule(path=str(tmp_path / "prices.csv"), lookback=10, horizon=3).setup("fit")
    assert message in str(error.value)


# Legitimate oddities, read as the plain file is: a byte-order mark, other separators, Excel's UTF-16 text.
ODD_BUT_FINE = {
    "bom": ("\ufeff" + text_file()).encode(),
    "semicolons": text_file(sep=";").encode(),
    "tabs": text_file(sep="\t").encode(),
    "utf-16": ("\ufeff" + text_file(sep="\t")).encode("utf-16-le"),
    "spaces-after-commas": text_file().replace(",", ", ").encode(),
    "windows-line-ends": text_file().replace("\n", "\r\n").encode(),
    "german-excel": german_excel().encode(),
}


@pytest.mark.parametrize("content", ODD_BUT_FINE.values(), ids=ODD_BUT_FINE.keys())
def test_odd_but_valid_files_read_like_the_plain_one(timeseries, tmp_path, content):
    (tmp_path / "plain.csv").write_text(text_file())
    (tmp_path / "odd.csv").write_bytes(content)
    plain, odd = (
        timeseries.PriceDataModule(path=str(tmp_path / f), lookback=10, horizon=3) for f in ("plain.csv", "odd.csv")
    )
    plain.setup("fit")
    odd.setup("fit")
    assert odd.spec == plain.spec
    np.testing.assert_array_equal(odd.datasets["fit"].prices, plain.datasets["fit"].prices)


@pytest.mark.parametrize(
    ("form", "separator"), [("%d.%m.%Y", ";"), ("%m/%d/%Y", ",")], ids=["day-first", "month-first"]
)
def test_dates_without_a_day_above_12_are_read_in_the_order_of_their_form(timeseries, tmp_path, form, separator):
    months = pd.date_range("2021-01-01", periods=30, freq="MS")  # the 1st of each month: 01.02.2021 or 02/01/2021
    lines = [f"A{separator}{d.strftime(form)}{separator}{10 + i}" for i, d in enumerate(months)]
    (tmp_path / "prices.csv").write_text(separator.join(["symbol", "date", "price"]) + "\n" + "\n".join(lines))
    data = timeseries.PriceDataModule(path=str(tmp_path / "prices.csv"), lookback=6, horizon=2)
    data.setup("fit")
    assert list(data.datasets["fit"].series[0].dates[:3]) == list(months[:3])


def test_time_zones_are_converted_to_utc_and_said(timeseries, tmp_path, caplog):
    (tmp_path / "prices.csv").write_bytes(zoned_dates())
    data = timeseries.PriceDataModule(path=str(tmp_path / "prices.csv"), lookback=10, horizon=3)
    with caplog.at_level(logging.WARNING):
        data.setup("fit")
    assert "date has time zones (+01:00, +02:00); converted to UTC" in caplog.text
    dates = data.datasets["fit"].series[0].dates
    assert dates[0] == pd.Timestamp("2021-03-20 09:00") and dates[10] == pd.Timestamp("2021-03-30 08:00")
    frame = pd.DataFrame({"date": pd.date_range("2024-01-01", periods=60, freq="D", tz="America/New_York")})
    frame["price"] = np.linspace(1, 2, 60)
    frame.to_parquet(tmp_path / "typed.parquet")
    typed = timeseries.PriceDataModule(path=str(tmp_path / "typed.parquet"), series_column=None, lookback=10, horizon=3)
    typed.setup("fit")
    assert typed.datasets["fit"].series[0].dates[0] == pd.Timestamp("2024-01-01 05:00")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "data.val_fraction + data.test_fraction = 1 leaves no data"),
        ({"val_fraction": 0.7, "test_fraction": 0.6}, "data.val_fraction + data.test_fraction = 1.3 leaves no data"),
        ({"test_fraction": -0.1}, "data.test_fraction is -0.1; it must be in [0, 1)"),
        ({"val_fraction": 1.0}, "data.val_fraction is 1.0; it must be in [0, 1)"),
        ({"val_fraction": 0}, "data.val_fraction is 0, but the best checkpoint is chosen on validation data"),
        ({"lookback": 0}, "data.lookback must be a positive number, not 0"),
        ({"horizon": -3}, "data.horizon must be a positive number, not -3"),
        ({"batch_size": 0}, "data.batch_size must be a positive number, not 0"),
    ],
)
def test_settings_are_checked_before_reading(timeseries, DataError, tmp_path, settings, message):
    with pytest.raises(DataError) as error:
        timeseries.PriceDataModule(path=str(tmp_path / "not-read-yet.csv"), **settings)
    assert message in str(error.value)


def test_no_test_period_when_test_fraction_is_zero(timeseries, DataError, sample_prices):
    data = timeseries.PriceDataModule(path=str(sample_prices), test_fraction=0)
    data.setup("fit")
    assert len(data.datasets["fit"]) and len(data.datasets["validate"]) and not len(data.datasets["test"])
    last_validation = max(
        data.datasets["validate"].series[s].dates[e + 9] for s, e in data.datasets["validate"].windows
    )
    assert last_validation == data.datasets["validate"].series[0].dates[-1], "validation runs to the end"
    with pytest.raises(DataError, match="data.test_fraction is 0, so there is no test split"):
        timeseries.PriceDataModule(path=str(sample_prices), test_fraction=0).setup("test")


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        (  # business days with a holiday (Wednesday) among the last rows: the forecast skips the weekend
            pd.bdate_range("2024-01-01", "2024-03-22").delete(-3),
            ["2024-03-25", "2024-03-26", "2024-03-27", "2024-03-28", "2024-03-29", "2024-04-01"],
        ),
        (  # hourly bars 09:30-15:30 on weekdays: the forecast stays within the session and skips the weekend
            pd.DatetimeIndex(
                [
                    d + pd.Timedelta(hours=h, minutes=30)
                    for d in pd.bdate_range("2024-01-01", "2024-01-26")
                    for h in range(9, 16)
                ]
            ),
            [
                "2024-01-29 09:30:00",
                "2024-01-29 10:30:00",
                "2024-01-29 11:30:00",
                "2024-01-29 12:30:00",
                "2024-01-29 13:30:00",
                "2024-01-29 14:30:00",
            ],
        ),
        (
            pd.date_range("2020-01-31", periods=24, freq="ME"),
            ["2022-01-31", "2022-02-28", "2022-03-31", "2022-04-30", "2022-05-31", "2022-06-30"],
        ),
        (
            pd.date_range("2020-01-03", periods=30, freq="W-FRI"),
            ["2020-07-31", "2020-08-07", "2020-08-14", "2020-08-21", "2020-08-28", "2020-09-04"],
        ),
        (  # seven days a week (crypto): weekends stay in
            pd.date_range("2024-01-01", "2024-02-29", freq="D"),
            ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05", "2024-03-06"],
        ),
    ],
    ids=["business-days-with-holiday", "hourly-session", "month-ends", "weekly", "every-day"],
)
def test_forecast_dates_follow_the_series_calendar(timeseries, tmp_path, dates, expected):
    prices = np.linspace(10, 20, len(dates))
    stamps = dates.strftime("%Y-%m-%d" if (dates == dates.normalize()).all() else "%Y-%m-%d %H:%M:%S")
    path = write(tmp_path / "recent.csv", {"symbol": "A", "date": stamps, "price": prices})
    data = timeseries.PriceDataModule(path=str(path), lookback=12, horizon=6, predict_path=str(path))
    data.setup("predict")
    assert next(iter(data.predict_dataloader()))["dates"][0] == expected


def test_predict_follows_the_checkpoint_window_and_says_so(timeseries, DataError, sample_prices, tmp_path, caplog):
    spec = timeseries.PriceSpec(lookback=30, horizon=7, covariates=(), target_scale=0.01)
    data = timeseries.PriceDataModule(predict_path=str(sample_prices), lookback=20, horizon=5)
    with caplog.at_level(logging.WARNING):
        data.use_spec(spec)
    assert "data.lookback 20 -> 30, data.horizon 5 -> 7: the data follows the trained model" in caplog.text
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert batch["past"].shape[1] == 30 and len(batch["dates"][0]) == 7
    short = write(tmp_path / "short.csv", {"symbol": "A", "date": days(25), "price": np.linspace(1, 2, 25)})
    few = timeseries.PriceDataModule(predict_path=str(short))
    few.use_spec(spec)
    with pytest.raises(DataError, match=r"short.csv: series \['A'\] have fewer than lookback = 30 rows"):
        few.setup("predict")
    covariate = timeseries.PriceSpec(lookback=30, horizon=7, covariates=("Volume",), target_scale=0.01)
    needs = timeseries.PriceDataModule(predict_path=str(sample_prices))
    needs.use_spec(covariate)
    with pytest.raises(DataError, match=r"prices.csv: column\(s\) \['Volume'\] not found"):
        needs.setup("predict")


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


def test_missing_value_marks_are_empty_values(timeseries, tmp_path, caplog):
    yahoo = text_file().replace("Date", "date").splitlines()
    yahoo[5] = "A,2024-01-05,null"  # Yahoo Finance writes null on days without a price
    (tmp_path / "prices.csv").write_text("\n".join(yahoo) + "\n")
    data = timeseries.PriceDataModule(path=str(tmp_path / "prices.csv"), lookback=10, horizon=3, missing="ffill")
    with caplog.at_level(logging.WARNING):
        data.setup("fit")
    assert "forward-filled 1 empty value(s) in series 'A'" in caplog.text


def test_a_folder_is_not_a_price_file(timeseries, DataError, tmp_path):
    with pytest.raises(DataError, match=r"cannot be read \(Is a directory\); it must be a readable file"):
        timeseries.PriceDataModule(path=str(tmp_path)).setup("fit")


def test_bad_file_through_the_cli_is_a_clear_error_not_a_traceback(project, tmp_path):
    bad = write(tmp_path / "prices.csv", {"symbol": ["A"] * 2, "date": ["2024-01-01", "yesterday"], "price": [1, 2]})
    result = run_cli(project, "fit", "--config", "configs/forecasting.yaml", "--data.path", str(bad), check=False)
    assert result.returncode == 1
    assert "ERROR: prices.csv row 3: date 'yesterday' is not a date" in result.stderr
    assert "Traceback" not in result.stderr


# A training refused by the CLI: exit 1, one ERROR line that names the problem, no traceback, no MLflow run.
CLI_REFUSALS = {
    "infinite-price": (["--data.path", "{bad}"], BAD_BYTES["inf"][0], ["prices.csv row 7: price 'inf'"]),
    "mixed-zones": (
        ["--data.path", "{bad}"],
        BAD_BYTES["zones-and-none"][0],
        ["prices.csv rows 2 and 12", "time zone"],
    ),
    "season-not-shorter-than-lookback": (
        ["--model.season_length", "40"],
        None,
        ["model.season_length (40)", "data.lookback (40)"],
    ),
    "fractions-leave-no-training": (
        ["--data.val_fraction", "0.6", "--data.test_fraction", "0.4"],
        None,
        ["data.val_fraction + data.test_fraction = 1"],
    ),
}


@pytest.mark.parametrize(("args", "content", "names"), CLI_REFUSALS.values(), ids=CLI_REFUSALS.keys())
def test_refused_training_starts_no_run(project, sample_prices, tmp_path, args, content, names):
    if content is not None:
        (tmp_path / "prices.csv").write_bytes(content)
    args = [a.replace("{bad}", str(tmp_path / "prices.csv")) for a in args]
    runs = run_count(project)
    result = run_cli(project, "fit", "--config", "configs/forecasting.yaml", *args, check=False)
    assert_refused(result, *names)
    assert run_count(project) == runs, "a refused training must not create an MLflow run"


def fake_checkpoint(path: Path, class_path: str) -> Path:
    """A checkpoint file as training writes one, holding only what the CLI reads before loading weights."""
    import torch

    torch.save({"hyper_parameters": {"_class_path": class_path, "spec": {}}, "state_dict": {}}, path)
    return path


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (
            lambda tmp: fake_checkpoint(tmp / "captioner.ckpt", "demo_project.tasks.captioning.ImageCaptioner"),
            ["captioner.ckpt' is a checkpoint of task 'captioning' (ImageCaptioner), not of 'forecasting'"],
        ),
        (lambda tmp: write(tmp / "prices.ckpt", {"a": [1]}), ["prices.ckpt' is not a readable checkpoint"]),
        (lambda tmp: tmp / "gone.ckpt", ["gone.ckpt' does not exist"]),
    ],
    ids=["another-task", "not-a-checkpoint", "missing"],
)
def test_checkpoints_that_do_not_fit_are_refused_by_name(project, sample_prices, tmp_path, make, names):
    checkpoint = make(tmp_path)
    predict = ["--ckpt_path", str(checkpoint), "--data.predict_path", str(sample_prices), "--trainer.logger", "false"]
    result = run_cli(project, "predict", "--config", "configs/forecasting.yaml", *predict, check=False)
    assert_refused(result, *names)


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
    assert {"config.yaml", "checkpoints", "examples"} <= artifacts
    samples = {a.path for a in client.list_artifacts(trained.info.run_id, "examples/val_epoch000")}
    assert {f"examples/val_epoch000/{f}" for f in ("figure.png", "predictions.csv", "predictions.html")} <= samples
    assert len(client.list_artifacts(trained.info.run_id, "examples")) == EPOCHS + 1, "each epoch, and the test"
    config = client.download_artifacts(trained.info.run_id, "config.yaml")
    assert "PriceForecaster" in Path(config).read_text()
    assert not Path(trained.data.tags["best_checkpoint"]).is_absolute()  # relative to the project: no home folder
    assert (project / trained.data.tags["best_checkpoint"]).exists()


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


def test_training_without_a_test_period_finishes(project, sample_prices):
    quick = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    run_cli(project, "fit", "--config", "configs/forecasting.yaml", "--data.test_fraction", "0", *quick)
    run = mlflow_runs(project, "forecasting")[0]
    assert run.info.status == "FINISHED" and "val/loss" in run.data.metrics
    assert not [m for m in run.data.metrics if m.startswith("test/")]


WIDE_ARGS = (
    "--data.path {path} --data.date_column Date --data.target Close --data.series_column null "
    "--data.lookback 20 --data.horizon 5 --trainer.max_epochs 1 --trainer.enable_progress_bar false"
)


def test_predict_and_resume_read_the_data_as_the_training_did(tmp_path):
    """A training on a wide file with its settings in ARGS; predict and resume need only TASK (and INPUT)."""
    project = forecasting_project(tmp_path)
    rng = np.random.default_rng(3)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, 160)))
    prices = write(tmp_path / "AAPL.csv", {"Date": days(160), "Open": close * 0.99, "Close": close})
    trained = run_make(project, "train", "TASK=forecasting", f"ARGS={WIDE_ARGS.format(path=prices)}")
    assert "Result: test/mase " in trained.stdout  # the verdict line
    (run,) = mlflow_runs(project, "forecasting")
    assert run.data.tags["data"] == f".../{tmp_path.name}/AAPL.csv" and run.info.run_name.endswith("epochs=1")

    taken = "data.date_column='Date' (config: 'date'), data.target='Close' (config: 'price'), data.series_column=None"
    predicted = run_make(project, "predict", "TASK=forecasting", f"INPUT={prices}")
    assert taken in predicted.stderr + predicted.stdout
    forecast = pd.read_csv(project / "predictions" / "forecasting.csv")
    assert len(forecast) == 5 and forecast["date"].iloc[0] > days(160)[-1]
    assert set(forecast["series"]) == {"AAPL"}  # the file's name, not its price column's
    assert list(forecast.columns) == ["series", "date", "step", "Close", "Close_q10", "Close_q90"]  # the user's name

    resumed = run_make(project, "resume", "TASK=forecasting", "ARGS=--trainer.max_epochs 2")
    assert taken in resumed.stderr + resumed.stdout and f"MLflow run {run.info.run_id} (continued)" in resumed.stdout
    (run,) = mlflow_runs(project, "forecasting")
    assert run.info.status == "FINISHED" and run.info.run_name.endswith("epochs=2")  # renamed to what it now is

    # a setting given on the command line wins, and a resume it breaks names it with both values
    resume = ["--config", "configs/forecasting.yaml", "--ckpt_path", "last", "--data.target", "Open"]
    refused = run_cli(project, "fit", *resume, check=False)
    assert_refused(refused, "target_scale", "in the checkpoint", "data.target='Open' (training: 'Close')")
