"""The metric sender loses nothing, whatever the store does: any interleaving of metrics, hyper-parameters, send
attempts, transient failures, names the store rejects, a grant revoked and given back, and a run deleted meanwhile
leaves every row either
acknowledged by the store or in the run's journal (and handed back as unsent), or under a name the store rejects
(named in a warning). A hyper-parameter never holds up a metric.

The sender's thread is not started: the test makes each send attempt itself, so hypothesis replays exactly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KEYS = ("train/loss", "val/loss", "val/acc@1")  # MLflow's server rejects "@" in a metric name
BAD_PARAM = "optimizer/lr@warmup"  # and in a param name: refused before it is sent
SERVER_REFUSES = "data/refused_by_this_server"  # a name MLflow's validator accepts and this store refuses


class Transient(Exception):
    """A store that did not answer (no error code)."""


class FakeStore:
    """An MLflow client that fails as the test tells it, and records what it acknowledged."""

    def __init__(self) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, PERMISSION_DENIED

        self.rejection = lambda what: MlflowException(f"invalid {what}", error_code=INVALID_PARAMETER_VALUE)
        self.denial = MlflowException("Permission denied", error_code=PERMISSION_DENIED)
        self.revoked = False  # the auth server's answer to a member whose EDIT grant was taken away
        self.metrics: list[tuple[str, float, int, int]] = []
        self.params: dict[str, str] = {}
        self.failing = False
        self.deleted = False

    def log_batch(self, run_id, metrics=(), params=(), tags=()) -> None:
        if self.deleted:
            raise self.rejection("run state: deleted")
        if self.failing:
            raise Transient("connection refused")
        if self.revoked:
            raise self.denial
        if any("@" in m.key for m in metrics) or any("@" in p.key or p.key == SERVER_REFUSES for p in params):
            raise self.rejection("name")
        self.metrics += [(m.key, m.value, m.timestamp, m.step) for m in metrics]
        self.params.update({p.key: p.value for p in params})

    def get_run(self, run_id):
        if self.failing:
            raise Transient("connection refused")
        stage = "deleted" if self.deleted else "active"
        return SimpleNamespace(info=SimpleNamespace(lifecycle_stage=stage), data=SimpleNamespace(params=self.params))

    def set_tag(self, *args) -> None:
        if self.failing:
            raise Transient("connection refused")
        if self.revoked:
            raise self.denial


operations = st.lists(
    st.one_of(
        st.tuples(st.just("metrics"), st.lists(st.sampled_from(KEYS), min_size=1, max_size=4)),
        st.tuples(
            st.just("params"),
            st.dictionaries(st.sampled_from(["lr", "backbone", BAD_PARAM, SERVER_REFUSES]), st.just("1")),
        ),
        st.tuples(st.just("send"), st.none()),
        st.tuples(st.just("flush"), st.none()),
        st.tuples(st.just("store fails"), st.booleans()),
        st.tuples(st.just("grant revoked"), st.booleans()),
        st.tuples(st.just("run deleted"), st.none()),
    ),
    max_size=25,
)


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(steps=operations)
def test_every_row_is_acknowledged_or_handed_back(package, steps) -> None:
    from demo_project import background
    from demo_project.journal import Journal, read

    store = FakeStore()
    folder = tempfile.TemporaryDirectory()
    journal = Journal(Path(folder.name) / "journal.jsonl")
    denials = []
    with mock.patch.object(background.threading, "Thread"):
        sender = background.MetricSender(store, "run", interval_s=3600, journal=journal, on_denied=denials.append)
    logged, params, step = [], {}, 0
    for what, value in steps:
        if what == "metrics":
            rows = [(key, 0.5, 1000 + step, step) for key in value]
            step += 1
            sender.put(rows)
            logged += rows
        elif what == "params":
            sender.put_params(value)
            params.update(value)
        elif what == "send":
            sender.error = None
            sender._attempt()  # what the sender's thread does each round
            error = sender.error
            assert error is None or isinstance(error, Transient) or store.deleted or store.revoked, error
            assert not sender.denied or denials, "a denial is reported"
        elif what == "flush":  # the end of a command (validate, then test) hands back what is left
            assert set(sender.flush(0)) <= set(read(journal.path).metrics), "what is handed back is journaled"
        elif what == "store fails":
            store.failing = value
        elif what == "grant revoked":
            store.revoked = value
        else:
            store.deleted = True
    unsent = sender.flush(0)
    journaled = read(journal.path)  # as `make replay` would read it after a SIGKILL now
    folder.cleanup()

    acknowledged = set(store.metrics)
    assert set(unsent) <= set(journaled.metrics), "what was not sent is in the journal"
    for row in logged:
        assert row in acknowledged or row in journaled.metrics or row[0] in sender.rejected, row
    assert not acknowledged - set(logged), "nothing the training did not log"
    assert not any("@" in key for key in sender.params) and BAD_PARAM not in store.params
    assert SERVER_REFUSES not in store.params
    for key, value in params.items():
        if key not in (BAD_PARAM, SERVER_REFUSES):
            assert store.params.get(key) == value or journaled.params.get(key) == value, key
    if not (store.deleted or store.failing or store.revoked):  # a store that answers takes every metric, params or not
        sender.closed = False
        sender._send()
        assert all(r in set(store.metrics) or r[0] in sender.rejected for r in logged)
        assert not sender.params, "a param the store refuses is dropped, not retried forever"


def test_resuming_a_run_deleted_in_the_ui_is_refused_like_a_missing_one(package) -> None:
    from demo_project.run import RunMissing, RunSettings, TrackedRun

    deleted = SimpleNamespace(info=SimpleNamespace(lifecycle_stage="deleted"))
    client = SimpleNamespace(get_run=lambda run_id: deleted)
    refused = TrackedRun(RunSettings(), "sqlite:////tmp/none.db", "forecasting", "runs", "")
    with pytest.raises(RunMissing, match="deleted in the UI"):
        refused._continued(client, "0123456789abcdef0123456789abcdef")
    anew = TrackedRun(RunSettings(if_run_missing="new"), "sqlite:////tmp/none.db", "forecasting", "runs", "")
    assert anew._continued(client, "0123456789abcdef0123456789abcdef") is None, "a new run instead"
