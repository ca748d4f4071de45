"""The team's tracking server on PostgreSQL: `make mlflow-server BACKEND=postgresql://...` on a real PostgreSQL of
the test's own, many trainings at once, a database restart while they log, the schema upgrade and the migration.

PostgreSQL comes from Debian's packages (tests/postgres/install_postgres.sh); where it cannot be had, the tests that
need it are skipped, saying why.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PACKAGE, forecasting_project, project_env, run_cli, run_make
from pgserver import PostgresServer, free_port, postgres
from test_mlflow_server import QUICK, TINY, TRAIN_STEPS, assert_nothing_lost, serving, stop_group, train_at_once

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def team_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return forecasting_project(tmp_path_factory.mktemp("postgres"))


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer]:
    with postgres() as server:
        server.create_database("mlflow")
        yield server


@pytest.fixture(scope="module")
def server(team_project: Path, database: PostgresServer) -> Iterator[str]:
    """`make mlflow-server BACKEND=<the test's PostgreSQL>` with two workers (a 2-core machine); yields its URI."""
    with serving(team_project, f"BACKEND={database.uri()}", "MLFLOW_WORKERS=2") as uri:
        yield uri


def errors_of(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]


def test_backend_without_its_driver_is_one_error_line(team_project, tmp_path):
    shadow = tmp_path / "no-driver" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('psycopg hidden by the test')\n")
    backend = "postgresql://alice:hunter2@127.0.0.1:5432/mlflow"
    result = run_make(
        team_project, "mlflow-server", f"BACKEND={backend}", check=False, timeout=120, PYTHONPATH=str(shadow.parent)
    )
    (error,) = errors_of(result)
    assert "pip install -e '.[postgres]'" in error and "***@127.0.0.1:5432/mlflow" in error, error
    assert "hunter2" not in result.stdout + result.stderr  # nor is the command line echoed with it


def test_backend_that_is_not_there_is_one_error_line_naming_it(team_project):
    backend = f"postgresql://alice:hunter2@127.0.0.1:{free_port()}/mlflow"
    result = run_make(team_project, "mlflow-server", f"BACKEND={backend}", check=False, timeout=120)
    (error,) = errors_of(result)
    assert "unreachable" in error and "***@127.0.0.1" in error and "hunter2" not in error, error
    assert "Uvicorn" not in result.stdout + result.stderr  # no server started


def test_a_server_out_of_database_connections_delays_metrics_but_drops_none(package):
    """Under load, MLflow's SQL store answers BAD_REQUEST when its connection pool is exhausted: the sender
    keeps the metrics and sends them again, rather than taking the name for one the store rejects."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST

    class Busy:
        def __init__(self) -> None:
            self.refusals, self.stored = 3, []

        def log_batch(self, run_id, metrics=(), params=()):
            if self.refusals:
                self.refusals -= 1
                raise MlflowException("QueuePool limit of size 5 overflow 10 reached", error_code=BAD_REQUEST)
            self.stored += [(m.key, m.step) for m in metrics]

        def set_tag(self, *args) -> None:
            pass

    client = Busy()
    sender = importlib.import_module(f"{PACKAGE}.background").MetricSender(client, "run", interval_s=0.05)
    sender.put([("train/loss", 1.0, 0, step) for step in range(5)])
    assert sender.flush(timeout_s=30) == [] and client.refusals == 0
    assert client.stored == [("train/loss", step) for step in range(5)] and not sender.rejected


def metric_rows_twice(database: PostgresServer) -> list[tuple]:
    """Metric rows stored more than once (same run, key and step), read from the database itself. Lightning adds
    `epoch` to every dict it logs (a step's train/loss, val/loss, train/loss_epoch): that one repeats by design."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(database.uri().replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as db:
        return list(
            db.exec_driver_sql(
                "SELECT run_uuid, key, step, COUNT(*) FROM metrics WHERE key != 'epoch' "
                "GROUP BY run_uuid, key, step HAVING COUNT(*) > 1"
            )
        )


def assert_same_params(uri: str, names: list[str]) -> None:
    """Each run once, and every one with the full set of hyper-parameters the first has."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("forecasting")
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=1000) if r.info.run_name in names]
    assert sorted(r.info.run_name for r in runs) == sorted(names), "a run missing or stored twice"
    keys = {name: set(r.data.params) for name, r in ((r.info.run_name, r) for r in runs)}
    expected = keys[names[0]]
    assert len(expected) > 10 and {"hidden_size", "batch_size"} <= expected, sorted(expected)
    assert all(k == expected for k in keys.values()), {n: sorted(expected ^ k) for n, k in keys.items()}


@pytest.mark.slow
def test_eight_trainings_at_once_on_postgresql_lose_nothing(team_project, server, database):
    names = train_at_once(team_project, 8, server)
    assert_nothing_lost(server, names)
    assert_same_params(server, names)
    assert metric_rows_twice(database) == []


