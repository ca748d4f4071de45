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
from conftest import PACKAGE, Store, forecasting_project, project_env, run_cli, run_make

pytestmark = pytest.mark.slow
QUICK = "--trainer.max_epochs 1 --trainer.enable_progress_bar false --trainer.accelerator cpu --test_after_fit false"


@pytest.fixture(scope="module")
def fproject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forecasting-only project with its sample data, for trainings that must not share a store."""
    return forecasting_project(tmp_path_factory.mktemp("dist"))


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

    # Resuming under DDP: every rank continues from the checkpoint rank 0 resolved, even if `last` would now name
    # another one (TouchAtStart makes the single-process run's last.ckpt the newest before the other rank starts).
    newest = fproject / "runs" / "forecasting" / torchrun.info.run_id / "checkpoints" / "last.ckpt"
    touched = fproject / "runs" / "forecasting" / single.info.run_id / "checkpoints" / "last.ckpt"
    record = tmp_path / "resumed-from"
    resume = QUICK.replace("max_epochs 1", "max_epochs 2") + " --data.batch_size 32"
    resume += " --trainer.callbacks+=faults.TouchAtStart --trainer.callbacks+=faults.RecordCheckpointPath"
    run_make(fproject, "resume", "TRAINER=ddp", "DEVICES=2", f"ARGS={resume}", **stores["torchrun"].env,
             PYTHONPATH=FAULTS, FAULT_TOUCH=str(touched), FAULT_RECORD=str(record))  # fmt: skip
    resumed = [(fproject / Path(f"{record}.{rank}").read_text()).resolve() for rank in (0, 1)]
    assert resumed == [newest.resolve()] * 2, "both ranks continue from what rank 0 resolved"
    (continued,) = stores["torchrun"].runs()
    assert continued.info.status == "FINISHED" and len(stores["torchrun"].steps(torchrun.info.run_id, "val/loss")) == 2


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
    killed = store.runs()[0]
    assert killed.info.status == "RUNNING"  # nothing could mark it
    assert f"{killed.info.run_id}  RUNNING (its process is gone" in run_make(fproject, "runs", **store.env).stdout
    resume = "ARGS=--trainer.max_epochs 3 --trainer.enable_progress_bar false --test_after_fit false"
    resumed = run_make(fproject, "resume", resume, **store.env)
    assert f"MLflow run {killed.info.run_id} (continued)" in resumed.stdout
    runs = store.runs()
    assert len(runs) == 1, "resuming must continue the run, not start a second one"
    run = runs[0]
    assert run.info.status == "FINISHED"
    val = store.steps(run.info.run_id, "val/loss")
    assert len(val) == 3, f"one validation per epoch across the restart, no step twice, got steps {val}"
    # the steps logged between the last checkpoint and the kill are run again after resuming: logged once
    train = store.steps(run.info.run_id, "train/loss")
    assert len(train) == len(set(train)), f"train/loss logged some steps twice: {train}"
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


def test_slurm_jobs_keep_their_preemption_checkpoints_apart(fproject: Path, tmp_path: Path) -> None:
    """Under SLURM, Lightning resumes from the newest hpc_ckpt_<n>.ckpt of the trainer's root folder when fit has no
    ckpt_path: each job has a folder of its own (runs/slurm/<job id>), so a requeued job continues its own
    training and another job in the same project starts its own."""
    store = Store(tmp_path, "hpc")
    job = {**SLURM_TASK, "SLURM_JOB_ID": "100", **store.env}
    fit = ("fit", "--config", "configs/forecasting.yaml", *QUICK.split())
    run_cli(fproject, *fit, **job)
    (first,) = store.runs()
    last = fproject / "runs" / "forecasting" / first.info.run_id / "checkpoints" / "last.ckpt"
    hpc = fproject / "runs" / "slurm" / "100" / "hpc_ckpt_1.ckpt"  # what Lightning writes on SIGUSR1 before a requeue
    hpc.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(last, hpc)
    stray = fproject / "runs" / "slurm" / "200" / "hpc_ckpt_1.ckpt"
    try:
        other = run_cli(fproject, *fit, **{**job, "SLURM_JOB_ID": "300"})  # another job meanwhile: its own run
        assert f"MLflow run {first.info.run_id}" not in other.stdout and hpc.exists()
        assert len(store.runs()) == 2

        stray.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(last, stray)  # job 100's checkpoint moved by hand into job 200's folder
        refused = run_cli(fproject, *fit, check=False, **{**job, "SLURM_JOB_ID": "200"})
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert "is a preemption checkpoint of SLURM job 100, not of this job (200)" in refused.stderr
        untracked = run_cli(fproject, *fit, "--trainer.logger", "false", check=False, **{**job, "SLURM_JOB_ID": "200"})
        assert untracked.returncode != 0 and "is a preemption checkpoint of SLURM job 100" in untracked.stderr
        assert len(store.runs()) == 2, "the refused job must not start a run"

        requeued = run_cli(fproject, *fit, "--trainer.max_epochs", "2", **job)  # job 100 again, requeued
        assert f"MLflow run {first.info.run_id} (continued)" in requeued.stdout
        runs = {r.info.run_id: r for r in store.runs()}
        assert len(runs) == 2 and runs[first.info.run_id].info.status == "FINISHED"
        assert len(store.steps(first.info.run_id, "val/loss")) == 2, "epoch 1 from the checkpoint, then epoch 2"
    finally:
        shutil.rmtree(fproject / "runs" / "slurm", ignore_errors=True)
