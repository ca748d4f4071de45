"""Calls to the tracking store made off the training thread, so that a slow, full or hanging store never stalls
training, and so that a command ends within a deadline whatever the store does.

``MetricSender`` sends metrics and hyper-parameters in batches; ``Uploads`` makes other calls (artifacts, tags) one
after another. Both run on daemon threads: a call stuck on a server that never answers is abandoned at exit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import first_line
from .liveness import HEARTBEAT_S, HEARTBEAT_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .journal import Journal

log = logging.getLogger(__name__)
Row = tuple[str, float, int, int]  # (key, value, timestamp in ms, step)


def rejected_by_store(error: Exception) -> bool:
    """Whether the store refused the request itself (a bad name or value), rather than failed to answer it.

    Not BAD_REQUEST: MLflow's SQL store answers that for database errors too, a server out of pooled
    connections under load among them ("QueuePool limit ... reached"), which pass; dropping the metric lost it."""
    return getattr(error, "error_code", None) in ("INVALID_PARAMETER_VALUE", "MALFORMED_REQUEST")


def denied_by_store(error: Exception) -> bool:
    """Whether the server refused this user the call (the auth app: no EDIT on the experiment any more): MLflow's
    PERMISSION_DENIED, or an artifact upload's HTTP 403."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    return getattr(error, "error_code", None) == "PERMISSION_DENIED" or status == 403


def acceptable_params(params: dict[str, str]) -> dict[str, str]:
    """``params`` without those MLflow's own validator refuses (a key with ``@``, over 250 characters), each named
    in one warning: a store that refused one would refuse the whole batch."""
    from mlflow.utils.validation import _validate_param

    accepted, refused = {}, []
    for key, value in params.items():
        try:
            _validate_param(key, value)
        except Exception:
            refused.append(key[:80] + ("..." if len(key) > 80 else ""))
            continue
        accepted[key] = value
    if refused:
        log.warning("MLflow does not accept these hyper-parameter names; they are not logged: %s", ", ".join(refused))
    return accepted


