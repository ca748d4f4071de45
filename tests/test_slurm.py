"""SLURM for real: a one-node cluster on this machine runs a baked project's `scripts/slurm.sbatch` with 2 tasks.

The cluster comes from tests/slurm/start_cluster.sh (CI installs slurm with `start_cluster.sh --install`); without
slurm installed these tests are skipped. The daemons this module starts are stopped by PID when it ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import VENV, forecasting_project, mlflow_runs, project_env, run_make

START_CLUSTER = Path(__file__).parent / "slurm" / "start_cluster.sh"
TINY = (
    "--trainer.accelerator cpu --trainer.max_epochs 1 --trainer.limit_train_batches 5 "
    "--trainer.limit_val_batches 2 --trainer.limit_test_batches 2 --trainer.log_every_n_steps 1 "
    "--trainer.enable_progress_bar false"
)
JOB_TIMEOUT_S = 300
EPOCHS = 6  # of the requeued job: long enough to be stopped in the middle
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 and shutil.which("sbatch") is None, reason="slurm is not installed and installing it needs root"
)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running one-node cluster; yields the environment (SLURM_CONF) that its client commands need."""
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        pytest.skip(f"slurm is not installed: run {START_CLUSTER.relative_to(Path.cwd())} --install (as root) first")
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run([str(START_CLUSTER), str(state)], capture_output=True, text=True, timeout=180)
    pids = [int(line.split()[1]) for line in (state / "pids").read_text().split("\n") if line.strip()]
    try:
        assert started.returncode == 0, f"cluster did not start:\n{started.stdout}\n{started.stderr}"
        yield {"SLURM_CONF": str(state / "slurm.conf")}
    finally:
        for pid in reversed(pids):  # slurmd, slurmctld, then munged if this module started it
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 30
        for pid in pids:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaps it when it is our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def job_id(sbatch_stdout: str) -> str:
    """The id in sbatch's `Submitted batch job <id>`."""
    for line in sbatch_stdout.splitlines():
        if line.startswith("Submitted batch job "):
            return line.split()[-1]
    raise AssertionError(f"no job id in sbatch's output:\n{sbatch_stdout}")


