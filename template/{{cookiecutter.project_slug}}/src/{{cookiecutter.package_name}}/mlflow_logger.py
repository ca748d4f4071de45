"""A Lightning logger that sends metrics and hyper-parameters to the MLflow run of a ``TrackedRun``, in batches.

It owns nothing of the run: ``run.py`` starts and ends it and uploads files; this logger only sends numbers, from
a background thread, so that logging every step costs the training loop almost nothing.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .run import TrackedRun

log = logging.getLogger(__name__)
Row = tuple[str, float, int, int]  # (key, value, timestamp in ms, step)


class MetricSender:
    """Sends queued metrics in batches from a daemon thread, so the training loop never waits on the store."""

    BATCH = 1000  # MLflow's limit of metrics per log_batch call

    def __init__(self, client: MlflowClient, run_id: str, interval_s: float) -> None:
        self.client, self.run_id, self.interval_s = client, run_id, interval_s
        self.pending: list[Row] = []
        self.queue_lock = threading.Lock()  # guards pending
        self.send_lock = threading.Lock()  # one sender at a time: the thread or a flush
        self.wake = threading.Event()
        self.error: Exception | None = None
        threading.Thread(target=self._loop, name="mlflow-metrics", daemon=True).start()

    def put(self, rows: list[Row]) -> None:
        with self.queue_lock:
            self.pending.extend(rows)

    def _loop(self) -> None:
        while True:
            self.wake.wait(self.interval_s)
            self.wake.clear()
            self.send()

    def send(self) -> bool:
        """Send what is queued; what fails stays queued for the next try. True when nothing is left."""
        from mlflow.entities import Metric

        with self.send_lock:
            with self.queue_lock:
                batch, self.pending = self.pending, []
            for start in range(0, len(batch), self.BATCH):
                chunk = batch[start : start + self.BATCH]
                try:
                    self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in chunk])
                    self.error = None
                except Exception as error:  # the store is away: keep the rest, in order
                    self.error = error
                    with self.queue_lock:
                        self.pending[:0] = batch[start:]
                    return False
        return True

    def flush(self, fallback_csv: Path, tries: int = 3) -> None:
        """Send everything now; what still cannot be sent is saved to ``fallback_csv`` rather than lost."""
        for attempt in range(tries):
            if self.send():
                return
            if attempt < tries - 1:
                time.sleep(1.0)
        with self.queue_lock:
            unsent, self.pending = self.pending, []
        fallback_csv.parent.mkdir(parents=True, exist_ok=True)
        with open(fallback_csv, "a", newline="") as f:
            csv.writer(f).writerows(unsent)
        log.error(
            "could not send %d metrics to MLflow (%s); they are saved in %s", len(unsent), self.error, fallback_csv
        )


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

    Checkpoints go to ``<default_root_dir>/<task>/<run id>/checkpoints``: ``name`` is the task, ``version`` the run.
    """

    def __init__(self, run: TrackedRun, flush_interval_s: float = 2.0) -> None:
        super().__init__()
        self.run = run
        self.flush_interval_s = flush_interval_s
        self._sender: MetricSender | None = None

    @property
    def name(self) -> str:
        return self.run.experiment

    @property
    def version(self) -> str | None:
        return self.run.id

    @property
    def save_dir(self) -> None:
        return None  # the trainer's default_root_dir

    @property
    def experiment(self) -> MlflowClient | None:
        return self.run.client

    def _queue(self) -> MetricSender:
        if self._sender is None:
            self._sender = MetricSender(self.run.client, self.run.id, self.flush_interval_s)
        return self._sender

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        from mlflow.entities import Param

        flat = flatten(vars(params) if isinstance(params, Namespace) else params)
        existing = self.run.client.get_run(self.run.id).data.params  # a continued run has them already
        changed = sorted(k for k, v in flat.items() if k in existing and existing[k] != v)
        if changed:
            log.warning("not logging changed hyper-parameters of a continued run: %s", ", ".join(changed))
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for start in range(0, len(new), 100):
            self.run.client.log_batch(self.run.id, params=new[start : start + 100])

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        self._queue().put([(k, float(v), timestamp, step or 0) for k, v in metrics.items() if not isinstance(v, str)])

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self._sender is not None:
            self._sender.wake.set()  # send the metrics up to this checkpoint now: resuming starts from it

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Called by Lightning after fit, test and on failures: send what is queued (the run goes on)."""
        if self._sender is not None:
            self._sender.flush(self.run.folder / "unsent_metrics.csv")
