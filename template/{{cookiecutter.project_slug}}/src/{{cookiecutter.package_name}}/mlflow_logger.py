"""A Lightning logger that hands metrics and hyper-parameters to the MLflow run a ``TrackedRun`` owns.

It owns nothing of the run: ``run.py`` starts and ends it, uploads files and sends what this logger queues,
in batches, from a background thread (``background.py``), so that logging every step costs the training loop
almost nothing and a slow store never stalls it.
"""

from __future__ import annotations

import time
from argparse import Namespace
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .run import TrackedRun


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested hyper-parameters as MLflow params: ``{"a": {"b": 1}}`` -> ``{"a/b": "1"}``; private keys left out."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        if str(key).startswith("_"):  # LightningCLI's _class_path, _instantiator
            continue
        if isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = str(value)[:1000]
    return flat


class MLflowLogger(Logger):
    """Sends a training's metrics and hyper-parameters to the run that ``run`` (a ``TrackedRun``) owns.

    Checkpoints go to ``<runs>/<task>/<run id>/checkpoints``: ``save_dir`` is the runs folder, ``name`` the task,
    ``version`` the run (the trainer's ``default_root_dir`` may differ, e.g. per SLURM job).
    """

    def __init__(self, run: TrackedRun) -> None:
        super().__init__()
        self.run = run

    @property
    def name(self) -> str:
        return self.run.experiment

    @property
    def version(self) -> str | None:
        return self.run.id

    @property
    def save_dir(self) -> str:
        return str(self.run.root_dir)

    @property
    def experiment(self) -> MlflowClient | None:
        return self.run.client

    # Global rank 0 only, where the run is started before the trainer's command runs.
    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.run.sender.put_params(flatten(vars(params) if isinstance(params, Namespace) else params))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        rows = [(k, float(v), timestamp, step or 0) for k, v in metrics.items() if not isinstance(v, str)]
        self.run.sender.put(rows)
