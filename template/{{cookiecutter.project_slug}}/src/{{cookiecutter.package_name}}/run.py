"""The only owner of a training's MLflow run: it starts or continues the run, tags it, uploads the config, files,
the best checkpoint and (if asked) the model, and records how the command ended.

Its life is ``with run.started(command, checkpoint):`` around the trainer's command: entering starts (or continues)
the run on global rank 0; leaving maps the way out to FINISHED, FAILED or KILLED (Ctrl-C, SIGTERM). Store calls
after the start go through the run's journal and off the training thread (``outbox.py``), and the end waits for
them at most ``end_timeout_s``: a full disk or a server that stops answering never stops a training or hangs it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .background import MetricSender
from .checkpoints import run_id
from .liveness import mark_dead_runs, process_tags, tracking_user
from .outbox import Outbox
from .store import StoreDenied, ensure_experiment, redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .tasks.base import TaskModule

log = logging.getLogger(__name__)
TRAINING_TIME = "training_time_s"  # seconds the run's commands ran, summed over resumes (`make runs` shows it)
EPOCHS = re.compile(r" epochs=\d+$")


class RunMissing(LookupError):
    """The run a checkpoint belongs to is not in the tracking store."""


@dataclass
class RunSettings:
    """What a user can say about a training's MLflow run (the ``tracking:`` section of a config).

    Args:
        run_name: a readable name; by default the task, its main hyper-parameters and epochs (``describe.py``).
        tags: extra run tags.
        log_checkpoints: upload the best checkpoint when the command ends.
        log_model: also log the trained model with ``mlflow.pytorch`` (a pickle, for MLflow serving; this
            project predicts from checkpoints, loaded without unpickling code).
        system_metrics: log CPU, memory and GPU use with MLflow's system metrics monitor.
        flush_interval_s: how often queued metrics are sent.
        end_timeout_s: how long the end of a command waits for the store before giving up (unsent metrics are
            then saved to a CSV file whose path is printed, and everything unsent is in the run's journal for
            ``make replay``); below the 30 s a scheduler waits between SIGTERM and SIGKILL.
        if_run_missing: resuming a checkpoint whose run the store no longer has: ``error`` (stop and say so) or
            ``new`` (continue the training in a new run, with a warning).
    """

    run_name: str | None = None
    tags: dict[str, str] | None = None
    log_checkpoints: bool = True
    log_model: bool = False
    system_metrics: bool = True
    flush_interval_s: float = 2.0
    end_timeout_s: float = 20.0
    if_run_missing: Literal["error", "new"] = "error"


class TrackedRun(Callback):
    """One MLflow run for one command (``fit`` then its test, or ``test``/``validate`` alone), whatever the ranks.

    ``config`` is the command's resolved config, uploaded as ``config.yaml``.
    """

    def __init__(self, settings: RunSettings, uri: str, experiment: str, root_dir: str | Path, config: str) -> None:
        self.settings, self.uri, self.experiment, self.root_dir = settings, uri, experiment, Path(root_dir)
        self.config = config
        self.id: str | None = None  # set on global rank 0 while the run is started
        self.client: MlflowClient | None = None
        self.outbox: Outbox | None = None  # what goes to the store after the start, through the run's journal
        self.stopped_by: BaseException | None = None  # a Ctrl-C or SIGTERM the trainer saw (it exits 1 after Ctrl-C)
        self._monitor: Any = None
        self._checkpoints: Any = None  # the trainer's ModelCheckpoint, for the best checkpoint at the end
        self._trained_s, self._began = 0.0, 0.0  # the run's training time before this command; this one's start

    @property
    def sender(self) -> MetricSender | None:
        return self.outbox.sender if self.outbox else None

    @property
    def folder(self) -> Path:
        """This run's local folder: ``<root>/<task>/<run id>`` (checkpoints, unsent metrics)."""
        return self.root_dir / self.experiment / str(self.id)

    @contextmanager
    def started(self, command: str, checkpoint: str | None = None) -> Iterator[TrackedRun]:
        """The run, started for ``command`` (a checkpoint of one of this store's runs continues that run) on global
        rank 0, and ended with the way the block is left; on the other ranks the block just runs."""
        if rank_zero_only.rank != 0:
            yield self
            return
        continued = run_id(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
        self._start_or_refuse(command, continued)
        try:
            yield self
        except BaseException as error:
            stopped = isinstance(error, KeyboardInterrupt | SIGTERMException) or self.stopped_by is not None
            self._end("KILLED" if stopped else "FAILED")
            raise
        self._end("FINISHED")

    def _start_or_refuse(self, command: str, continue_run: str | None) -> None:
        """``_start``; a server that denies it (the auth app's permissions) is one line naming the grant to ask for."""
        from mlflow.exceptions import MlflowException

        try:
            self._start(command, continue_run)
        except MlflowException as error:
            code = getattr(error, "error_code", "")
            if code not in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
                raise
            user, where = tracking_user(), redact(self.uri)
            if code == "UNAUTHENTICATED":
                raise StoreDenied(
                    f"MLflow tracking server {where} does not accept the password of {user!r}: set "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account the server's admin made"
                ) from None
            raise StoreDenied(
                f"MLflow tracking server {where} does not let {user!r} "
                f"{'continue' if continue_run else 'create'} runs in experiment {self.experiment!r} (permission "
                f"denied): ask the server's admin to grant {user!r} EDIT on experiment {self.experiment!r} "
                "(README: Teams)"
            ) from None

    def _start(self, command: str, continue_run: str | None) -> None:
        """Create the run, or continue ``continue_run`` (a resumed training); mark runs whose process died."""
        from mlflow import MlflowClient
        from mlflow.tracking.context.registry import resolve_tags

        client = MlflowClient(self.uri)
        experiment_id = ensure_experiment(client, self.uri, self.experiment)
        mark_dead_runs(client, experiment_id, keep=continue_run)
        logged_through: dict[str, int] = {}
        run = self._continued(client, continue_run) if continue_run is not None else None
        if run is not None:
            # a resume to more epochs renames `... epochs=2` to `... epochs=4`; a name of the user's own stays
            same = re.sub(EPOCHS, "", run.info.run_name or "") == re.sub(EPOCHS, "", self.settings.run_name or "")
            client.update_run(continue_run, status="RUNNING", name=self.settings.run_name if same else None)
            self._trained_s = float(run.data.tags.get(TRAINING_TIME, 0) or 0)
            for key, value in process_tags().items():
                client.set_tag(continue_run, key, value)
            self.id = continue_run
            for key in run.data.metrics:  # a resumed training repeats the steps after its checkpoint
                logged_through[key] = max(m.step for m in client.get_metric_history(continue_run, key))
        else:
            tags = {"task": self.experiment, "command": command, **process_tags(), **(self.settings.tags or {})}
            # A name of our own: MLflow draws its names from `random`, which seed_everything made repeat.
            name = self.settings.run_name or f"{self.experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            self.id = client.create_run(experiment_id, tags=resolve_tags(tags), run_name=name).info.run_id
        self.client, self._began = client, time.monotonic()
        interval = self.settings.flush_interval_s
        self.outbox = Outbox(client, self.id, self.experiment, self.uri, self.folder, interval, logged_through)
        if self.settings.system_metrics:
            self._start_system_metrics(resume=continue_run is not None)
        self.log_text(self.config, "config.yaml")
        where = redact(self.uri)
        if self.uri.startswith(("http://", "https://")):  # the run's page in the UI
            where = f"{where.rstrip('/')}/#/experiments/{experiment_id}/runs/{self.id}?workflowType=machine_learning"
        print(f"MLflow run {self.id} ({'continued' if self.id == continue_run else 'new'}) in {where}")

    def _continued(self, client: MlflowClient, run_id: str) -> Any:
        """The run to continue, or None to start a new one (``if_run_missing: new``)."""
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
            if run.info.lifecycle_stage == "deleted":  # deleted in the UI: as good as missing
                raise MlflowException(f"run {run_id} is deleted")
            return run
        except MlflowException:
            if self.settings.if_run_missing == "new":
                log.warning(
                    "run %s of the checkpoint is not in %s: training goes on in a new run", run_id, redact(self.uri)
                )
                return None
            raise RunMissing(
                f"the checkpoint belongs to MLflow run {run_id}, which {redact(self.uri)} does not have (deleted in "
                "the UI, a deleted mlflow.db, or another MLFLOW_TRACKING_URI?). Point MLFLOW_TRACKING_URI at the "
                'store that has it, or continue the training in a new run: ARGS="--tracking.if_run_missing new"'
            ) from None

    def _start_system_metrics(self, resume: bool) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.id, sampling_interval=10, tracking_uri=self.uri, resume_logging=resume
            )
            self._monitor.start()
        except Exception as error:  # missing psutil/pynvml must not stop a training
            log.warning("system metrics are off: %s", error)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Upload ``text`` as ``artifact_file`` (global rank 0, while the run is started), through the journal."""
        self.outbox.log_text(text, artifact_file)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None) -> None:
        """Upload ``local_dir`` (this run takes it over) as ``artifact_path``, through the journal."""
        self.outbox.log_artifacts(local_dir, artifact_path)

    # ---- what the run sees of the training, as a callback -----------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._checkpoints = trainer.checkpoint_callback

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.id is not None:
            checkpoint["mlflow"] = {"run_id": self.id}  # resuming from this checkpoint continues this run
        if self.sender is not None:
            self.sender.wake.set()  # send the metrics up to this checkpoint now: resuming starts from it

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt | SIGTERMException):
            self.stopped_by = exception  # KILLED, not FAILED: `make resume` continues it

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.settings.log_model and not trainer.interrupted:
            self._log_model(pl_module)

    def _log_model(self, module: TaskModule) -> None:
        """Save ``module`` as an MLflow PyTorch model here, and upload it in the background."""
        import lightning
        import mlflow.pytorch

        folder = Path(tempfile.mkdtemp(prefix="mlflow-model-")) / "model"
        example = module.example_input()
        try:
            mlflow.pytorch.save_model(
                module,
                folder,
                serialization_format="pickle",  # loads back as the LightningModule, hyper-parameters included
                input_example=None if example is None else example.cpu().numpy(),
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"lightning=={lightning.__version__}"],
            )
        except Exception as error:  # a model that cannot be pickled must not fail a finished training
            log.warning("could not save the model for MLflow: %s", error)
            return
        self.log_artifacts(folder.parent, None)

    def _end(self, status: str) -> None:
        """Upload the best checkpoint and mark the run ``status``, within ``end_timeout_s`` whatever the store does."""
        deadline = time.monotonic() + self.settings.end_timeout_s
        keeper, outbox = self._checkpoints, self.outbox
        path = (keeper.best_model_path or keeper.last_model_path) if keeper is not None else ""
        outbox.journal.status(status)  # first: a SIGKILL during the uploads below still leaves it for `make replay`
        if self.settings.log_checkpoints and path and Path(path).exists():
            outbox.log_artifact(path, "checkpoints", f"checkpoint {path}")
            outbox.set_tag("best_checkpoint", _shown(Path(path)))
        if self._monitor is not None:
            outbox.uploads.add("system metrics", self._monitor.finish)
        spent = f"{self._trained_s + time.monotonic() - self._began:.0f}"  # not the idle time before a resume
        outbox.set_tag(TRAINING_TIME, spent)
        outbox.end(status, self.settings.end_timeout_s, deadline)


def _shown(path: Path) -> str:
    """``path`` relative to the project when it is inside it: what a teammate's checkout also has."""
    from .store import project_root

    resolved = path.resolve()
    return str(resolved.relative_to(project_root())) if resolved.is_relative_to(project_root()) else str(resolved)