def job_fields(job: str, env: dict[str, str]) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, ExitCode, Restarts, ...)."""
    shown = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True)
    return dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)


def wait_for_job(job: str, env: dict[str, str], output: Path, timeout_s: float = JOB_TIMEOUT_S) -> dict[str, str]:
    """Poll `scontrol show job` until the job ends; its fields (JobState, ExitCode, ...) as a dict."""
    deadline = time.monotonic() + timeout_s
    fields: dict[str, str] = {}
    while time.monotonic() < deadline:
        fields = job_fields(job, env)
        if fields.get("JobState") in DONE:
            return fields
        time.sleep(2)
    subprocess.run(["scancel", job], env=env, check=False)
    log = output.read_text()[-6000:] if output.exists() else "(no output file)"
    raise AssertionError(f"job {job} still {fields.get('JobState')} after {timeout_s} s; output:\n{log}")


def assert_one_finished_run(project: Path, fields: dict[str, str], output: Path) -> None:
    log = output.read_text() if output.exists() else "(no output file)"
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", f"{fields}\n{log[-6000:]}"
    runs = mlflow_runs(project, "forecasting")
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert {"train/loss", "test/mase"} <= set(run.data.metrics), sorted(run.data.metrics)
    assert "2 process(es)" in log, log[-3000:]


@pytest.fixture
def fresh_project(tmp_path: Path) -> Path:
    """A project of its own, so its mlflow.db does not exist yet when the job starts."""
    project = forecasting_project(tmp_path)
    assert not (project / "mlflow.db").exists()
    return project


@pytest.mark.slow
def test_sbatch_with_two_tasks_on_a_fresh_store_makes_one_finished_run(slurm, fresh_project):
    """Both ranks start at once under srun; the script prepares the store first, so they cannot race on it."""
    env = project_env(fresh_project, VENV=str(VENV), **slurm)
    submitted = subprocess.run(
        ["sbatch", "--nodes", "1", "--ntasks-per-node", "2", "scripts/slurm.sbatch", "forecasting", *TINY.split()],
        cwd=fresh_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = job_id(submitted.stdout)
    output = fresh_project / f"slurm-{job}.out"
    fields = wait_for_job(job, env, output)
    assert_one_finished_run(fresh_project, fields, output)
    assert fields["NumTasks"] == "2" and fields["Requeue"] == "1", fields


@pytest.mark.slow
def test_make_train_slurm_submits_the_script(slurm, fresh_project):
    result = run_make(fresh_project, "train-slurm", "TASK=forecasting", "NNODES=1", "NPROC=2", f"ARGS={TINY}", **slurm)
    job = job_id(result.stdout)
    env = project_env(fresh_project, **slurm)
    output = fresh_project / f"slurm-{job}.out"
    assert_one_finished_run(fresh_project, wait_for_job(job, env, output), output)


def test_script_without_a_task_explains_itself(fresh_project):
    result = subprocess.run(
        ["bash", "scripts/slurm.sbatch"], cwd=fresh_project, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "ERROR: name the task first" in result.stderr


def submit(project: Path, env: dict[str, str], *args: str) -> str:
    submitted = subprocess.run(
        ["sbatch", "--nodes", "1", "--ntasks-per-node", "1", "scripts/slurm.sbatch", "forecasting", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    return job_id(submitted.stdout)


@pytest.mark.slow
def test_two_jobs_in_one_project_one_requeued_both_finish_in_their_own_runs(slurm, fresh_project):
    """`scontrol requeue` stops a running job (SIGTERM: it saves a preemption checkpoint in runs/slurm/<job id>/) and
    starts it again, which continues its own run; the other job's checkpoints are never taken or deleted."""
    env = project_env(fresh_project, VENV=str(VENV), **slurm)
    longer = [*TINY.replace("max_epochs 1", f"max_epochs {EPOCHS}").split(), "--test_after_fit", "false"]
    jobs = {name: submit(fresh_project, env, *longer, "--tracking.run_name", name) for name in ("requeued", "other")}
    store = f"sqlite:///{fresh_project / 'mlflow.db'}"

    def validations(name: str) -> int:
        from mlflow import MlflowClient

        if not (fresh_project / "mlflow.db").exists():
            return 0
        client = MlflowClient(store)
        experiment = client.get_experiment_by_name("forecasting")
        runs = [] if experiment is None else client.search_runs([experiment.experiment_id], f"run_name = '{name}'")
        return len(client.get_metric_history(runs[0].info.run_id, "val/loss")) if runs else 0

    deadline = time.monotonic() + JOB_TIMEOUT_S
    outputs = [fresh_project / f"slurm-{job}.out" for job in jobs.values()]
    while not all(p.exists() and "MLflow run " in p.read_text() for p in outputs):  # both made the store
        assert time.monotonic() < deadline, "the jobs did not start their runs"
        time.sleep(1)
    while validations("requeued") < 2:  # a few epochs in, with checkpoints
        assert time.monotonic() < deadline, "the job to requeue did not get going"
        time.sleep(1)
    subprocess.run(["scontrol", "requeue", jobs["requeued"]], env=env, check=True, timeout=60)
    while job_fields(jobs["requeued"], env).get("JobState") != "PENDING":  # stopped; SLURM holds it ~2 minutes
        assert time.monotonic() < deadline, "the requeued job did not stop"
        time.sleep(1)
    subprocess.run(["scontrol", "update", f"JobId={jobs['requeued']}", "StartTime=now"], env=env, check=True)
    ended = {name: wait_for_job(job, env, fresh_project / f"slurm-{job}.out") for name, job in jobs.items()}
    for name, fields in ended.items():
        assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", (name, fields)
    assert ended["requeued"]["Restarts"] == "1" and ended["other"]["Restarts"] == "0"
    runs = {r.info.run_name: r for r in mlflow_runs(fresh_project, "forecasting")}
    assert sorted(runs) == ["other", "requeued"] and all(r.info.status == "FINISHED" for r in runs.values())
    from mlflow import MlflowClient

    client = MlflowClient(store)
    last = EPOCHS * 5 - 1  # 5 steps an epoch
    for run in runs.values():
        train = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        val = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
        for name, steps in (("train/loss", train), ("val/loss", val)):
            assert len(steps) == len(set(steps)) and max(steps) == last, f"{run.info.run_name} {name}: {sorted(steps)}"
    log = (fresh_project / f"slurm-{jobs['requeued']}.out").read_text()
    assert f"MLflow run {runs['requeued'].info.run_id} (continued)" in log, log[-3000:]
    assert not list((fresh_project / "runs" / "slurm").rglob("hpc_ckpt_*.ckpt")), "each job deletes its own at the end"
