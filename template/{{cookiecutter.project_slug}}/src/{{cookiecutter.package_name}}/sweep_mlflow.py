"""A sweep in MLflow: one parent run in the task's experiment, each trial's training a child run of it.

Nesting works across processes, hosts and SLURM array tasks through the ``mlflow.parentRunId`` tag the trial's
training sets on its own run (mlflow #2194; Optuna's ``MLflowCallback`` makes no parent, optuna #5148). What the
sweep adds to a trial's run once it has ended (its state, its log) and the parent's per-trial metrics are sent in
the background, in order, while the next trial starts.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .space import Space

PARENT_TAG, TRIAL_TAG, SWEEP_TAG = "mlflow.parentRunId", "sweep.trial", "sweep.name"


class SweepRuns:
    """The parent run ``parent`` (once made or found) and its children, in the store at ``uri``."""

    def __init__(self, uri: str, task: str, name: str) -> None:
        self.uri, self.task, self.name = uri, task, name
        self.parent: str | None = None
        self._client: MlflowClient | None = None
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="sweep-mlflow")

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    def later(self, call: Callable[..., None], *args: Any) -> None:
        """``call`` in the background, after the calls before it; a store that fails it is a warning (the trial's
        state is in the study: MLflow only shows it)."""

        def logged() -> None:
            try:
                call(*args)
            except Exception as error:
                print(f"WARNING: MLflow did not take {call.__name__} of sweep {self.name}: {error}", file=sys.stderr)

        self._calls.submit(logged)

    def settle(self) -> None:
        """Wait until the background calls are done (before the parent run ends)."""
        self._calls.submit(lambda: None).result()

    def create_parent(self, space: Space, study_name: str, journal: Path) -> str:
        """The parent run: the space, sampler, pruner and objective as params, the space file as an artifact."""
        from mlflow.entities import Param

        from .store import ensure_experiment

        experiment_id = ensure_experiment(self.client, self.uri, self.task)
        tags = {SWEEP_TAG: self.name, "task": self.task, "command": "sweep", "sweep.storage": str(journal)}
        tags["mlflow.note.content"] = (
            f"Sweep `{self.name}` of {self.task}: {space.objective} ({space.direction}), trials as child "
            f"runs.\n\n`make sweep TASK={self.task} SWEEP={self.name}` continues it; `make sweep-report` lists them."
        )
        run = self.client.create_run(experiment_id, tags=tags, run_name=f"sweep {study_name}")
        params = [Param(k, str(v)) for k, v in space.params_to_log().items()]
        self.client.log_batch(run.info.run_id, params=params)
        self.client.log_text(run.info.run_id, space.text, f"sweep/{space.path.name}")
        return run.info.run_id

    def claim_parent(self) -> None:
        """The parent run is RUNNING while a worker lives, with that worker's process tags (``liveness.py``)."""
        from .liveness import process_tags

        self.client.update_run(self.parent, status="RUNNING")
        for key, value in process_tags().items():
            self.client.set_tag(self.parent, key, value)

    def child_tags(self, number: int) -> dict[str, str]:
        """The tags that make trial ``number``'s training a child run of the sweep."""
        return {PARENT_TAG: str(self.parent), TRIAL_TAG: str(number), SWEEP_TAG: self.name}

    def child_run(self, number: int) -> Any:
        """The MLflow run of trial ``number`` (None before its training started one)."""
        parent = self.client.get_run(self.parent)
        found = self.client.search_runs(
            [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{self.parent}' and tags.`{TRIAL_TAG}` = '{number}'"
        )
        return found[0] if found else None

    def end_child(self, number: int, state: str, log: Path | None, status: str = "FAILED") -> None:
        """The child run shows the trial's state (``sweep.state``: PRUNED, FAIL, ...) and its log; a run its
        training could not end (SIGKILL, OOM) ends ``status``."""
        child = self.child_run(number)
        if child is None:
            return
        self.client.set_tag(child.info.run_id, "sweep.state", state)
        if log is not None:
            with contextlib.suppress(Exception):  # a log that cannot be uploaded is still on disk
                self.client.log_artifact(child.info.run_id, str(log), "sweep")
        if child.info.status == "RUNNING":
            self.client.set_terminated(child.info.run_id, status)

    def log_value(self, objective: str, number: int, value: float, best: float) -> None:
        """The parent's ``trial/<objective>`` and ``best/<objective>`` at step ``number``."""
        self.client.log_metric(self.parent, f"trial/{objective}", value, step=number)
        self.client.log_metric(self.parent, f"best/{objective}", best, step=number)

    def end_parent(self, status: str) -> None:
        self.client.set_terminated(self.parent, status)
