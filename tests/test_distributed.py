"""Scaling out and surviving failures: DDP and torchrun on CPU (gloo), crashes, resume after SIGKILL, SIGTERM.

Each training ends with exactly one MLflow run, whatever the number of processes.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PACKAGE, forecasting_project, project_env, run_cli, run_make

pytestmark = pytest.mark.slow
QUICK = "--trainer.max_epochs 1 --trainer.enable_progress_bar false --trainer.accelerator cpu --test_after_fit false"


@pytest.fixture(scope="module")
def fproject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forecasting-only project with its sample data, for trainings that must not share a store."""
    return forecasting_project(tmp_path_factory.mktemp("dist"))


class Store:
    """A fresh SQLite tracking store per training: a new file, never one deleted under an open connection."""

    def __init__(self, folder: Path, name: str) -> None:
        self.uri = f"sqlite:///{folder / name}.db"

    @property
    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.uri}

    def runs(self, experiment: str = "forecasting") -> list:
        from mlflow import MlflowClient

        client = MlflowClient(self.uri)
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment!r} in {self.uri}"
        return client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])

    def steps(self, run_id: str, key: str) -> list[int]:
        from mlflow import MlflowClient

        history = MlflowClient(self.uri).get_metric_history(run_id, key)
        assert history, f"no {key} in run {run_id}"
        return sorted(m.step for m in history)


def final(run, key: str) -> float:
    return run.data.metrics[key]


def test_ddp_and_torchrun_match_a_single_process_run(fproject: Path, tmp_path: Path) -> None:
    # Two processes with half the batch each see every sample once per epoch, like one process with the full batch.
    stores = {name: Store(tmp_path, name) for name in ("single", "ddp", "torchrun")}
    run_make(fproject, "train", f"ARGS={QUICK} --data.batch_size 64", **stores["single"].env)
    run_make(fproject, "train", "TRAINER=ddp", "DEVICES=2", f"ARGS={QUICK} --data.batch_size 32", **stores["ddp"].env)
    # torchrun starts both ranks at once; on a fresh SQLite file that used to race (issue 5)
    run_make(
        fproject,
        "train-torchrun",
        "NPROC=2",
        "MASTER_PORT=29517",
        f"ARGS={QUICK} --data.batch_size 32",
        **stores["torchrun"].env,
    )
    runs = {name: store.runs() for name, store in stores.items()}
    for name, found in runs.items():
        assert len(found) == 1, f"{name}: one training must make exactly one MLflow run, found {len(found)}"
        assert found[0].info.status == "FINISHED"
    single, ddp, torchrun = (runs[name][0] for name in ("single", "ddp", "torchrun"))
    train_steps = stores["single"].steps(single.info.run_id, "train/loss")
    assert stores["ddp"].steps(ddp.info.run_id, "train/loss") == train_steps
    assert stores["torchrun"].steps(torchrun.info.run_id, "train/loss") == train_steps
    for run in (ddp, torchrun):
        assert final(run, "val/loss") == pytest.approx(final(single, "val/loss"), rel=0.25)
        assert final(run, "val/mase") == pytest.approx(final(single, "val/mase"), rel=0.25)
        assert final(run, "train/loss_epoch") == pytest.approx(final(single, "train/loss_epoch"), rel=0.25)


FAULTS = str(Path(__file__).parent)


def test_a_crashing_rank_ends_the_whole_job(fproject: Path) -> None:
    started = time.monotonic()
    result = run_make(
        fproject,
        "train",
        "TRAINER=ddp",
        "DEVICES=2",
        f"ARGS={QUICK} --trainer.callbacks+=faults.RaiseOnRank1",
        check=False,
        timeout=300,
        PYTHONPATH=FAULTS,
    )
    assert result.returncode != 0
    assert "injected failure on rank 1" in result.stderr
    assert time.monotonic() - started < 300


def train_until(project: Path, store: Store, signal_name: str, step: int, epochs: int, log: Path) -> int:
    """Train with a fault that sends ``signal_name`` to the process at ``step``; returns the exit code."""
    args = [sys.executable, "-m", PACKAGE, "fit", "--config", "configs/forecasting.yaml", "--test_after_fit", "false"]
    args += ["--trainer.max_epochs", str(epochs), "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.accelerator", "cpu", "--trainer.callbacks+=faults.SignalAtStep"]
    faults = {"FAULT_SIGNAL": signal_name, "FAULT_STEP": str(step), "FAULT_DELAY": "3"}
    env = project_env(project, PYTHONPATH=FAULTS, **faults, **store.env)
    with log.open("w") as out:
        return subprocess.run(args, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600).returncode


