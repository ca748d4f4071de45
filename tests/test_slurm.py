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


def wait_for_job(job: str, env: dict[str, str], output: Path, timeout_s: float = JOB_TIMEOUT_S) -> dict[str, str]:
    """Poll `scontrol show job` until the job ends; its fields (JobState, ExitCode, ...) as a dict."""
    deadline = time.monotonic() + timeout_s
    fields: dict[str, str] = {}
    while time.monotonic() < deadline:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True)
        fields = dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)
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
