"""Whether the process behind a RUNNING MLflow run still lives: the tags a run carries and how they are read.

A run records which process runs it (host, boot id, PID namespace, pid and the process's start time), who started
it, and, while it lives, a heartbeat (``background.py`` sends it). ``make runs`` shows a run whose process looks
gone; the next training of a task marks KILLED only the runs it can prove dead: its own (same user) and this
project's (process tags), on this machine (same boot and PID namespace), whose pid is gone or now belongs to a
process started later. A heartbeat is only shown, never acted on: clocks differ between hosts and a store may have
been unreachable for a while. When in doubt, show rather than mark.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
HOST_TAG, PID_TAG = "process.host", "process.pid"  # where the process that runs a run lives
BOOT_TAG, PIDNS_TAG, START_TAG = "process.boot_id", "process.pid_ns", "process.start_ticks"  # which process it is
USER_TAG = "process.user"  # the tracking account (or the login) that started the run
HEARTBEAT_TAG = "process.heartbeat"  # seconds since the epoch, set every HEARTBEAT_S while the process lives
HEARTBEAT_S = 60.0
GONE_AFTER_S = 15 * HEARTBEAT_S  # shown as gone after this long without a heartbeat (never marked for it)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def boot_id() -> str:
    """This kernel's boot: a pid means the same process only within one boot of one machine."""
    return _read("/proc/sys/kernel/random/boot_id")


def pid_namespace() -> str:
    """This process's PID namespace: containers sharing a hostname (and a kernel) still differ here."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def start_ticks(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot ("" if there is no such process): a reused pid
    has a later start."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rpartition(")")[2].split()[19] if stat else ""  # field 22; the name in () may hold spaces


def tracking_user() -> str:
    """Who this process is to the store: the tracking account, else the login name."""
    try:
        return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's numeric uid)
        return str(os.getuid())


def process_tags() -> dict[str, str]:
    """The tags that say which process runs a run, who started it, and that it is alive now."""
    return {
        HOST_TAG: socket.gethostname(),
        BOOT_TAG: boot_id(),
        PIDNS_TAG: pid_namespace(),
        PID_TAG: str(os.getpid()),
        START_TAG: start_ticks(os.getpid()),
        USER_TAG: tracking_user(),
        HEARTBEAT_TAG: str(int(time.time())),
    }


def provably_dead(run: Any) -> bool:
    """Whether a run's process is known to be gone: it ran in this boot and PID namespace, and its pid is free or
    belongs to a process that started after it. Runs without this project's process tags are never dead here."""
    tags = run.data.tags
    if not tags.get(PID_TAG, "").isdigit() or not tags.get(BOOT_TAG) or not tags.get(PIDNS_TAG):
        return False  # another project's run, a notebook's, or an older version's: not ours to judge
    if tags[BOOT_TAG] != boot_id() or tags[PIDNS_TAG] != pid_namespace():
        return False  # another machine or container, or before a reboot of a host we cannot tell apart
    started = start_ticks(int(tags[PID_TAG]))
    return not started or bool(tags.get(START_TAG)) and started != tags[START_TAG]


def process_gone(run: Any, now: float | None = None) -> bool:
    """Whether a RUNNING run's process looks dead (for ``make runs``): provably, or by a long-stopped heartbeat."""
    if provably_dead(run):
        return True
    tags = run.data.tags
    if tags.get(BOOT_TAG) == boot_id() and tags.get(PIDNS_TAG) == pid_namespace():
        return False  # here and alive
    last = float(tags.get(HEARTBEAT_TAG) or run.info.start_time / 1000)  # another host: only its heartbeat tells
    return (now or time.time()) - last > GONE_AFTER_S


def mark_dead_runs(client: MlflowClient, experiment_id: str, keep: str | None) -> None:
    """Mark KILLED this user's RUNNING runs of an experiment whose process is provably gone (SIGKILL), but ``keep``.

    Other members' runs are left alone (``make runs`` shows them), and so is a run the store does not let this user
    change: a denied update is skipped, never raised.
    """
    from mlflow.exceptions import MlflowException

    me = tracking_user()
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        if run.info.run_id == keep or run.data.tags.get(USER_TAG) != me or not provably_dead(run):
            continue
        try:
            client.set_tag(run.info.run_id, "process.ended", "its process died; marked by a later command")
            client.set_terminated(run.info.run_id, "KILLED")
        except MlflowException as error:  # not ours to change after all (permissions), or gone meanwhile
            log.warning("run %s's process is gone, but it could not be marked KILLED (%s)", run.info.run_id,
                        getattr(error, "error_code", type(error).__name__))  # fmt: skip
            continue
        log.warning("run %s was RUNNING but its process is gone: marked KILLED", run.info.run_id)
