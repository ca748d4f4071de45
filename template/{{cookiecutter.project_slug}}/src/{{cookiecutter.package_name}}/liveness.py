"""Whether the process behind a RUNNING MLflow run still lives: the tags a run carries and how they are read.

A run records where its process runs (host, pid) and, while it lives, a heartbeat (``background.py`` sends it).
``make runs`` and the next training of a task read them to tell a live run from one whose process died.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
HOST_TAG, PID_TAG = "process.host", "process.pid"  # where the process that runs a run lives
HEARTBEAT_TAG = "process.heartbeat"  # seconds since the epoch, set every HEARTBEAT_S while the process lives
HEARTBEAT_S = 60.0
GONE_AFTER_S = 5 * HEARTBEAT_S  # a RUNNING run of another host without a heartbeat for this long has lost it


def process_tags() -> dict[str, str]:
    """The tags that say which process runs a run, and that it is alive now."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), HEARTBEAT_TAG: str(int(time.time()))}


def process_gone(run: Any, now: float | None = None) -> bool:
    """Whether a RUNNING run's process has died: its pid is gone from this host, or its heartbeat stopped."""
    tags = run.data.tags
    if tags.get(HOST_TAG) == socket.gethostname() and tags.get(PID_TAG, "").isdigit():
        try:
            os.kill(int(tags[PID_TAG]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            pass
        return False
    last = float(tags.get(HEARTBEAT_TAG) or run.info.start_time / 1000)  # another host: only its heartbeat tells
    return (now or time.time()) - last > GONE_AFTER_S


def mark_dead_runs(client: MlflowClient, experiment_id: str, keep: str | None) -> None:
    """Mark KILLED the RUNNING runs of an experiment whose process is gone (SIGKILL, a lost node), but ``keep``."""
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        if run.info.run_id != keep and process_gone(run):
            client.set_tag(run.info.run_id, "process.ended", "its process died; marked by a later command")
            client.set_terminated(run.info.run_id, "KILLED")
            log.warning("run %s was RUNNING but its process is gone: marked KILLED", run.info.run_id)