def last_checkpoints(project: Path) -> list[Path]:
    return list((project / "runs" / "forecasting").glob("*/checkpoints/last.ckpt"))


def test_resume_after_sigkill_continues_the_same_run(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "resume")
    for old in last_checkpoints(fproject):
        old.unlink()
    code = train_until(fproject, store, "SIGKILL", step=50, epochs=3, log=tmp_path / "fit.log")  # in epoch 2
    assert code == -signal.SIGKILL
    assert store.runs()[0].info.status == "RUNNING"  # nothing could mark it
    resume = "ARGS=--trainer.max_epochs 3 --trainer.enable_progress_bar false --test_after_fit false"
    run_make(fproject, "resume", resume, **store.env)
    runs = store.runs()
    assert len(runs) == 1, "resuming must continue the run, not start a second one"
    run = runs[0]
    assert run.info.status == "FINISHED"
    val = store.steps(run.info.run_id, "val/loss")
    assert len(set(val)) == 3, f"one validation per epoch across the restart, got steps {val}"
    train = sorted(set(store.steps(run.info.run_id, "train/loss")))
    gaps = {b - a for a, b in zip(train, train[1:], strict=False)}
    assert gaps == {10}, f"train/loss steps must continue without gaps, got {train}"
    assert train[-1] >= val[-1] - 10


def test_sigterm_marks_the_run_killed_and_keeps_a_checkpoint(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "sigterm")
    code = train_until(fproject, store, "SIGTERM", step=20, epochs=50, log=tmp_path / "fit.log")  # before a checkpoint
    assert code == 128 + signal.SIGTERM, (tmp_path / "fit.log").read_text()[-3000:]
    run = store.runs()[0]
    assert run.info.status == "KILLED"
    assert (fproject / "runs" / "forecasting" / run.info.run_id / "checkpoints" / "last.ckpt").exists()
    assert "make resume" in (tmp_path / "fit.log").read_text()


SLURM_TASK = {
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_JOB_NAME": "train",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NODELIST": "localhost",
}


def test_a_slurm_job_resumes_its_own_preemption_checkpoint_and_refuses_another_jobs(
    fproject: Path, tmp_path: Path
) -> None:
    """Under SLURM, Lightning resumes from any runs/hpc_ckpt_*.ckpt when fit has no ckpt_path."""
    store = Store(tmp_path, "hpc")
    job = {**SLURM_TASK, "SLURM_JOB_ID": "100", **store.env}
    fit = ("fit", "--config", "configs/forecasting.yaml", *QUICK.split())
    run_cli(fproject, *fit, **job)
    run = store.runs()[0]
    hpc = fproject / "runs" / "hpc_ckpt_1.ckpt"  # what Lightning writes on SIGUSR1 before the job is requeued
    shutil.copy(fproject / "runs" / "forecasting" / run.info.run_id / "checkpoints" / "last.ckpt", hpc)
    try:
        other = run_cli(fproject, *fit, check=False, **{**job, "SLURM_JOB_ID": "200"})
        assert other.returncode != 0
        assert f"{hpc.relative_to(fproject)} is a preemption checkpoint of SLURM job 100" in other.stderr
        assert "Traceback" not in other.stderr
        assert len(store.runs()) == 1, "the refused job must not start a run"
        untracked = run_cli(fproject, *fit, "--trainer.logger", "false", check=False, **{**job, "SLURM_JOB_ID": "200"})
        assert untracked.returncode != 0 and "is a preemption checkpoint of SLURM job 100" in untracked.stderr

        run_cli(fproject, *fit, "--trainer.max_epochs", "2", **job)  # job 100, requeued
        runs = store.runs()
        assert len(runs) == 1, "the requeued job continues its run"
        assert runs[0].info.status == "FINISHED"
        assert len(set(store.steps(run.info.run_id, "val/loss"))) == 2, "epoch 1 from the checkpoint, then epoch 2"
    finally:
        hpc.unlink(missing_ok=True)