@pytest.mark.slow
def test_a_database_restart_while_trainings_log_loses_nothing(team_project, server, database, tmp_path):
    """PostgreSQL stops for a few seconds (fast shutdown: every connection cut) while two trainings log every
    step: they go on, the server reconnects, the sender retries, and each run ends FINISHED with every step."""
    from mlflow import MlflowClient

    epochs, count = 2, 2
    names = [f"restart-{i}-{time.monotonic_ns()}" for i in range(count)]
    marks = [tmp_path / f"step-{i}" for i in range(count)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", PACKAGE, "fit", *TINY, *QUICK, "--trainer.max_epochs", str(epochs),
             "--tracking.flush_interval_s", "0.2", "--tracking.run_name", name,
             "--trainer.callbacks+=faults.TouchAtStep"],
            cwd=team_project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=project_env(team_project, MLFLOW_TRACKING_URI=server, PYTHONPATH=str(TESTS), FAULT_STEP="3",
                            FAULT_STEP_DELAY="1.0", FAULT_FILE=str(mark), FAULT_END=str(tmp_path / f"end-{i}")),
        )
        for i, (name, mark) in enumerate(zip(names, marks, strict=True))
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not all(mark.exists() for mark in marks):
            assert all(p.poll() is None for p in processes), [p.communicate()[1][-2000:] for p in processes]
            assert time.monotonic() < deadline, "the trainings did not reach step 3 within 300 s"
            time.sleep(0.1)
        before, logged = database.process.pid, (team_project / "mlflow-server.log").stat().st_size
        database.stop()
        time.sleep(3)  # trainings log into a server without its database
        database.start()
        assert database.process.pid != before
        failures = []
        for name, process in zip(names, processes, strict=True):
            _, stderr = process.communicate(timeout=300)
            if process.returncode != 0:
                failures.append(f"{name}: exit {process.returncode}\n{stderr[-3000:]}")
        assert not failures, "\n\n".join(failures)
    finally:
        for process in processes:
            stop_group(process)
    with open(team_project / "mlflow-server.log", "rb") as log:
        log.seek(logged)
        assert b"Error in _log_batch" in log.read(), "no metrics were sent while the database was down"
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("forecasting")
    for name in names:
        (run,) = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{name}'")
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
        assert run.info.status == "FINISHED", (name, run.info.status)
        assert steps == sorted(set(steps)) and len(steps) == epochs * TRAIN_STEPS, (name, steps)
        assert len(client.get_metric_history(run.info.run_id, "val/loss")) == epochs, name
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}, name
    assert metric_rows_twice(database) == []


SWEEP_SPACE = """
epochs: 2
sampler: {class: RandomSampler, seed: 0}
pruner: {class: PercentilePruner, percentile: 1.0, n_startup_trials: 1, n_warmup_steps: 0}
params:
  model.init_args.lr: {type: float, low: 0.001, high: 0.02, log: true}
"""


@pytest.mark.slow
def test_a_sweep_of_two_workers_on_postgresql_nests_every_trial_once_with_every_step(
    team_project, server, database, tmp_path
):
    """A sweep of 2 workers against the server: one parent, each trial's child run once under it, its status as
    the study has it (trial 1 crashes; a harsh pruner stops some), and every metric step of every child there."""
    from mlflow import MlflowClient
    from optuna import load_study
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    (tmp_path / "space.yaml").write_text(SWEEP_SPACE)
    command = [sys.executable, "-m", f"{PACKAGE}.sweep", "run", "forecasting", "--name", "pg", "--trials", "4",
               "--workers", "2", "--space", str(tmp_path / "space.yaml"), "--", *TINY,
               "--tracking.system_metrics", "false", "--trainer.callbacks+=faults.RaiseInTrial"]  # fmt: skip
    env = project_env(team_project, MLFLOW_TRACKING_URI=server, PYTHONPATH=str(TESTS), FAULT_TRIAL="1")
    result = subprocess.run(command, cwd=team_project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    journal = JournalStorage(JournalFileBackend(str(team_project / "sweeps" / "forecasting-pg.journal")))
    study = load_study(study_name="forecasting-pg", storage=journal)
    trials = {t.number: t for t in study.trials}
    assert sorted(trials) == [0, 1, 2, 3] and trials[1].state.name == "FAIL", {n: t.state for n, t in trials.items()}
    spans = sorted((t.datetime_start, t.datetime_complete) for t in study.trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), "the two workers ran trials at once"

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("forecasting")
    runs = client.search_runs([experiment.experiment_id], "tags.`sweep.name` = 'pg'", max_results=1000)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_id == study.user_attrs["parent_run"] and parent.info.status == "FINISHED"
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == len(runs) - 1, "every run of the sweep is its parent or a child of it"
    numbers = sorted(int(r.data.tags["sweep.trial"]) for r in kids)
    assert numbers == [0, 1, 2, 3], numbers  # one child per trial: none lost, none twice
    for run in kids:
        trial = trials[int(run.data.tags["sweep.trial"])]
        state = trial.state.name
        assert run.info.status == ("FAILED" if state == "FAIL" else "FINISHED"), (trial.number, run.info.status)
        assert run.data.tags["sweep.state"].startswith(state), (trial.number, run.data.tags["sweep.state"])
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["model.init_args.lr"])
        assert f"sweep/trial-{trial.number}.log" in {a.path for a in client.list_artifacts(run.info.run_id, "sweep")}
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert len(steps) == len(set(steps)), (trial.number, steps)
        if state == "FAIL":  # raised at step 2 of its first epoch: what it logged before is there
            assert steps and set(steps) <= set(range(TRAIN_STEPS)), (trial.number, steps)
            continue
        epochs = trial.user_attrs["pruned_at_epoch"] + 1 if state == "PRUNED" else 2
        assert sorted(steps) == list(range(epochs * TRAIN_STEPS)), (trial.number, state, steps)
        assert len(client.get_metric_history(run.info.run_id, "val/loss")) == epochs, (trial.number, state)
    complete = sorted(n for n, t in trials.items() if t.state.name == "COMPLETE")
    assert complete, "no trial completed"
    parent_steps = sorted(m.step for m in client.get_metric_history(parent.info.run_id, "trial/val/loss"))
    assert parent_steps == complete, (parent_steps, complete)  # one point per complete trial, from both workers
    assert metric_rows_twice(database) == []


