"""MLflow glue that Lightning lacks.

* One run per training: only global rank 0 opens the tracking store (ranks that start together on a fresh
  SQLite file race to create its tables), and a resumed training continues its run (id kept in checkpoints).
* Metrics are queued and sent in batches by a background thread, so logging every step costs the training
  loop almost nothing; a store that goes away loses nothing (unsent metrics are retried, then saved to CSV).
* The best checkpoint and the trained model are logged when training ends (``callbacks.py`` logs the config and
  ``artifacts.py`` the sample predictions).
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from . import DEFAULT_TRACKING_URI

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
SQLITE = "sqlite:///"


def project_root() -> Path:
    """The project folder (where pyproject.toml is); the working directory for a non-editable install."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri``, else $MLFLOW_TRACKING_URI, else the project's default store.

    Relative SQLite paths are made absolute against the project, so every command finds the same store.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        uri = SQLITE + str((project_root() / uri[len(SQLITE) :]).resolve())
    return uri


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached; raised before any compute is spent."""


def prepare_store(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an unreachable server; create a SQLite store's tables once, under a file lock."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
        except requests.RequestException as error:
            raise TrackingUnavailable(
                f"MLflow tracking server {uri} is unreachable ({type(error).__name__}). Start it with "
                "`make mlflow-server`, or unset MLFLOW_TRACKING_URI to log to the project's SQLite store."
            ) from None
    elif uri.startswith(SQLITE):
        from mlflow import MlflowClient

        db = Path(uri[len(SQLITE) :])
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{db}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent first uses would race on CREATE TABLE
            MlflowClient(uri).search_experiments(max_results=1)


class _MetricSender:
    """Sends queued metrics in batches from a daemon thread, so the training loop never waits on the store."""

    BATCH = 1000  # MLflow's limit of metrics per log_batch call

    def __init__(self, client: MlflowClient, run_id: str, interval_s: float) -> None:
        self.client, self.run_id, self.interval_s = client, run_id, interval_s
        self.pending: list[tuple[str, float, int, int]] = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closed = False
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._loop, name="mlflow-metrics", daemon=True)
        self.thread.start()

    def put(self, rows: list[tuple[str, float, int, int]]) -> None:
        with self.lock:
            self.pending.extend(rows)

    def _loop(self) -> None:
        while not self.closed:
            self.wake.wait(self.interval_s)
            self.wake.clear()
            self._send()

    def _send(self) -> None:
        from mlflow.entities import Metric

        with self.lock:
            batch, self.pending = self.pending, []
        for start in range(0, len(batch), self.BATCH):
            chunk = batch[start : start + self.BATCH]
            try:
                self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in chunk])
                self.error = None
            except Exception as error:  # keep what was not sent; retry on the next wake-up
                self.error = error
                with self.lock:
                    self.pending[:0] = batch[start:]
                return

    def close(self, fallback_csv: Path) -> None:
        """Send everything; what cannot be sent is written to ``fallback_csv`` rather than lost."""
        self.closed = True
        self.wake.set()
        self.thread.join()
        for _ in range(3):
            self._send()
            if not self.pending:
                return
            time.sleep(1.0)
        fallback_csv.parent.mkdir(parents=True, exist_ok=True)
        with open(fallback_csv, "a", newline="") as f:
            csv.writer(f).writerows(self.pending)
        log.error(
            "could not send %d metrics to MLflow (%s); they are saved in %s",
            len(self.pending),
            self.error,
            fallback_csv,
        )


class MLflowTracker(Logger):
    """A Lightning logger for MLflow that keeps one run per training and never slows the training loop.

    Args:
        experiment_name: defaults to the task's name (set by the CLI).
        run_name: a readable name for the run; MLflow makes one up when empty.
        tracking_uri: defaults to $MLFLOW_TRACKING_URI, else the project's SQLite store.
        tags: extra run tags.
        run_id: continue this run instead of starting one (the CLI sets it when resuming).
        log_checkpoints: upload the best checkpoint as an artifact when training ends.
        log_model: log the trained model with ``mlflow.pytorch`` (loadable as ``runs:/<run id>/model``).
        system_metrics: log CPU/memory/GPU use with MLflow's system metrics monitor.
        flush_interval_s: how often queued metrics are sent.
    """

    def __init__(
        self,
        experiment_name: str | None = None,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
        log_checkpoints: bool = True,
        log_model: bool = True,
        system_metrics: bool = True,
        flush_interval_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.uri = tracking_uri
        self.tags = dict(tags or {})
        self._run_id = run_id
        self.log_checkpoints = log_checkpoints
        self.log_model = log_model
        self.stopped_by_user = False
        self.system_metrics = system_metrics
        self.flush_interval_s = flush_interval_s
        self._client: MlflowClient | None = None
        self._sender: _MetricSender | None = None
        self._monitor: Any = None
        self._checkpoint_callback: Any = None
        self._uploaded: dict[str, float] = {}
        self.default_root_dir = Path("runs")

    @property
    def tracking_uri(self) -> str:
        return tracking_uri(self.uri)

    @property
    def name(self) -> str:
        return self.experiment_name or "default"

    @property
    def version(self) -> str | None:
        return self.run_id

    @property
    def save_dir(self) -> None:
        return None  # checkpoints go to <default_root_dir>/<experiment>/<run id>/checkpoints

    @property
    def run_id(self) -> str | None:
        _ = self.experiment
        return self._run_id

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowClient:
        if self._client is None:
            self._start()
        return self._client

    def _start(self) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
        from mlflow.tracking.context.registry import resolve_tags

        uri = self.tracking_uri
        prepare_store(uri)
        client = MlflowClient(uri)
        if self._run_id is not None:
            client.update_run(self._run_id, status="RUNNING")
        else:
            experiment = client.get_experiment_by_name(self.name)
            if experiment is None:
                location = None
                if uri.startswith(SQLITE):  # artifacts beside the database, wherever it is
                    location = (Path(uri[len(SQLITE) :]).parent / "mlartifacts" / self.name).as_uri()
                try:
                    experiment_id = client.create_experiment(self.name, artifact_location=location)
                except MlflowException:  # another process created it first
                    experiment_id = client.get_experiment_by_name(self.name).experiment_id
            else:
                experiment_id = experiment.experiment_id
                if experiment.lifecycle_stage == "deleted":
                    client.restore_experiment(experiment_id)
            # A name of our own: MLflow draws its names from `random`, which seed_everything made repeat.
            name = self.run_name or f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            run = client.create_run(experiment_id, tags=resolve_tags(self.tags), run_name=name)
            self._run_id = run.info.run_id
        self._client = client
        if self.system_metrics:
            self._start_system_metrics(uri)

    def _start_system_metrics(self, uri: str) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(self._run_id, sampling_interval=10, tracking_uri=uri)
            self._monitor.start()
        except Exception as error:  # missing psutil/pynvml must not stop a training
            log.warning("system metrics are off: %s", error)
            self._monitor = None

    def _queue(self) -> _MetricSender:
        if self._sender is None or self._sender.closed:
            self._sender = _MetricSender(self.experiment, self.run_id, self.flush_interval_s)
        return self._sender

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict, _sanitize_params
        from mlflow.entities import Param

        flat = _flatten_dict(_sanitize_params(_convert_params(params)))
        flat = {k: str(v)[:1000] for k, v in flat.items() if not k.startswith("_")}  # not Lightning's internals
        existing = self.experiment.get_run(self.run_id).data.params  # a resumed run has them already
        changed = sorted(k for k, v in flat.items() if k in existing and existing[k] != v)
        if changed:
            log.warning("not logging changed hyper-parameters of a continued run: %s", ", ".join(changed))
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for start in range(0, len(new), 100):
            self.experiment.log_batch(self.run_id, params=new[start : start + 100])

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        self._queue().put([(k, float(v), timestamp, step or 0) for k, v in metrics.items() if not isinstance(v, str)])

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._checkpoint_callback = checkpoint_callback
        if self._sender is not None:
            self._sender.wake.set()  # send the metrics up to this checkpoint now: resuming starts from it

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._client is None:
            return
        if self._sender is not None:
            self._sender.close(self.default_root_dir / self.name / self._run_id / "unsent_metrics.csv")
        if self.log_checkpoints:
            self._upload_best_checkpoint()
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        mlflow_status = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")
        if self.stopped_by_user:
            mlflow_status = "KILLED"
        self._client.set_terminated(self._run_id, mlflow_status)

    def log_pytorch_model(self, module: LightningModule) -> None:
        """Log ``module`` as an MLflow PyTorch model, with an input example where the task gives one."""
        import mlflow.pytorch

        example = getattr(module, "example_input", lambda: None)()
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
                import lightning

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

    def _upload_best_checkpoint(self) -> None:
        callback = self._checkpoint_callback
        path = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
        if not path or not Path(path).exists():
            return
        mtime = Path(path).stat().st_mtime
        if self._uploaded.get(path) == mtime:
            return
        self._client.log_artifact(self._run_id, path, "checkpoints")
        self._client.set_tag(self._run_id, "best_checkpoint", str(Path(path).resolve()))
        self._uploaded[path] = mtime


def find_tracker(trainer: Trainer) -> MLflowTracker | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, MLflowTracker)), None)


def checkpoint_from_model_uri(uri: str, out_dir: Path) -> Path:
    """Turn an MLflow model (``runs:/<id>/model``, ``models:/name/1``) into a checkpoint ``predict`` can use."""
    import lightning
    import mlflow.pytorch

    mlflow.set_tracking_uri(tracking_uri())
    module = mlflow.pytorch.load_model(uri, map_location="cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (uri.replace(":/", "-").replace("/", "-") + ".ckpt")
    hparams = dict(module.hparams)
    hparams["_class_path"] = f"{type(module).__module__}.{type(module).__qualname__}"
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": hparams}
    checkpoint["pytorch-lightning_version"] = lightning.__version__
    torch.save(checkpoint, path)
    return path


def checkpoint_entry(path: str | Path, key: str) -> Any:
    """One top-level entry of a checkpoint (memory-mapped: the weights are not read)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(key)


