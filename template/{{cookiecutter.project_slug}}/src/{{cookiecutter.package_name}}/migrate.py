"""Moving to a team's tracking server: copy the project's runs into it (``make mlflow-migrate``), and back up a
tracking database before MLflow upgrades its schema (``make mlflow-db-upgrade``).

MLflow's own export/import tool (databricks-mlflow-export-import) installs the AWS, Azure, Google Cloud and
Databricks SDKs with it; copying one project's runs takes the few client calls below.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from . import DEFAULT_TRACKING_URI
from .store import (
    POSTGRES,
    SQLITE,
    TrackingUnavailable,
    ensure_experiment,
    prepare_store,
    project_root,
    redact,
    tracking_uri,
)

COPIED_FROM = "migrated_from"  # tag of a copied run: the source run's id, so that a second copy skips it


def all_runs(client, experiment_id: str) -> Iterator:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def copy_run(source, target, run, experiment_id: str) -> str:
    """One run with its tags, params, every step of every metric, artifacts, and its status and end time."""
    from mlflow.entities import Param

    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"} | {COPIED_FROM: run.info.run_id}
    new = target.create_run(experiment_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name)
    new_id = new.info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for start in range(0, len(params), 100):
        target.log_batch(new_id, params=params[start : start + 100])
    for key in run.data.metrics:
        history = source.get_metric_history(run.info.run_id, key)
        for start in range(0, len(history), 1000):
            target.log_batch(new_id, metrics=history[start : start + 1000])
    if source.list_artifacts(run.info.run_id):
        with tempfile.TemporaryDirectory() as folder:
            source.download_artifacts(run.info.run_id, "", folder)
            target.log_artifacts(new_id, folder)
    target.set_terminated(new_id, run.info.status, run.info.end_time)
    return new_id


def copy_runs(source_uri: str, target_uri: str) -> tuple[int, int, list[str]]:
    """Copies every finished run of ``source_uri`` that ``target_uri`` lacks: (copied, already there, skipped)."""
    from mlflow import MlflowClient

    source, target = MlflowClient(source_uri), MlflowClient(target_uri)
    copied, present, skipped = 0, 0, []
    for experiment in source.search_experiments():
        runs = list(all_runs(source, experiment.experiment_id))
        if not runs:
            continue
        experiment_id = ensure_experiment(target, target_uri, experiment.name)
        done = {r.data.tags.get(COPIED_FROM) for r in all_runs(target, experiment_id)}
        for run in reversed(runs):  # oldest first, as they were made
            if run.info.run_id in done:
                present += 1
            elif run.info.status == "RUNNING":  # still training, or its process died: `make resume` it first
                skipped.append(f"{experiment.name}/{run.info.run_name} ({run.info.run_id}) is RUNNING")
            else:
                copy_run(source, target, run, experiment_id)
                copied += 1
    return copied, present, skipped


def backup(uri: str, folder: Path) -> Path:
    """A copy of the tracking database in ``folder``: pg_dump's custom format, or a SQLite file."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if uri.startswith(SQLITE):
        path = folder / f"mlflow-{stamp}.db"
        with sqlite3.connect(uri[len(SQLITE) :]) as db, sqlite3.connect(path) as copy:
            db.backup(copy)  # consistent even while a training writes
        return path
    if not uri.startswith(POSTGRES):
        raise TrackingUnavailable(f"cannot back up {redact(uri)}: only SQLite and PostgreSQL databases")
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise TrackingUnavailable("pg_dump is not installed: apt-get install postgresql-client (the server's version)")
    path = folder / f"mlflow-{stamp}.dump"
    connection, password = libpq_connection("postgresql://" + uri.split("://", 1)[1])
    result = subprocess.run(
        [pg_dump, "--format=custom", "--file", str(path), "--dbname", connection],
        capture_output=True, text=True, env={**os.environ, **({"PGPASSWORD": password} if password else {})},
    )  # fmt: skip
    if result.returncode != 0:
        path.unlink(missing_ok=True)
        reason = (result.stderr.strip().splitlines() or ["no message"])[0]
        raise TrackingUnavailable(f"pg_dump of {redact(uri)} failed, nothing was upgraded: {reason}")
    return path


