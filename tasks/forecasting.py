"""Price forecasting: a recurrent or Transformer network maps past prices to the next ``horizon`` prices.

The network sees log prices relative to the last observed price, divided by the spread of daily log returns
measured on the training period; it predicts quantiles of the same quantity, turned back into prices for
metrics and predictions. Every metric is computed beside the naive (last value) and seasonal-naive forecasts
on the same windows, so a user sees at once whether the model is worth anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanAbsolutePercentageError, MeanMetric, MetricCollection
from torchmetrics.regression import SymmetricMeanAbsolutePercentageError

from ..datamodules.timeseries import PriceSpec
from ..examples import Examples
from .base import TaskModule
from .settings import check_model_settings


class RecurrentBackbone(nn.Module):
    """LSTM or GRU over the lookback window; the last hidden state summarizes it."""

    def __init__(self, kind: str, num_features: int, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(
            num_features, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0][:, -1]


class TransformerBackbone(nn.Module):
    """A Transformer encoder over the lookback window, with learned positions; the last position summarizes it."""

    def __init__(self, num_features: int, hidden_size: int, num_layers: int, dropout: float, lookback: int) -> None:
        super().__init__()
        self.embed = nn.Linear(num_features, hidden_size)
        self.position = nn.Parameter(torch.zeros(1, lookback, hidden_size))
        layer = nn.TransformerEncoderLayer(hidden_size, 4, 4 * hidden_size, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x) + self.position[:, -x.shape[1] :]
        return self.encoder(h)[:, -1]


class PriceForecaster(TaskModule):
    """Forecasts the next ``horizon`` prices with prediction intervals from the quantile loss.

    Args:
        backbone: ``lstm``, ``gru`` or ``transformer``.
        loss: ``quantile`` (pinball loss over ``quantiles``; intervals in predictions), ``mae`` or ``mse``.
        season_length: period of the seasonal-naive baseline and the MASE scale (5 = a business week).
        examples_to_log: forecast windows logged to MLflow (a table and a plot) each validation epoch.
        spec: the data's ``PriceSpec`` (lookback, horizon, inputs, scale) as a checkpoint keeps it; for a new
            training the CLI passes the DataModule's to ``configure`` instead.
    """

    spec_type = PriceSpec

    def __init__(
        self,
        backbone: Literal["lstm", "gru", "transformer"] = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.1,
        loss: Literal["quantile", "mae", "mse"] = "quantile",
        quantiles: list[float] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        season_length: int = 5,
        examples_to_log: int = 4,
        spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["spec"])
        check_model_settings(
            sizes={"hidden_size": hidden_size, "num_layers": num_layers, "season_length": season_length},
            rates={"lr": lr}, fractions={"dropout": dropout}, non_negative={"weight_decay": weight_decay},
        )  # fmt: skip
        self.quantiles = sorted(quantiles or [0.1, 0.5, 0.9]) if loss == "quantile" else [0.5]
        if 0.5 not in self.quantiles or not all(0 < q < 1 for q in self.quantiles):
            raise ValueError(
                f"model.quantiles {self.quantiles} must lie between 0 and 1 and include 0.5 (the forecast)"
            )
        if season_length < 1:
            raise ValueError(f"model.season_length must be 1 or more, not {season_length}")
        metrics = MetricCollection(
            {
                "mae": MeanAbsoluteError(),
                "mape": MeanAbsolutePercentageError(),
                "smape": SymmetricMeanAbsolutePercentageError(),
                "mase": MeanMetric(),
                "naive_mase": MeanMetric(),
                "snaive_mase": MeanMetric(),
            }
        )
        self.metrics = nn.ModuleDict({stage: metrics.clone(prefix=f"{stage}/") for stage in ("val", "test")})
        self.spec: PriceSpec | None = None
        self.net: nn.Module | None = None
        self._history: dict[str, tuple[list[str], list[float]]] = {}  # per series, for the forecast plot
        self.restore(spec)

    def build(self, spec: PriceSpec) -> None:
        """The layers that depend on the data: the window's inputs in, ``horizon`` quantile forecasts out."""
        if self.hparams.season_length >= spec.lookback:  # the seasonal-naive forecast repeats a season of the window
            raise ValueError(
                f"model.season_length ({self.hparams.season_length}) must be smaller than data.lookback "
                f"({spec.lookback}): lower the season or look further back"
            )
        hp = self.hparams
        if hp.backbone == "transformer":
            body = TransformerBackbone(spec.num_features, hp.hidden_size, hp.num_layers, hp.dropout, spec.lookback)
        else:
            body = RecurrentBackbone(hp.backbone, spec.num_features, hp.hidden_size, hp.num_layers, hp.dropout)
        self.net = nn.Sequential(body, nn.Linear(hp.hidden_size, spec.horizon * len(self.quantiles)))

    def forward(self, past: Tensor) -> Tensor:
        """Quantiles of log(price / last price), shape (batch, horizon, quantiles)."""
        scale = self.spec.target_scale
        past = torch.cat([past[..., :1] / scale, past[..., 1:]], dim=-1)
        out = self.net(past).view(past.shape[0], self.spec.horizon, len(self.quantiles))
        return out * scale

    def example_input(self) -> Tensor:
        """A batch of one lookback window, for the signature of the logged MLflow model."""
        return torch.zeros(1, self.spec.lookback, self.spec.num_features)

    def to_prices(self, relative: Tensor, last_price: Tensor) -> Tensor:
        return last_price.view(-1, *([1] * (relative.dim() - 1))) * torch.exp(relative)

    def _loss(self, pred: Tensor, target: Tensor) -> Tensor:
        error = (target.unsqueeze(-1) - pred) / self.spec.target_scale
        if self.hparams.loss == "quantile":
            q = torch.tensor(self.quantiles, device=pred.device, dtype=pred.dtype)
            return torch.maximum(q * error, (q - 1) * error).mean()
        return error.abs().mean() if self.hparams.loss == "mae" else error.pow(2).mean()

    def shared_step(self, batch: dict[str, Tensor], stage: str) -> tuple[Tensor, Tensor | None]:
        """The loss of a batch, and outside training its forecasts in prices (after updating the metrics)."""
        pred = self(batch["past"])
        loss = self._loss(pred, batch["target"])
        if stage == "train":
            return loss, None
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=pred.shape[0], sync_dist=True)
        prices = self.to_prices(pred, batch["last_price"])
        self._update_metrics(stage, prices[..., self.quantiles.index(0.5)], batch)
        return loss, prices

    def _update_metrics(self, stage: str, point: Tensor, batch: dict[str, Tensor]) -> None:
        actual, past = batch["target_price"], batch["past_price"]
        m = self.hparams.season_length
        scale = (past[:, m:] - past[:, :-m]).abs().mean(dim=1).clamp_min(1e-8)  # in-sample seasonal-naive error
        naive = past[:, -1:].expand_as(actual)
        steps = torch.arange(actual.shape[1], device=actual.device)
        snaive = past[:, past.shape[1] - m + steps % m]
        metrics = self.metrics[stage]
        for name in ("mae", "mape", "smape"):
            metrics[name].update(point, actual)
        for name, forecast in (("mase", point), ("naive_mase", naive), ("snaive_mase", snaive)):
            metrics[name].update((forecast - actual).abs().mean(dim=1) / scale)
        self.log_dict(metrics, batch_size=actual.shape[0], sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        prices = self.to_prices(self(batch["past"]), batch["last_price"]).float().cpu()
        rows = []
        for i, (series, dates) in enumerate(zip(batch["series"], batch["dates"], strict=True)):
            self._history[series] = (batch["past_dates"][i], batch["past_price"][i].tolist())
            for step, date in enumerate(dates):
                row = {"series": series, "date": date, "step": step + 1}
                row[self._column(0.5)] = round(float(prices[i, step, self.quantiles.index(0.5)]), 6)
                for j, q in enumerate(self.quantiles):
                    if q != 0.5:
                        row[self._column(q)] = round(float(prices[i, step, j]), 6)
                rows.append(row)
        return rows

    def save_prediction_extras(self, rows: list[dict[str, Any]], output_dir: Path, name: str) -> None:
        """A plot per series: recent history, the forecast and its interval."""
        import pandas as pd

        frame = pd.DataFrame(rows)
        panels = []
        for series, group in frame.groupby("series", sort=False):
            past_dates, past_prices = self._history[series]
            panels.append((series, pd.to_datetime(past_dates), past_prices, pd.to_datetime(group["date"]), group))
        _plot(panels, *self._plot_columns()).savefig(output_dir / f"{name}.png", dpi=100, bbox_inches="tight")

    def example_predictions(self, batch: dict[str, Tensor], prices: Tensor) -> Examples:
        """Windows of a batch: their history, forecast, interval and what really happened."""
        n, lookback = min(self.hparams.examples_to_log, prices.shape[0]), batch["past_price"].shape[1]
        prices = prices.float().cpu()
        panels, rows = [], []
        for i in range(n):
            actual = batch["target_price"][i].cpu()
            frame = {self._column(q): prices[i, :, j] for j, q in enumerate(self.quantiles)}
            future = range(lookback, lookback + len(actual))
            panels.append((f"window {i}", range(lookback), batch["past_price"][i].cpu(), future, frame, actual))
            rows += [
                {"window": i, "step": s + 1, "actual": round(float(actual[s]), 4)}
                | {k: round(float(v[s]), 4) for k, v in frame.items()}
                for s in range(len(actual))
            ]
        return Examples(rows, figure=_plot(panels, *self._plot_columns()))

    def _plot_columns(self) -> tuple[str, str, str]:
        """The forecast's column, and those of the widest interval (the median's own when there is none)."""
        return self._column(0.5), self._column(self.quantiles[0]), self._column(self.quantiles[-1])

    @property
    def prediction_keys(self) -> tuple[str, ...]:  # `make predict` warns when this column is constant
        return (self._column(0.5),)

    def _column(self, q: float) -> str:
        """The forecast's columns are named after the user's target (``Close``, ``Close_q10``, ...)."""
        target = self.spec.target if self.spec is not None else "price"
        if target in ("series", "date", "step", "window", "actual"):  # the rows' own keys
            target = "forecast"
        return target if q == 0.5 else f"{target}_q{round(q * 100):02d}"


def _plot(panels: list[tuple], median: str, low: str, high: str):
    """Past prices, forecast (column ``median``) and interval (``low`` to ``high``) per panel; ``actual`` (6th
    item) is drawn when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), squeeze=False)
    for ax, (title, past_x, past_y, future_x, forecast, *actual) in zip(axes[:, 0], panels, strict=True):
        ax.plot(list(past_x), list(past_y), color="black", lw=1, label="history")
        ax.plot(list(future_x), list(forecast[median]), color="tab:blue", lw=1.5, label="forecast")
        if low != high:
            ax.fill_between(list(future_x), list(forecast[low]), list(forecast[high]), alpha=0.25, label="interval")
        if actual:
            ax.plot(list(future_x), list(actual[0]), color="tab:orange", lw=1, label="actual")
        ax.set_title(str(title), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    plt.close(figure)
    return figure
