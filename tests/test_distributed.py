"""Scaling out and surviving failures: DDP and torchrun on CPU (gloo), crashes, resume after SIGKILL, SIGTERM.

Each training ends with exactly one MLflow run, whatever the number of processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PACKAGE, bake, mlflow_runs, project_env, run_make

pytestmark = pytest.mark.slow
QUICK = "--trainer.max_epochs 1 --trainer.enable_progress_bar false --trainer.accelerator cpu --test_after_fit false"


@pytest.fixture(scope="module")
def fproject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forecasting-only project with its sample data, for trainings that must not share a store."""
    project = bake(tmp_path_factory.mktemp("dist"), image_captioning=False, speech_transcription=False)
    run_make(project, "sample-data")
    return project


def fresh_store(project: Path) -> None:
    for name in ("mlflow.db", "mlflow.db.lock"):
        (project / name).unlink(missing_ok=True)


def steps(project: Path, run_id: str, key: str) -> list[int]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def final(run, key: str) -> float:
    return run.data.metrics[key]


def test_ddp_and_torchrun_match_a_single_process_run(fproject: Path) -> None:
    # Two processes with half the batch each see every sample once per epoch, like one process with the full batch.
    fresh_store(fproject)
    run_make(fproject, "train", f"ARGS={QUICK} --data.batch_size 64")
    single = mlflow_runs(fproject, "forecasting")
    assert len(single) == 1
    fresh_store(fproject)
    run_make(fproject, "train", "TRAINER=ddp", "DEVICES=2", f"ARGS={QUICK} --data.batch_size 32")
    ddp = mlflow_runs(fproject, "forecasting")
    assert len(ddp) == 1, "DDP must make exactly one MLflow run"
    fresh_store(fproject)  # torchrun starts both ranks at once on a fresh SQLite file: the race of issue 5
    run_make(fproject, "train-torchrun", "NPROC=2", "MASTER_PORT=29517", f"ARGS={QUICK} --data.batch_size 32")
    torchrun = mlflow_runs(fproject, "forecasting")
    assert len(torchrun) == 1, "torchrun must make exactly one MLflow run"
    for run in (single[0], ddp[0], torchrun[0]):
        assert run.info.status == "FINISHED"
    assert steps(fproject, ddp[0].info.run_id, "train/loss") == steps(fproject, single[0].info.run_id, "train/loss")
    for run in (ddp[0], torchrun[0]):
        assert final(run, "val/loss") == pytest.approx(final(single[0], "val/loss"), rel=0.25)
        assert final(run, "val/mase") == pytest.approx(final(single[0], "val/mase"), rel=0.25)


def test_a_crashing_rank_ends_the_whole_job(fproject: Path, tmp_path: Path) -> None:
    (tmp_path / "crash.py").write_text(
        "from lightning.pytorch import Callback\n\n\n"
        "class CrashOnRank1(Callback):\n"
        "    def on_train_batch_end(self, trainer, *args):\n"
        "        if trainer.global_rank == 1 and trainer.global_step == 3:\n"
        "            raise RuntimeError('injected failure on rank 1')\n"
    )
    started = time.monotonic()
    result = run_make(
        fproject,
        "train",
        "TRAINER=ddp",
        "DEVICES=2",
        f"ARGS={QUICK} --trainer.callbacks+=crash.CrashOnRank1",
        check=False,
        timeout=300,
        PYTHONPATH=str(tmp_path),
    )
    assert result.returncode != 0
    assert "injected failure on rank 1" in result.stderr
    assert time.monotonic() - started < 300


def start_training(project: Path, epochs: int, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", PACKAGE, "fit", "--config", "configs/forecasting.yaml", "--test_after_fit", "false"]
    args += [
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.accelerator",
        "cpu",
    ]
    return subprocess.Popen(
        args,
        cwd=project,
        env=project_env(project),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def last_checkpoints(project: Path) -> list[Path]:
    return list((project / "runs" / "forecasting").glob("*/checkpoints/last.ckpt"))


def test_resume_after_sigkill_continues_the_same_run(fproject: Path, tmp_path: Path) -> None:
    fresh_store(fproject)
    for old in (fproject / "runs" / "forecasting").glob("*/checkpoints/last.ckpt"):
        old.unlink()
    process = start_training(fproject, epochs=3, log=tmp_path / "fit.log")
    try:
        wait_for(lambda: bool(last_checkpoints(fproject)), 300, "the first last.ckpt")
        time.sleep(2)  # into the second epoch
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    run_make(
        fproject, "resume", "ARGS=--trainer.max_epochs 3 --trainer.enable_progress_bar false --test_after_fit false"
    )
    runs = mlflow_runs(fproject, "forecasting")
    assert len(runs) == 1, "resuming must continue the run, not start a second one"
    run = runs[0]
    assert run.info.status == "FINISHED"
    val = steps(fproject, run.info.run_id, "val/loss")
    assert len(set(val)) == 3, f"one validation per epoch across the restart, got steps {val}"
    train = sorted(set(steps(fproject, run.info.run_id, "train/loss")))
    gaps = {b - a for a, b in zip(train, train[1:], strict=False)}
    assert gaps == {10}, f"train/loss steps must continue without gaps, got {train}"
    assert train[-1] >= val[-1] - 10


def test_sigterm_marks_the_run_killed_and_keeps_a_checkpoint(fproject: Path, tmp_path: Path) -> None:
    fresh_store(fproject)
    for old in last_checkpoints(fproject):
        old.unlink()
    process = start_training(fproject, epochs=50, log=tmp_path / "fit.log")
    try:
        wait_for(lambda: bool(last_checkpoints(fproject)), 300, "the first last.ckpt")
        last_checkpoints(fproject)[0].unlink()  # the one SIGTERM saves must be new
        time.sleep(2)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0, (tmp_path / "fit.log").read_text()[-3000:]
    run = mlflow_runs(fproject, "forecasting")[0]
    assert run.info.status == "KILLED"
    assert (fproject / "runs" / "forecasting" / run.info.run_id / "checkpoints" / "last.ckpt").exists()