class MetricSender:
    """Sends queued metrics and hyper-parameters in batches from a daemon thread; sets the run's heartbeat.

    A store that does not answer keeps the rows queued (``flush`` hands back what is left); a metric name the
    store rejects is dropped with one warning, so that every other metric still arrives. A server that denies the
    user (a grant revoked mid-run) keeps them queued too, is told to ``on_denied``, and is not waited for at the
    end. Rows of steps that a continued run has already logged (``logged_through``: the last step per key) are
    dropped: a resumed training repeats the steps after its checkpoint, and the store keeps one value per step.
    """

    BATCH = 1000  # MLflow's limit of metrics per log_batch call

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        interval_s: float,
        logged_through: dict[str, int] | None = None,
        journal: Journal | None = None,
        on_denied: Callable[[Exception], None] | None = None,
    ) -> None:
        self.client, self.run_id, self.interval_s = client, run_id, interval_s
        self.on_denied = on_denied
        self.journal = journal  # every row and param is written there before it is sent
        self.logged_through = dict(logged_through or {})
        self.pending: list[Row] = []
        self.in_flight: list[Row] = []
        self.params: dict[str, str] = {}
        self.rejected: set[str] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.error: Exception | None = None
        self.closed = False
        self.deleted = False  # the run was deleted in the store meanwhile
        self.denied = False  # the last attempt was refused for want of permission
        self._beat = 0.0
        threading.Thread(target=self._loop, name="mlflow-metrics", daemon=True).start()

    def put(self, rows: list[Row]) -> None:
        with self.lock:
            kept = [r for r in rows if r[3] > self.logged_through.get(r[0], -1) and r[0] not in self.rejected]
            if self.journal is not None:
                self.journal.metrics(kept)  # in the same order as ``pending``: acknowledged by count
            self.pending += kept
            self.idle.clear()

    def put_params(self, params: dict[str, str]) -> None:
        accepted = acceptable_params(params)
        with self.lock:
            if self.journal is not None:
                self.journal.params(accepted)
            self.params.update(accepted)
            self.idle.clear()
        self.wake.set()

    def _loop(self) -> None:
        while not self.closed:
            self.wake.wait(self.interval_s)
            self.wake.clear()
            self._attempt()

    def _attempt(self) -> None:
        """One round: send what is queued, then the heartbeat when it is due."""
        if self.deleted:
            return  # nothing more goes to a deleted run; ``flush`` hands the rows back
        try:
            self._send()
            if not self.closed and time.monotonic() - self._beat > HEARTBEAT_S:
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time())))
                self._beat = time.monotonic()
            self.denied = False  # a grant given back: sending goes on
        except Exception as error:  # the store is away or refuses this user: keep everything, try again later
            self.error = error
            self.denied = denied_by_store(error)
            if self.denied and self.on_denied is not None:
                self.on_denied(error)

    def _send(self) -> None:
        from mlflow.entities import Metric

        with self.lock:
            params, self.params = self.params, {}
            self.in_flight, self.pending = self.pending, []
        try:  # metrics first: hyper-parameters the store refuses never hold them up
            while self.in_flight:
                chunk = self.in_flight[: self.BATCH]
                try:
                    self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in chunk])
                except Exception as error:
                    if not rejected_by_store(error) or self._run_deleted():
                        raise
                    self._send_name_by_name(chunk)
                with self.lock:
                    self.in_flight = self.in_flight[self.BATCH :]
                    if self.journal is not None:
                        self.journal.acknowledge(metrics=len(chunk))
            if params:
                self._send_params(params)
                if self.journal is not None:
                    self.journal.acknowledge(params=list(params))
                params = {}
        except Exception:
            with self.lock:  # what was not sent goes back, first and in order
                self.pending[:0] = self.in_flight
                self.in_flight = []
                self.params = {**params, **self.params}
            raise
        with self.lock:
            if not self.pending and not self.params:
                self.idle.set()

    def _send_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params  # a continued run has them already
        changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if changed:
            log.warning("not logging changed hyper-parameters of a continued run: %s", ", ".join(changed))
        new = [Param(k, v) for k, v in params.items() if k not in existing]
        for start in range(0, len(new), 100):
            batch = new[start : start + 100]
            try:
                self.client.log_batch(self.run_id, params=batch)
            except Exception as error:
                if not rejected_by_store(error) or self._run_deleted():
                    raise
                for param in batch:  # the store refuses what MLflow's validator let through: find it, drop it
                    try:
                        self.client.log_batch(self.run_id, params=[param])
                    except Exception as single:
                        if not rejected_by_store(single):
                            raise
                        log.warning("MLflow rejects the hyper-parameter %r (%s); it is not logged", param.key,
                                    first_line(single))  # fmt: skip

    def _run_deleted(self) -> bool:
        """Whether the run was deleted (in the UI) meanwhile: the store then refuses everything, as if each name
        were bad. Its rows are kept, not dropped, and sent nowhere."""
        try:
            deleted = self.client.get_run(self.run_id).info.lifecycle_stage == "deleted"
        except Exception as error:
            deleted = rejected_by_store(error) or getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"
        if deleted and not self.deleted:
            log.warning("MLflow run %s was deleted during the training: nothing more is sent to it", self.run_id)
        self.deleted = self.deleted or deleted
        return deleted

    def _send_name_by_name(self, chunk: list[Row]) -> None:
        """One name at a time, to find the names the store rejects; those are dropped with one warning each."""
        from mlflow.entities import Metric

        for key in dict.fromkeys(k for k, *_ in chunk):
            rows = [Metric(k, v, ts, step) for k, v, ts, step in chunk if k == key]
            try:
                self.client.log_batch(self.run_id, metrics=rows)
            except Exception as error:
                if not rejected_by_store(error):
                    raise
                self.rejected.add(key)
                log.warning("MLflow rejects the metric %r (%s); it is not logged", key, first_line(error))

    def flush(self, timeout_s: float) -> list[Row]:
        """Send what is queued, waiting at most ``timeout_s``, and stop: the rows still not sent then."""
        self.wake.set()
        sent = not self.deleted and not self.denied and self.idle.wait(timeout_s)
        self.closed = True  # no heartbeat for a run that has ended
        if sent:
            return []
        with self.lock:
            return self.in_flight + self.pending


class Uploads:
    """Store calls of a run (artifacts, tags), made one after another by a daemon thread.

    A call that fails is named in ``failed``, with a warning (or told to ``on_denied`` when the server refused the
    user); ``wait`` says which calls have not finished.
    """

    def __init__(self, on_denied: Callable[[Exception], None] | None = None) -> None:
        self.on_denied = on_denied
        self.jobs: queue.Queue[tuple[str, Callable[[], object], threading.Event]] = queue.Queue()
        self.queued: list[tuple[str, threading.Event]] = []
        self.failed: list[str] = []
        threading.Thread(target=self._work, name="mlflow-uploads", daemon=True).start()

    def add(self, what: str, call: Callable[[], object]) -> None:
        done = threading.Event()
        self.queued.append((what, done))
        self.jobs.put((what, call, done))

    def _work(self) -> None:
        while True:
            what, call, done = self.jobs.get()
            try:
                call()
            except Exception as error:  # a full disk, a read-only folder, a store away: training goes on
                self.failed.append(what)
                if denied_by_store(error) and self.on_denied is not None:
                    self.on_denied(error)
                else:
                    log.warning("could not upload %s to MLflow: %s", what, first_line(error))
            finally:
                done.set()

    def wait(self, timeout_s: float) -> list[str]:
        """Wait at most ``timeout_s`` for the calls queued so far; what has not finished."""
        deadline = time.monotonic() + timeout_s
        for _, done in self.queued:
            if not done.wait(max(0.0, deadline - time.monotonic())):
                break
        return [what for what, done in self.queued if not done.is_set()]
