"""The tracking store: which one (``MLFLOW_TRACKING_URI`` or the project's SQLite file), its set-up, its runs.

``python -m <package>.store uri|init|runs`` serves the make targets (``make runs``,
``make mlflow-ui``, ``make mlflow-server``); the CLI prepares the store once per command, on global rank 0.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import DEFAULT_TRACKING_URI
from .credentials import userinfo_out
from .tasks import TASKS

if TYPE_CHECKING:
    from mlflow import MlflowClient

SQLITE = "sqlite:///"
POSTGRES = ("postgresql://", "postgresql+psycopg://", "postgres://")
# MLflow 3's UI tells model trainings from GenAI experiments by this tag (3.17 also keeps a per-browser switch,
# GenAI by default: the links this project prints carry ?workflowType=machine_learning, its training view).
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_TAGS = {EXPERIMENT_KIND: "custom_model_development"}


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached; raised before any compute is spent."""


class StoreDenied(TrackingUnavailable):
    """The tracking server does not let this user do what the command needs (a permission of the auth app)."""


def project_root() -> Path:
    """The project folder (where pyproject.toml is); the working directory for a non-editable install."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri``, else $MLFLOW_TRACKING_URI, else the project's default store.

    Relative SQLite paths are made absolute against the project, so every command finds the same store. A server's
    ``user:password@`` moves to MLflow's credential variables (``credentials.py``).
    """
    uri = userinfo_out(uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)  # no password in it
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        uri = SQLITE + str((project_root() / uri[len(SQLITE) :]).resolve())
    if uri.startswith(POSTGRES):  # SQLAlchemy reads plain postgresql:// as psycopg2; the extra installs psycopg 3
        uri = "postgresql+psycopg://" + uri.split("://", 1)[1]
    return uri


def redact(uri: str) -> str:
    """``uri`` fit to print: a password or token in it (``https://user:token@host``) shown as ``***``."""
    # The userinfo runs to the last "@" before the host: a password may hold "@" or "/" (unquoted, as people type it).
    uri = re.sub(r"(?<=://)\S*@(?=[^@/\s]*(?:[/?#\s]|$))", "***@", uri)
    return re.sub(r"(?i)((?:password|token|secret|key)=)[^&\s]+", r"\1***", uri)


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite file; the server decides otherwise."""
    if uri.startswith(SQLITE):
        return (Path(uri[len(SQLITE) :]).parent / "mlartifacts" / experiment).as_uri()
    return None


def ensure_experiment(client: MlflowClient, uri: str, name: str) -> str:
    """The id of experiment ``name`` (a task's), made when missing (artifacts beside a SQLite store), restored when
    deleted in the UI, and tagged as a model training's; two processes making it at once get the same one."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            location = artifact_location(uri, name)
            return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
        except MlflowException:  # another process created it first, or the server denies it
            created = client.get_experiment_by_name(name)
            if created is None:
                raise
            return created.experiment_id
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    if EXPERIMENT_KIND not in found.tags:  # made by an older version of the project
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, EXPERIMENT_TAGS[EXPERIMENT_KIND])
    return found.experiment_id