def run_id_in_checkpoint(path: str | Path) -> str | None:
    return (checkpoint_entry(path, "mlflow") or {}).get("run_id")


def print_runs(uri: str, metrics: tuple[str, ...] = ("loss", "mase", "naive_mase", "bleu4", "wer", "cer")) -> None:
    """One line per run, newest first, with its status and test (else validation) metrics."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    print(f"MLflow runs in {uri}")
    for experiment in client.search_experiments():
        runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=20)
        if not runs:
            continue
        print(f"experiment {experiment.name!r}:")
        for run in runs:
            found = run.data.metrics
            shown = []
            for name in metrics:
                key = f"test/{name}" if f"test/{name}" in found else f"val/{name}"
                if key in found:
                    shown.append(f"{key}={found[key]:.4g}")
            print(f"  {run.info.run_id}  {run.info.status:<8} {run.info.run_name or '':<24} {' '.join(shown)}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Tracking store helpers for make targets.")
    parser.add_argument("command", choices=["uri", "init", "runs"], help="print the URI, prepare the store, list runs")
    args = parser.parse_args()
    uri = tracking_uri()
    try:
        if args.command in ("init", "runs"):
            prepare_store(uri)
    except TrackingUnavailable as error:
        raise SystemExit(f"ERROR: {error}") from None
    if args.command == "runs":
        print_runs(uri)
    else:
        print(uri)


if __name__ == "__main__":
    main()
