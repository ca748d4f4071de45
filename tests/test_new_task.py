"""Adding a task is its files plus one registry entry (CONTRIBUTING.md): a toy fourth task, written into a baked
project by this test, trains end to end through `make train TASK=regression`, tracked in MLflow, and predicts.

Nothing of the project is edited but the registry; the files below are the whole task.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import forecasting_project, mlflow_runs, run_make

DATAMODULE = '''
"""Rows of numbers in a CSV: feature columns and a target column, standardized with training statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from .common import DataError, SpecDataModule, existing_path


@dataclass(frozen=True)
class TableSpec:
    """What a regressor needs of its data: the inputs, their training statistics, the target's training mean."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    target_mean: float

    def __post_init__(self) -> None:
        for name in ("features", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


class TableDataModule(SpecDataModule):
    def __init__(self, path: str = "data/sample/regression/rows.csv", target: str = "y", batch_size: int = 32,
                 predict_path: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec: TableSpec | None = None
        self.splits: dict[str, TensorDataset] = {}

    def _read(self, path: str, with_target: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        frame = pd.read_csv(existing_path(path, "table", "Run `make sample-data TASK=regression`."))
        features = [c for c in frame.columns if c != self.hparams.target] if self.spec is None else self.spec.features
        if with_target and self.hparams.target not in frame.columns:
            raise DataError(f"{Path(path).name}: no column {self.hparams.target!r}; it has {list(frame.columns)}")
        x = torch.tensor(frame[list(features)].to_numpy(np.float32))
        y = torch.tensor(frame[self.hparams.target].to_numpy(np.float32)) if with_target else torch.zeros(len(x))
        return x, y

    def read_predict(self) -> None:
        x, _ = self._read(self.hparams.predict_path, with_target=False)
        self.splits["predict"] = TensorDataset(self._scale(x), torch.zeros(len(x)))

    def read_splits(self) -> None:
        x, y = self._read(self.hparams.path)
        parts = {"train": slice(0, int(0.7 * len(x))), "val": slice(int(0.7 * len(x)), int(0.85 * len(x))),
                 "test": slice(int(0.85 * len(x)), len(x))}
        if self.spec is None:
            train = x[parts["train"]]
            columns = [c for c in pd.read_csv(self.hparams.path, nrows=0).columns if c != self.hparams.target]
            self.spec = TableSpec(tuple(columns), tuple(train.mean(0).tolist()), tuple(train.std(0).tolist()),
                                  float(y[parts["train"]].mean()))
        self.splits = {name: TensorDataset(self._scale(x[part]), y[part]) for name, part in parts.items()}

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        return (x - torch.tensor(self.spec.mean)) / torch.tensor(self.spec.std)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.hparams.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


def write_sample(out_dir: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 3))
    y = 3 * x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 0] * x[:, 2] + rng.normal(scale=0.1, size=600) + 10
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "rows.csv"
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y}).to_csv(path, index=False)
    return path
'''

TASK = '''
"""A toy regression task: a small MLP from standardized columns to a number."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MetricCollection

from ..datamodules.table import TableSpec
from ..examples import Examples
from .base import TaskModule


