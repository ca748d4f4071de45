"""Checks made before any compute, each failing with one line: the tracking URI, and the folders a command writes.

A typo in ``MLFLOW_TRACKING_URI`` (``htp:/host``), a PostgreSQL URI without its driver, or a read-only or full
``runs/`` used to be found after the data was read or the model trained, with a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

MIN_FREE_BYTES = 200 * 2**20  # a checkpoint of the bundled models is a few MB; less free space fails mid-training
WORKING = (
    "http(s)://host:port (an MLflow server), sqlite:////absolute/path/mlflow.db, "
    "postgresql+psycopg://user@host:5432/db, file:///absolute/folder, databricks"
)
# Database schemes MLflow reaches through SQLAlchemy, and the driver module each needs (SQLAlchemy's default first).
DRIVERS = {
    "postgresql": ("psycopg2", "psycopg2"),
    "postgresql+psycopg2": ("psycopg2", "psycopg2"),
    "postgresql+psycopg": ("psycopg", "psycopg"),
    "postgresql+pg8000": ("pg8000", "pg8000"),
    "mysql": ("MySQLdb", "mysqlclient"),
    "mysql+mysqldb": ("MySQLdb", "mysqlclient"),
    "mysql+pymysql": ("pymysql", "pymysql"),
    "mssql": ("pyodbc", "pyodbc"),
    "mssql+pyodbc": ("pyodbc", "pyodbc"),
}


class PreflightError(ValueError):
    """A setting that would fail once compute has been spent; its message is the one line to print."""


def check_tracking_uri(uri: str) -> None:
    """Refuse a tracking URI that no MLflow store can open here, naming it and the schemes that work."""
    from .store import redact

    shown = redact(uri)
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()

    def refuse(why: str) -> PreflightError:
        return PreflightError(f"tracking URI {shown!r} {why}; MLFLOW_TRACKING_URI may be {WORKING}")

    if scheme in ("http", "https"):
        if not parsed.hostname or not uri.lower().startswith(f"{scheme}://"):
            raise refuse("names no server (write http://host:port)")
        return
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or len(uri) <= len("sqlite:///"):
            raise refuse("is not a SQLite file URI (write sqlite:////absolute/path/mlflow.db)")
        check_writable([Path(uri[len("sqlite:///") :]).parent], what="the tracking store's folder")
        return
    if scheme in DRIVERS:
        module, package = DRIVERS[scheme]
        if importlib.util.find_spec(module) is None:
            other = next((s for s, (m, _) in DRIVERS.items() if s.split("+")[0] == scheme.split("+")[0]
                          and importlib.util.find_spec(m) is not None), None)  # fmt: skip
            fix = f"write {other}://... to use the installed driver" if other else f"pip install {package}"
            raise refuse(f"needs the {package} driver, which is not installed ({fix})")
        if not parsed.hostname and not parsed.path.strip("/"):
            raise refuse("names no database server")
        return
    if scheme == "databricks" or uri.startswith("databricks"):
        configured = os.environ.get("DATABRICKS_HOST") or (Path.home() / ".databrickscfg").is_file()
        if not configured:
            raise refuse("needs DATABRICKS_HOST and DATABRICKS_TOKEN (or ~/.databrickscfg)")
        return
    if scheme == "file" or (not scheme and uri):
        folder = Path(parsed.path if scheme == "file" else uri).expanduser()
        if scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise refuse("names a host; a file store is a local folder (file:///absolute/folder)")
        check_writable([folder], what="the tracking store's folder")
        return
    raise refuse(f"has the scheme {scheme + ':' if scheme else '(none)'}, which no MLflow store reads")


def check_writable(folders: Iterable[str | Path], what: str = "") -> None:
    """Refuse a folder the command will write into that cannot be written (read-only, not a folder) or is full.

    A folder that does not exist yet is checked at its nearest existing parent, where it will be made.
    """
    for folder in folders:
        folder = Path(folder).expanduser()
        name = what or f"folder {str(folder)!r}"
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise PreflightError(f"{name} {str(folder)!r} cannot be made: {str(existing)!r} is a file, not a folder")
        try:
            with tempfile.TemporaryFile(dir=existing, prefix=".write-check-"):
                pass
        except OSError as error:
            raise PreflightError(
                f"{name} {str(folder)!r} is not writable ({error.strerror or error}); make it writable or point "
                "the setting at another folder"
            ) from None
        free = shutil.disk_usage(existing).free
        if free < MIN_FREE_BYTES:
            raise PreflightError(
                f"{name} {str(folder)!r} is on a disk with {free / 2**20:.0f} MB free (at least "
                f"{MIN_FREE_BYTES / 2**20:.0f} MB needed); free some space or point it at another disk"
            )


def check_command(subcommand: str, config: object) -> None:
    """What a command's config asks that would fail once compute is spent: folders it cannot write, trainer
    settings Lightning accepts and then fails on (``log_every_n_steps: 0`` divides by zero at the first step)."""
    check_writable(command_folders(subcommand, config))
    trainer = getattr(config, "trainer", None)
    devices, nodes = getattr(trainer, "devices", None), getattr(trainer, "num_nodes", None)
    for name, value, most in (("devices", devices, 4096), ("num_nodes", nodes, 100_000)):
        value = int(value) if isinstance(value, str) and value.isdigit() else value  # devices may be given as text
        if isinstance(value, int) and not isinstance(value, bool) and value > most:
            raise PreflightError(f"trainer.{name} is {value}; no machine has that many (at most {most}); -1 is all")
    steps = getattr(trainer, "log_every_n_steps", None)
    if isinstance(steps, int) and not isinstance(steps, bool) and steps < 1:
        raise PreflightError(f"trainer.log_every_n_steps is {steps}; it must be 1 or more (e.g. 10)")


def command_folders(subcommand: str, config: object) -> list[Path]:
    """The folders ``subcommand`` writes with ``config`` (its section of the parsed config): runs and predictions."""
    trainer = getattr(config, "trainer", None)
    folders = [Path(getattr(trainer, "default_root_dir", None) or "runs")]
    predictions = getattr(config, "predictions", None)
    if subcommand == "predict" and predictions is not None:
        folders.append(Path(getattr(predictions, "output_dir", None) or "predictions"))
    return folders
