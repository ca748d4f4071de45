"""MLflow for teams: a real `make mlflow-server`, trainings logging to it over HTTP, several at once, and a server
that is not there.

Each test that needs a server gets one on a free port of 127.0.0.1, stopped by its process group when it ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import PACKAGE, VENV, forecasting_project, project_env, run_cli

TINY = [
    "--config", "configs/forecasting.yaml",
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "2",
    "--trainer.limit_test_batches", "2", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
]  # fmt: skip
QUICK = ["--test_after_fit", "false"]
TRAIN_STEPS = 5
SERVER_START_TIMEOUT_S = 240  # four uvicorn workers import MLflow; minutes on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """Stop a process started with its own session, and everything it started (the server's workers)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(process.pid, 0)  # any of the group still there?
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout_s)


@pytest.fixture(scope="module")
def team_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forecasting project of this module's own, so its stores hold only the runs these tests make."""
    return forecasting_project(tmp_path_factory.mktemp("team"))


@contextlib.contextmanager
def serving(project: Path, *make_args: str) -> Iterator[str]:
    """`make mlflow-server MAKE_ARGS` on a free port of 127.0.0.1 until it answers /health; yields its URI, then
    stops it and everything it started. Its output goes to mlflow-server.log in the project."""
    port = free_port()
    log = open(project / "mlflow-server.log", "w")  # noqa: SIM115 - open while the server runs
    process = subprocess.Popen(
        ["make", "-C", str(project), f"VENV={VENV}", "mlflow-server", f"MLFLOW_PORT={port}", *make_args],
        # MLflow 3's server also starts GenAI job workers (huey), a dozen processes that tracking does not need.
        env=project_env(project, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            assert process.poll() is None, (project / "mlflow-server.log").read_text()[-4000:]
            try:
                if requests.get(f"{uri}/health", timeout=2).status_code < 500:  # 401 too: it answers
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"no /health after {SERVER_START_TIMEOUT_S} s"
            time.sleep(0.5)
        yield uri
    finally:
        stop_group(process)
        log.close()


@pytest.fixture(scope="module")
def server(team_project: Path) -> Iterator[str]:
    """`make mlflow-server` on a free port; yields its URI."""
    with serving(team_project) as uri:
        yield uri


def train_at_once(project: Path, count: int, uri: str, timeout_s: float = 420) -> list[str]:
    """Start ``count`` short trainings together against ``uri``; their run names, once all have exited 0."""
    names = [f"together-{i}-{os.getpid()}-{time.monotonic_ns()}" for i in range(count)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", PACKAGE, "fit", *TINY, *QUICK, "--tracking.run_name", name],
            cwd=project,
            env=project_env(project, MLFLOW_TRACKING_URI=uri),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for name in names
    ]
    deadline = time.monotonic() + timeout_s
    failures = []
    try:
        for name, process in zip(names, processes, strict=True):
            _, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if process.returncode != 0:
                failures.append(f"{name}: exit {process.returncode}\n{stderr[-3000:]}")
    finally:
        for process in processes:
            stop_group(process)
    assert not failures, "\n\n".join(failures)
    return names


def assert_nothing_lost(uri: str, names: list[str]) -> None:
    """Every run is there, FINISHED, with every step of its loss history and its config artifact."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("forecasting")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], max_results=1000)}
    missing = [n for n in names if n not in runs]
    assert not missing, f"runs missing from {uri}: {missing}"
    problems = []
    for name in names:
        run = runs[name]
        history = client.get_metric_history(run.info.run_id, "train/loss")
        steps = sorted(m.step for m in history)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        if run.info.status != "FINISHED":
            problems.append(f"{name}: status {run.info.status}")
        if len(steps) != TRAIN_STEPS or len(set(steps)) != TRAIN_STEPS:
            problems.append(f"{name}: train/loss steps {steps}, expected {TRAIN_STEPS} distinct")
        if len(client.get_metric_history(run.info.run_id, "val/loss")) != 1:
            problems.append(f"{name}: val/loss not logged once")
        if "config.yaml" not in artifacts:
            problems.append(f"{name}: artifacts {sorted(artifacts)} lack config.yaml")
    assert not problems, "\n".join(problems)


def test_training_logs_metrics_and_artifacts_over_http(team_project, server):
    from mlflow import MlflowClient

    run_cli(team_project, "fit", *TINY, "--tracking.run_name", "over-http", MLFLOW_TRACKING_URI=server)
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("forecasting")
    (run,) = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'over-http'")
    assert run.info.status == "FINISHED"
    assert {"train/loss", "val/loss", "test/mase"} <= set(run.data.metrics), sorted(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == TRAIN_STEPS
    # The server proxies artifacts: the client never sees the server's disk, only mlflow-artifacts:/ URIs.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints", "examples"} <= artifacts, sorted(artifacts)
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml"))
    assert "PriceForecaster" in config.read_text()
    stored = list((team_project / "mlartifacts").rglob("config.yaml"))
    assert any(run.info.run_id in str(p) for p in stored), stored


@pytest.mark.slow
def test_four_trainings_at_once_against_the_server_lose_nothing(team_project, server):
    names = train_at_once(team_project, 4, server)
    assert_nothing_lost(server, names)


@pytest.mark.slow
def test_four_trainings_at_once_against_a_fresh_sqlite_store_lose_nothing(team_project, tmp_path):
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    names = train_at_once(team_project, 4, uri)
    assert_nothing_lost(uri, names)


def test_unreachable_server_fails_fast_naming_the_uri(team_project):
    """Fails as soon as the CLI has started: no longer than starting up and printing the config takes (+ slack)."""
    started = time.monotonic()
    run_cli(team_project, "fit", *TINY, "--print_config", timeout=300)
    startup = time.monotonic() - started
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = run_cli(team_project, "fit", *TINY, check=False, timeout=300, MLFLOW_TRACKING_URI=uri)
    seconds = time.monotonic() - started
    assert result.returncode != 0
    assert uri in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Epoch" not in result.stdout + result.stderr  # failed before any training
    # Both times are mostly Python imports (seconds on an idle machine, a minute on a busy one).
    assert seconds < 1.5 * startup + 15, f"took {seconds:.0f} s to fail; starting up takes {startup:.0f} s"


def test_unreachable_server_stops_make_train_before_training(team_project):
    uri = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        ["make", "-C", str(team_project), f"VENV={VENV}", "train", "TASK=forecasting"],
        env=project_env(team_project, MLFLOW_TRACKING_URI=uri),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert uri in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.mark.slow
def test_a_server_that_stops_answering_neither_stalls_nor_hangs_the_training(team_project, server, tmp_path):
    """The server hangs during training: training goes on at full speed, and the command ends within
    `tracking.end_timeout_s` of the end of testing, with the metrics it could not send saved to a CSV file."""
    from mlflow import MlflowClient
    from proxy import FreezableProxy

    proxy = FreezableProxy(int(server.rsplit(":", 1)[1]))
    marks = {"FAULT_STEP": "8", "FAULT_FILE": str(tmp_path / "step"), "FAULT_END": str(tmp_path / "end")}
    process = subprocess.Popen(
        [sys.executable, "-m", PACKAGE, "fit", *TINY, "--trainer.max_epochs", "3", "--tracking.end_timeout_s", "10",
         "--tracking.flush_interval_s", "0.2",
         "--tracking.run_name", "hung", "--trainer.callbacks+=faults.TouchAtStep"],
        cwd=team_project, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env=project_env(team_project, MLFLOW_TRACKING_URI=proxy.uri, PYTHONPATH=str(Path(__file__).parent), **marks),
    )  # fmt: skip
    try:
        while not (tmp_path / "step").exists():
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        proxy.freeze()
        stdout, stderr = process.communicate(timeout=240)
        exited = time.time()
    finally:
        stop_group(process)
        proxy.close()
    assert process.returncode == 0, stderr[-3000:]
    assert exited - float((tmp_path / "end").read_text()) < 10 + 20, "ended within end_timeout_s (+ exit)"
    saved = re.search(r"could not send (\d+) metrics to MLflow .*; they are saved in (\S+)", stderr)
    assert saved, stderr[-3000:]
    rows = Path(team_project, saved.group(2)).read_text().splitlines()
    assert len(rows) == int(saved.group(1)) > 0 and any(row.startswith("test/mase,") for row in rows)
    assert "did not answer within 10 s" in stderr and "stays RUNNING" in stderr
    (run,) = MlflowClient(server).search_runs(
        [MlflowClient(server).get_experiment_by_name("forecasting").experiment_id], "attributes.run_name = 'hung'"
    )
    assert run.info.status == "RUNNING" and "train/loss" in run.data.metrics  # what was sent before the hang