def libpq_connection(uri: str) -> tuple[str, str | None]:
    """``uri`` as libpq's connection string without its password, and the password: pg_dump gets the one in its
    argv (which ``ps`` shows every user of the host) and the other in its environment (``PGPASSWORD``)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        settings = conninfo_to_dict(uri)
    except Exception as error:  # a URI libpq cannot read: no pg_dump, no upgrade
        reason = type(error).__name__
        raise TrackingUnavailable(f"{redact(uri)} is not a PostgreSQL URI that libpq reads ({reason})") from None
    password = settings.pop("password", None)
    return make_conninfo(**settings), None if password is None else str(password)


def upgrade(uri: str, folder: Path) -> Path:
    """Back up the tracking database, then upgrade its schema with MLflow's own ``mlflow db upgrade``, run here so
    that the URI (and a password in it) stays out of every process's argv."""
    from mlflow.db import upgrade as mlflow_db_upgrade

    saved = backup(uri, folder)
    print(f"backup of {redact(uri)}: {saved}", flush=True)
    try:
        mlflow_db_upgrade.callback(url=uri)  # the command's own function: no argv to parse
    except Exception as error:  # a database away or refusing: one line; the backup has it as it was
        from .credentials import scrub
        from .errors import first_line

        raise TrackingUnavailable(
            f"upgrading the schema of {redact(uri)} failed ({scrub(first_line(error))[:300]}); {saved} holds the "
            "database as it was before"
        ) from None
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description="Copy runs to a tracking server; back up a tracking database.")
    commands = parser.add_subparsers(dest="command", required=True)
    copy = commands.add_parser("copy-runs", help="copy finished runs that the target lacks")
    # URIs from the environment (make mlflow-migrate sets them): a password in an argv is shown to every user (`ps`)
    to, source = os.environ.get("MIGRATE_TO"), os.environ.get("MIGRATE_FROM")
    copy.add_argument("--to", default=to, required=not to, help="the target URI, e.g. http://host:5000 ($MIGRATE_TO)")
    copy.add_argument("--from", dest="source", default=source, help="the source URI ($MIGRATE_FROM; default: here)")
    commands.add_parser("upgrade", help="back up the store's database into backups/, then upgrade its schema")
    args = parser.parse_args()
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if args.command == "upgrade":  # the URI from the environment ($MLFLOW_TRACKING_URI), never from argv
            upgrade(tracking_uri(), project_root() / "backups")
            print(f"upgraded the schema of {redact(tracking_uri())}")
            return
        source, target = tracking_uri(args.source or DEFAULT_TRACKING_URI), tracking_uri(args.to)
        for uri in (source, target):
            if not uri.startswith(("http://", "https://", SQLITE, *POSTGRES)):
                raise TrackingUnavailable(f"{redact(uri)} is not a tracking store: use http://host:5000 or sqlite:///")
        if source == target:
            raise TrackingUnavailable(f"--from and --to are the same store, {redact(source)}")
        prepare_store(source)
        prepare_store(target)
        copied, present, skipped = copy_runs(source, target)
    except TrackingUnavailable as error:
        raise SystemExit(f"ERROR: {error}") from None
    except MlflowException as error:  # e.g. a server that refuses an account; what was copied stays, and is skipped
        reason = (str(error.message).strip().splitlines() or [error.error_code])[0]
        raise SystemExit(f"ERROR: copying runs to {redact(target)} failed ({reason}); run it again to go on") from None
    print(f"copied {copied} runs from {redact(source)} to {redact(target)}; {present} were there already")
    for line in skipped:
        print(f"WARNING: not copied: {line}")


if __name__ == "__main__":
    main()
