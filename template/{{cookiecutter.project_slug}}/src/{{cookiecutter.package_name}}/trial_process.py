"""A sweep trial's process: ``python -m <package> fit ...``, a process of its own that starts in a fraction of a second.

A fresh Python spends 7-14 s, mostly importing torch, Lightning and MLflow, before a trial trains: a fifth of a
one-minute trial (``bench/sweep.py``). The sweep starts one multiprocessing forkserver that imports those modules once
(``set_forkserver_preload``); each trial is a new fork of it. Every trial still starts from the same clean state
(the forkserver never trains), so one trial's crash, NaN or ``kill -9`` stays in its own process, and the command
runs in it exactly as ``python -m <package>`` runs it from a shell (``runpy``: DDP launches its other ranks from
``__main__`` as usual). A trial runs in a session of its own, so Ctrl-C reaches the sweep alone (which stops its
trials), and it dies with the forkserver, which ends when the sweep ends, ``kill -9`` included.

``SWEEP_FRESH_PYTHON=1`` makes every trial a fresh Python instead (the fork replaces itself at once): for code of
one's own that must not be forked after import (it starts threads or touches CUDA as it is imported).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import runpy
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from .tasks import PACKAGE, TASKS

# What every training imports, besides its task's model and data. A module that is not installed is skipped by the
# forkserver: the trial imports what it needs itself.
PRELOAD = (
    f"{PACKAGE}.cli",
    f"{PACKAGE}.pruning",
    "mlflow.tracking.context.registry",
    "mlflow.store.tracking.sqlalchemy_store",  # SQLite and PostgreSQL stores: SQLAlchemy and alembic
    "mlflow.store.tracking.rest_store",  # a tracking server
    "mlflow.system_metrics.system_metrics_monitor",
    "optuna.storages.journal",
)
_CONTEXT = multiprocessing.get_context("forkserver")
FRESH = "SWEEP_FRESH_PYTHON"


def start_forkserver(task: str) -> None:
    """Start the forkserver for trials of ``task`` now: its imports take seconds, while the sweep opens its study."""
    from multiprocessing import forkserver

    parts = (TASKS[task].model, TASKS[task].data) if task in TASKS else ()
    own = [f"{PACKAGE}.{path.rpartition('.')[0]}" for path in parts]
    _CONTEXT.set_forkserver_preload([] if os.environ.get(FRESH) == "1" else [*PRELOAD, *own])
    forkserver.ensure_running()


class TrialProcess:
    """``python -m <package> <argv>`` in ``cwd`` with ``env``, its output to ``log``; what ``subprocess.Popen``
    offers a sweep (``pid``, ``wait``, ``send_signal``)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        log.write_text(f"$ python -m {PACKAGE} {shlex.join(argv)}\n")  # how to run this trial again by hand
        self.process = _CONTEXT.Process(target=_trial, args=(argv, env, str(cwd), str(log)), name=log.stem)
        self.process.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self) -> int:
        """The exit status, as ``Popen.returncode`` gives it: negative for a signal (``-9``: killed)."""
        self.process.join()
        return self.process.exitcode

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signum)


def _trial(argv: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    """In the forked trial process: become the trial's own process, then run the command as ``python -m``."""
    os.setsid()  # a session of its own: the terminal's Ctrl-C goes to the sweep, which stops the trial
    _die_with_parent()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)  # before any CUDA call: CUDA_VISIBLE_DEVICES gives this worker its GPU
    if env.get(FRESH) == "1" or _cuda_started_in_forkserver():  # CUDA cannot work in a fork after it started
        os.execv(sys.executable, [sys.executable, "-m", PACKAGE, *argv])  # a fresh Python, as without forkserver
    sys.argv = [PACKAGE, *argv]
    try:
        runpy.run_module(PACKAGE, run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()  # what a Python leaving normally runs (a forked process leaves by os._exit)


def _cuda_started_in_forkserver() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda._is_in_bad_fork()


def _die_with_parent() -> None:
    """Die when the forkserver dies, rather than train on unseen; and let the forkserver die with the sweep.

    The forkserver ends when the last process holding its "alive" pipe has closed it: the sweep and, as
    multiprocessing hands it to every child so that it may fork more, each trial. A trial gives its copy up, so a
    sweep killed by SIGKILL takes the forkserver and, through PR_SET_PDEATHSIG, its trials with it.
    """
    from multiprocessing import forkserver

    parent = os.getppid()
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(128 + signal.SIGKILL)
    server = forkserver._forkserver
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = server._forkserver_address = None  # a fork of its own starts its own server


def _prctl() -> Any:
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _prctl()
