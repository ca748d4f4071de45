"""The tracking store: which one (``MLFLOW_TRACKING_URI`` or the project's SQLite file), its set-up, its runs.

``python -m <package>.store uri|init|runs`` serves the make targets (``make runs``,
``make mlflow-ui``, ``make mlflow-server``); the CLI prepares the store once per command, on global rank 0.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import time
from pathlib import Path

from . import DEFAULT_TRACKING_URI
from .tasks import TASKS

SQLITE = "sqlite:///"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached; raised before any compute is spent."""


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


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite file; the server decides otherwise."""
    if uri.startswith(SQLITE):
        return (Path(uri[len(SQLITE) :]).parent / "mlartifacts" / experiment).as_uri()
    return None


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


def print_runs(uri: str, limit: int = 20) -> None:
    """Per task, its newest runs: status, duration, the headline test metric next to its baseline and whether it
    beats it, the loss, the run's name."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    print(f"MLflow runs in {uri}")
    for task in TASKS.values():
        experiment = client.get_experiment_by_name(task.name)
        if experiment is None:
            continue
        runs = client.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit
        )
        print(f"{task.name} ({task.metric}: {task.better} is better)")
        for run in runs:
            found = run.data.metrics
            shown = []
            for name in (task.metric, task.baseline, "loss"):
                key = next((f"{stage}/{name}" for stage in ("test", "val") if f"{stage}/{name}" in found), None)
                if name and key:
                    shown.append(f"{key}={found[key]:.4g}")
            beats = task.beats_baseline(found)
            verdict = "" if beats is None else "  beats the baseline" if beats else "  NOT better than the baseline"
            end = run.info.end_time or int(time.time() * 1000)
            minutes = (end - run.info.start_time) / 60000
            line = f"  {run.info.run_id}  {run.info.status:<8} {minutes:5.1f} min  {' '.join(shown)}"
            print(f"{line}{verdict}  ({run.info.run_name})")


def main() -> None:
    parser = argparse.ArgumentParser(description="The tracking store, for make targets.")
    parser.add_argument("command", choices=["uri", "init", "runs"], help="print the URI, prepare the store, list runs")
    command = parser.parse_args().command
    uri = tracking_uri()
    try:
        if command != "uri":
            prepare_store(uri)
    except TrackingUnavailable as error:
        raise SystemExit(f"ERROR: {error}") from None
    if command == "runs":
        print_runs(uri)
    else:
        print(uri)


if __name__ == "__main__":
    main()
