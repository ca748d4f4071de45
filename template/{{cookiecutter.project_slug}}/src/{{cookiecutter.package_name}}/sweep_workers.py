"""The workers of one sweep process: ``WORKERS`` threads, each running one trial process at a time, one GPU each.

A worker thread only waits on its trial's process; Ctrl-C or SIGTERM stops them all, and the running trials are
recorded failed (their budget used again). A heartbeat tells workers on other hosts that this one lives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from .sweep import Sweep

HEARTBEAT_S, GONE_AFTER_S = 60.0, 300.0  # a running trial of another host without a heartbeat this long is lost


def visible_gpus() -> list[str]:
    """The GPUs workers are spread over, one each in turn."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g for g in listed.split(",") if g] if listed else [str(i) for i in range(torch.cuda.device_count())]


def worker_alive(attrs: dict[str, Any]) -> bool:
    """Whether the worker that runs a trial (its ``worker`` and ``heartbeat`` attributes) still lives."""
    host, _, pid = str(attrs.get("worker", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return time.time() - float(attrs.get("heartbeat", 0)) < GONE_AFTER_S


def run(sweep: Sweep, workers: int, worker_index: int) -> None:
    """``workers`` workers in threads of this process (each trial is a process of its own), then the summary."""
    study = sweep.open(worker_index)
    gpus = visible_gpus() if workers > 1 else []
    counted = sweep.budget_used(study)
    print(
        f"Sweep {sweep.study_name}: {counted}/{sweep.trials} trials done or running; {workers} worker(s); "
        f"study {sweep.journal}; MLflow parent run {sweep.runs.parent}",
        flush=True,
    )
    heartbeat = threading.Thread(target=_heartbeat, args=(sweep, study), daemon=True)
    heartbeat.start()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # scancel, a scheduler's stop: as Ctrl-C
    # Workers say they are done with an event: a Thread.join interrupted by Ctrl-C marks a running thread as
    # stopped in Python < 3.13, and the sweep would end without telling the study about its trials.
    done = [threading.Event() for _ in range(workers)]
    interrupted = False
    try:
        for i in range(workers):
            gpu = gpus[i % len(gpus)] if gpus else None
            threading.Thread(target=_worker, args=(sweep, study, gpu, done[i]), daemon=True).start()
            time.sleep(0.5)  # workers start apart: the first asks while the others load
        _wait(done)
    except KeyboardInterrupt:
        interrupted = True
        print("Stopping the sweep: its running trials are failed and will be run again next time", file=sys.stderr)
        sweep.stop()
        _wait(done)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sweep.summarize(study, interrupted)
    if interrupted:
        raise SystemExit(128 + signal.SIGINT)


def _worker(sweep: Sweep, study: optuna.Study, gpu: str | None, done: threading.Event) -> None:
    try:
        sweep.work(study, gpu)
    finally:
        done.set()


def _wait(events: list[threading.Event]) -> None:
    for event in events:
        while not event.wait(0.5):
            pass


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _heartbeat(sweep: Sweep, study: optuna.Study) -> None:
    """Every HEARTBEAT_S: the running trials and the parent run say that their worker lives (another host reads
    nothing else)."""
    from optuna.trial import Trial

    from .liveness import HEARTBEAT_TAG

    while not sweep.stopping.wait(HEARTBEAT_S):
        with contextlib.suppress(Exception):  # a store that does not answer now may answer next time
            sweep.runs.client.set_tag(sweep.runs.parent, HEARTBEAT_TAG, str(int(time.time())))
            for trial in study.get_trials(deepcopy=False):
                if trial.number in sweep.running:
                    Trial(study, trial._trial_id).set_user_attr("heartbeat", time.time())
