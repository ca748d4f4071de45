"""The only owner of a training's MLflow run: it starts or continues the run, tags it, uploads the config, files,
the best checkpoint and the model, and records how the command ended, on every exit path.

The CLI makes one ``TrackedRun`` per command and calls ``start`` (global rank 0 only, once the data and the model
are set up) and ``end``; as a Lightning callback it also sees checkpoints being saved and training stopping.
``MLflowLogger`` sends metrics to the run; nothing else touches it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .store import artifact_location

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


@dataclass
class RunSettings:
    """What a user can say about a training's MLflow run (the ``tracking:`` section of a config).

    Args:
        run_name: a readable name; by default the task, its main hyper-parameters and epochs (``describe.py``).
        tags: extra run tags.
        log_checkpoints: upload the best checkpoint when the command ends.
        log_model: log the trained model with ``mlflow.pytorch`` (``runs:/<run id>/model``).
        system_metrics: log CPU, memory and GPU use with MLflow's system metrics monitor.
        flush_interval_s: how often queued metrics are sent.
    """

    run_name: str | None = None
    tags: dict[str, str] | None = None
    log_checkpoints: bool = True
    log_model: bool = True
    system_metrics: bool = True
    flush_interval_s: float = 2.0


class TrackedRun(Callback):
    """One MLflow run for one command (``fit`` then its test, or ``test``/``validate`` alone), whatever the ranks."""

    def __init__(self, settings: RunSettings, uri: str, experiment: str, root_dir: str | Path) -> None:
        self.settings, self.uri, self.experiment, self.root_dir = settings, uri, experiment, Path(root_dir)
        self.id: str | None = None
        self.client: MlflowClient | None = None
        self._monitor: Any = None
        self._checkpoints: Any = None  # the trainer's ModelCheckpoint, for the best checkpoint at the end
        self._stopped_by_user = False
        self._ended = False

    @property
    def folder(self) -> Path:
        """This run's local folder: ``<root>/<task>/<run id>`` (checkpoints, unsent metrics)."""
        return self.root_dir / self.experiment / str(self.id)

    def start(self, command: str, continue_run: str | None = None) -> None:
        """Create the run, or continue ``continue_run`` (a resumed training), and mark it RUNNING."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
        from mlflow.tracking.context.registry import resolve_tags

        client = MlflowClient(self.uri)
        if continue_run is not None:
            client.update_run(continue_run, status="RUNNING")
            self.id = continue_run
        else:
            experiment = client.get_experiment_by_name(self.experiment)
            if experiment is None:
                try:
                    experiment_id = client.create_experiment(
                        self.experiment, artifact_location=artifact_location(self.uri, self.experiment)
                    )
                except MlflowException:  # another process created it first
                    experiment_id = client.get_experiment_by_name(self.experiment).experiment_id
            else:
                experiment_id = experiment.experiment_id
                if experiment.lifecycle_stage == "deleted":
                    client.restore_experiment(experiment_id)
            tags = {"task": self.experiment, "command": command, **(self.settings.tags or {})}
            # A name of our own: MLflow draws its names from `random`, which seed_everything made repeat.
            name = self.settings.run_name or f"{self.experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            self.id = client.create_run(experiment_id, tags=resolve_tags(tags), run_name=name).info.run_id
        self.client = client
        if self.settings.system_metrics:
            self._start_system_metrics()

    def _start_system_metrics(self) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(self.id, sampling_interval=10, tracking_uri=self.uri)
            self._monitor.start()
        except Exception as error:  # missing psutil/pynvml must not stop a training
            log.warning("system metrics are off: %s", error)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.client is not None:
            self.client.log_text(self.id, text, artifact_file)

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        if self.client is not None:
            self.client.log_artifacts(self.id, str(local_dir), artifact_path)

    # ---- what the run sees of the training, as a callback -----------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._checkpoints = trainer.checkpoint_callback

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.id is not None:
            checkpoint["mlflow"] = {"run_id": self.id}  # resuming from this checkpoint continues this run

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt | SIGTERMException):
            self._stopped_by_user = True  # KILLED, not FAILED: `make resume` continues it

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.client is not None and self.settings.log_model and not trainer.interrupted:
            self._log_model(pl_module)

    def _log_model(self, module: LightningModule) -> None:
        """Log ``module`` as an MLflow PyTorch model, with an input example where the task gives one."""
        import lightning
        import mlflow.pytorch

        example = getattr(module, "example_input", lambda: None)()
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        try:
            with mlflow.start_run(run_id=self.id, nested=mlflow.active_run() is not None):
                mlflow.pytorch.log_model(
                    module,
                    name="model",
                    serialization_format="pickle",  # loads back as the LightningModule, hyper-parameters included
                    input_example=None if example is None else example.cpu().numpy(),
                    pip_requirements=[
                        f"torch=={torch.__version__.split('+')[0]}",
                        f"lightning=={lightning.__version__}",
                    ],
                )
        except Exception as error:  # a model that cannot be pickled must not fail a finished training
            log.warning("could not log the model to MLflow: %s", error)
        finally:
            mlflow.set_tracking_uri(previous)

    def end(self, status: str) -> None:
        """Upload the best checkpoint and mark the run FINISHED, FAILED or KILLED; once, on every exit path."""
        if self.client is None or self._ended:
            return
        self._ended = True
        path = getattr(self._checkpoints, "best_model_path", "") or getattr(self._checkpoints, "last_model_path", "")
        if self.settings.log_checkpoints and path and Path(path).exists():
            self.client.log_artifact(self.id, path, "checkpoints")
            self.client.set_tag(self.id, "best_checkpoint", str(Path(path).resolve()))
        if self._monitor is not None:
            self._monitor.finish()
        self.client.set_terminated(self.id, "KILLED" if self._stopped_by_user else status)


class LogConfig(SaveConfigCallback):
    """Hands the resolved config to the run as ``config.yaml`` (Lightning's version needs a local log folder)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for callback in trainer.callbacks:
            if isinstance(callback, TrackedRun):
                callback.log_text(self.parser.dump(self.config, skip_none=False), "config.yaml")