def prepare_store(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a URI no store reads or an unreachable server; create a SQLite store's tables once, under a
    file lock."""
    from .preflight import PreflightError, check_tracking_uri

    try:
        check_tracking_uri(uri)
    except PreflightError as error:
        raise TrackingUnavailable(str(error)) from None
    if uri.startswith(("http://", "https://")):
        import requests

        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        auth = (user, password or "") if user else None
        try:
            answer = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s, auth=auth)
        except requests.RequestException as error:
            raise TrackingUnavailable(
                f"MLflow tracking server {redact(uri)} is unreachable ({type(error).__name__}). Start it with "
                "`make mlflow-server`, or unset MLFLOW_TRACKING_URI to log to the project's SQLite store."
            ) from None
        if answer.status_code in (401, 403):
            raise TrackingUnavailable(
                f"MLflow tracking server {redact(uri)} refuses this client ({answer.status_code}): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account the server's admin made"
            )
        if not answer.ok:
            raise TrackingUnavailable(f"MLflow tracking server {redact(uri)} answers {answer.status_code} to /health")
    elif uri.startswith(POSTGRES):
        check_postgres(uri, timeout_s)
    elif uri.startswith(SQLITE):
        from mlflow import MlflowClient

        db = Path(uri[len(SQLITE) :])
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{db}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent first uses would race on CREATE TABLE
            create_private(db)
            (db.parent / "mlartifacts").mkdir(mode=0o700, exist_ok=True)
            MlflowClient(uri).search_experiments(max_results=1)


def create_private(path: Path) -> None:
    """Create ``path`` (a SQLite file: empty is a new database) readable by its owner only, unless it exists.

    On a shared host a default umask makes runs, artifacts and password hashes readable by every user.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def check_postgres(uri: str, timeout_s: float) -> None:
    """Fail fast, before a server starts or a training spends compute, on a missing driver or database."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise TrackingUnavailable(
            f"{redact(uri)} is a PostgreSQL database and its driver is not installed: pip install -e '.[postgres]'"
        ) from None
    import sqlalchemy

    timeout = {"connect_timeout": max(1, int(timeout_s))}
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool, connect_args=timeout)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise TrackingUnavailable(
            f"PostgreSQL database {redact(uri)} is unreachable ({reason}). Create it (README: Teams) or check the URI"
        ) from None


def print_runs(uri: str, limit: int = 20) -> None:
    """Per task, its newest runs: start, status, training time, the headline test metric next to its baseline and
    whether it beats it, the loss, the run's name and its data."""
    from mlflow import MlflowClient

    from .liveness import process_gone

    client = MlflowClient(uri)
    print(f"MLflow runs in {redact(uri)}")
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
            verdict = "" if beats is None else "  beats the baseline" if beats else "  does NOT beat the baseline"
            end = run.info.end_time or int(time.time() * 1000)
            seconds = run.data.tags.get("training_time_s")  # summed over resumes; the wall span counts idle time
            minutes = float(seconds) / 60 if seconds else (end - run.info.start_time) / 60000
            started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
            status = run.info.status
            if status == "RUNNING" and process_gone(run):
                status = "RUNNING (its process is gone: `make resume` continues it)"
            line = f"  {run.info.run_id}  {status:<8} {started}  {minutes:5.1f} min  {' '.join(shown)}"
            data = f"  data={run.data.tags['data']}" if "data" in run.data.tags else ""
            print(f"{line}{verdict}  ({run.info.run_name}){data}")


def auth_config() -> Path:
    """The config of MLflow's basic-auth app for ``make mlflow-server MLFLOW_AUTH=1``: users in this project.

    Written once, private (0600), and never rewritten: an admin's edits (``default_permission = READ`` and grants per
    experiment, README: Teams) stay. The team model it starts with: every member may create runs in every
    experiment (``EDIT``), as each task's experiment is shared by whoever trains it. The admin's password is not in
    it: MLflow reads ``MLFLOW_AUTH_ADMIN_PASSWORD`` when it creates the user store.
    """
    path = project_root() / "mlflow-auth.ini"
    create_private(project_root() / "mlflow-auth.db")  # the users' password hashes
    if path.exists():
        return path
    text = (
        "[mlflow]\n"
        "# EDIT: every member may create and update runs in every experiment (one per task).\n"
        "# READ: members only read; grant EDIT per experiment and user (README: Teams).\n"
        "default_permission = EDIT\n"
        f"database_uri = {SQLITE}{project_root() / 'mlflow-auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(text)
    return path


def secret_key() -> str:
    """The key the team server signs its forms with (CSRF), made once per project and kept out of the repository."""
    path = project_root() / "mlflow-secret.key"
    if not path.exists():
        import secrets

        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description="The tracking store, for make targets.")
    commands = {"uri": "the URI", "init": "prepare the store", "runs": "list runs", "auth-config": "", "secret-key": ""}
    parser.add_argument("command", choices=list(commands), help=", ".join(f"{k}: {v}" for k, v in commands.items()))
    command = parser.parse_args().command
    if command in ("auth-config", "secret-key"):
        print(auth_config() if command == "auth-config" else secret_key())
        return
    uri = tracking_uri()
    try:
        if command != "uri":
            prepare_store(uri)
    except TrackingUnavailable as error:
        raise SystemExit(f"ERROR: {error}") from None
    if command == "runs":
        print_runs(uri)
    else:
        print(uri)  # for `mlflow ui`/`mlflow server --backend-store-uri "$(...)"`: the real URI


if __name__ == "__main__":
    main()