@pytest.mark.slow
def test_db_upgrade_backs_up_with_pg_dump_first(team_project, server, database):
    result = run_make(team_project, "mlflow-db-upgrade", f"BACKEND={database.uri()}", timeout=300)
    (backup,) = (team_project / "backups").glob("mlflow-*.dump")
    assert f"backups/{backup.name}" in result.stdout, result.stdout[-2000:]
    listing = subprocess.run(
        [database.bindir / "pg_restore", "--list", backup], capture_output=True, text=True, check=True
    ).stdout
    assert "TABLE public runs" in listing and "TABLE DATA public metrics" in listing, listing[-2000:]
    backup.unlink()
    # A backup that fails stops the upgrade, with one line that says so.
    gone = f"postgresql://mlflow@127.0.0.1:{free_port()}/mlflow"
    result = run_make(team_project, "mlflow-db-upgrade", f"BACKEND={gone}", check=False, timeout=300)
    (error,) = errors_of(result)
    assert "pg_dump" in error and "nothing was upgraded" in error, error
    assert not list((team_project / "backups").glob("mlflow-*")), "no half-written backup left"


@pytest.mark.slow
def test_migrate_copies_the_projects_runs_to_the_server_once(team_project, server):
    from mlflow import MlflowClient

    run_cli(team_project, "fit", *TINY, *QUICK, "--tracking.run_name", "to-migrate")  # into the project's SQLite
    local = MlflowClient(f"sqlite:///{team_project / 'mlflow.db'}")
    (source,) = local.search_runs([local.get_experiment_by_name("forecasting").experiment_id])
    for attempt in range(2):  # the second copies nothing again
        result = run_make(team_project, "mlflow-migrate", f"TO={server}", timeout=300)
        assert ("copied 1 runs" if attempt == 0 else "copied 0 runs") in result.stdout, result.stdout[-2000:]
    remote = MlflowClient(server)
    experiment = remote.get_experiment_by_name("forecasting")
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"  # the UI's training view
    (copy,) = remote.search_runs([experiment.experiment_id], "attributes.run_name = 'to-migrate'")
    assert copy.info.status == "FINISHED" and copy.data.tags["migrated_from"] == source.info.run_id
    assert copy.data.params == source.data.params
    assert set(copy.data.metrics) == set(source.data.metrics)
    for key in ("train/loss", "val/loss", "test/mase"):
        copied = sorted((m.step, m.value) for m in remote.get_metric_history(copy.info.run_id, key))
        assert copied == sorted((m.step, m.value) for m in local.get_metric_history(source.info.run_id, key)), key
    assert {a.path for a in remote.list_artifacts(copy.info.run_id)} == {
        a.path for a in local.list_artifacts(source.info.run_id)
    }
    assert copy.info.start_time == source.info.start_time and copy.info.end_time == source.info.end_time


def test_migrate_to_a_server_that_is_not_there_is_one_error_line(team_project):
    uri = f"http://127.0.0.1:{free_port()}"
    result = run_make(team_project, "mlflow-migrate", f"TO={uri}", check=False, timeout=120)
    (error,) = errors_of(result)
    assert uri in error and "unreachable" in error, error


def test_backend_from_and_to_never_reach_a_shell(team_project, tmp_path):
    witness = tmp_path / "pwned"
    for args in (
        ["mlflow-server", f"BACKEND=postgresql://x@127.0.0.1:{free_port()}/$(touch {witness})"],
        ["mlflow-db-upgrade", f"BACKEND=`touch {witness}`"],
        ["mlflow-migrate", f"TO=$(touch {witness})"],
        ["mlflow-migrate", "TO=http://127.0.0.1:1", f"FROM=x'; touch {witness}; '"],
    ):
        result = run_make(team_project, *args, check=False, timeout=120)
        (error,) = errors_of(result)
        assert not witness.exists(), f"make {' '.join(args)} ran a command"