class TableRegressor(TaskModule):
    spec_type = TableSpec

    def __init__(self, hidden: int = 32, lr: float = 1e-2, spec: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["spec"])
        metrics = MetricCollection({"mae": MeanAbsoluteError(), "mean_mae": MeanMetric()})
        self.metrics = nn.ModuleDict({stage: metrics.clone(prefix=f"{stage}/") for stage in ("val", "test")})
        self.restore(spec)

    def build(self, spec: TableSpec) -> None:
        self.net = nn.Sequential(nn.Linear(len(spec.features), self.hparams.hidden), nn.ReLU(),
                                 nn.Linear(self.hparams.hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1) + self.spec.target_mean

    def shared_step(self, batch: list[torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = batch
        pred = self(x)
        loss = nn.functional.mse_loss(pred, y)
        if stage == "train":
            return loss, None
        self.log(f"{stage}/loss", loss, batch_size=len(y))
        self.metrics[stage]["mae"].update(pred, y)
        self.metrics[stage]["mean_mae"].update((y - self.spec.target_mean).abs())
        self.log_dict(self.metrics[stage], batch_size=len(y))
        return loss, pred

    def predict_step(self, batch: list[torch.Tensor], batch_idx: int) -> list[dict[str, float]]:
        return [{"prediction": round(float(p), 4)} for p in self(batch[0])]

    def example_predictions(self, batch: list[torch.Tensor], pred: torch.Tensor) -> Examples:
        return Examples([{"target": float(y), "prediction": float(p)} for y, p in zip(batch[1][:5], pred[:5])])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
'''

CONFIG = """
seed_everything: 0
model:
  class_path: demo_project.tasks.regression.TableRegressor
data:
  class_path: demo_project.datamodules.table.TableDataModule
trainer:
  max_epochs: 15
  accelerator: cpu
  log_every_n_steps: 5
"""

ENTRY = """\
        Task(
            "regression",
            model="tasks.regression.TableRegressor",
            data="datamodules.table.TableDataModule",
            sample="datamodules.table.write_sample",
            metric="mae",
            baseline="mean_mae",
        ),
"""


def digest(project: Path) -> dict[str, str]:
    """Every file of the project (outside what commands write) and a hash of its content."""
    skip = {"runs", "data", "predictions", "mlartifacts", "__pycache__"}
    return {
        str(p.relative_to(project)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in project.rglob("*")
        if p.is_file() and not skip & set(p.relative_to(project).parts) and not p.name.startswith("mlflow.db")
    }


@pytest.fixture(scope="module")
def toy_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = forecasting_project(tmp_path_factory.mktemp("toy"))
    before = digest(project)
    package = project / "src" / "demo_project"
    (package / "datamodules" / "table.py").write_text(textwrap.dedent(DATAMODULE).lstrip())
    (package / "tasks" / "regression.py").write_text(textwrap.dedent(TASK).lstrip())
    (project / "configs" / "regression.yaml").write_text(CONFIG.lstrip())
    registry = package / "tasks" / "__init__.py"
    text = registry.read_text()
    end = text.index("    ]\n}")  # the end of the list of entries
    registry.write_text(text[:end] + ENTRY + text[end:])
    after = digest(project)
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert changed == ["src/demo_project/tasks/__init__.py"], changed
    assert sorted(set(after) - set(before)) == [
        "configs/regression.yaml",
        "src/demo_project/datamodules/table.py",
        "src/demo_project/tasks/regression.py",
    ]
    return project


@pytest.mark.slow
def test_a_new_task_trains_with_make_train_and_is_tracked(toy_project: Path, tmp_path: Path) -> None:
    assert run_make(toy_project, "-s", "print-tasks").stdout.split() == ["forecasting", "regression"]
    run_make(toy_project, "train", "TASK=regression", "ARGS=--trainer.enable_progress_bar false")
    (run,) = mlflow_runs(toy_project, "regression")
    metrics = run.data.metrics
    assert run.info.status == "FINISHED"
    assert {"train/loss", "train/loss_epoch", "val/mae", "test/mae", "test/mean_mae"} <= set(metrics)
    assert metrics["test/mae"] < 0.5 * metrics["test/mean_mae"], metrics  # it learned
    assert run.data.params["hidden"] == "32"
    listed = run_make(toy_project, "runs").stdout
    assert "regression (mae: lower is better)" in listed and f"{run.info.run_id}  FINISHED" in listed
    assert "test/mean_mae=" in listed

    rows = pd.read_csv(toy_project / "data" / "sample" / "regression" / "rows.csv").drop(columns="y").head(7)
    rows.to_csv(tmp_path / "new.csv", index=False)
    run_make(toy_project, "predict", "TASK=regression", f"INPUT={tmp_path / 'new.csv'}")
    predicted = pd.read_csv(toy_project / "predictions" / "regression.csv")
    assert list(predicted.columns) == ["prediction"] and len(predicted) == 7
