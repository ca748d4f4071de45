"""Runs survive faults: each fault is injected deterministically (tests/faults.py) into a short forecasting training
in a project of this module's own, each training with a fresh tracking store.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import Store, forecasting_project, run_cli, run_make

FAULTS = str(Path(__file__).parent)
QUICK = [
    "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "10", "--trainer.limit_val_batches", "3",
    "--trainer.limit_test_batches", "3", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def fproject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return forecasting_project(tmp_path_factory.mktemp("faults"))


def fit(project: Path, store: Store, *args: str, check: bool = True, **env: str):
    command = ["fit", "--config", "configs/forecasting.yaml", *QUICK, *args]
    return run_cli(project, *command, check=check, PYTHONPATH=FAULTS, **store.env, **env)


def checkpoints_of(project: Path, run_id: str) -> Path:
    return project / "runs" / "forecasting" / run_id / "checkpoints"


def test_failed_uploads_leave_a_finished_run_that_names_them(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "full-disk")
    result = fit(fproject, store, "--trainer.callbacks+=faults.BreakArtifactUploads")
    (run,) = store.runs()
    assert run.info.status == "FINISHED", "an upload that fails must not leave the run RUNNING"
    assert {"train/loss", "val/loss", "test/mase"} <= set(run.data.metrics), "training and testing went on"
    failed = run.data.tags["upload_failures"]
    for what in ("config.yaml", "examples/val_epoch000", "examples/test", "checkpoint"):
        assert what in failed, failed
    assert "could not upload config.yaml to MLflow: [Errno 28] No space left on device" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_metric_name_mlflow_rejects_is_dropped_with_one_warning(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "bad-name")
    result = fit(fproject, store, "--trainer.callbacks+=faults.LogRejectedMetric", "--trainer.log_every_n_steps", "2")
    (run,) = store.runs()
    assert run.info.status == "FINISHED"
    assert "val/acc@1" not in run.data.metrics
    assert store.steps(run.info.run_id, "val/fine") == [10, 20], "its neighbours in the same batch arrive"
    assert store.steps(run.info.run_id, "train/loss") == list(range(1, 20, 2)), "and everything logged later"
    assert result.stderr.count("MLflow rejects the metric 'val/acc@1'") == 1


def test_kill_9_while_saving_a_checkpoint_leaves_the_previous_one_whole(fproject: Path, tmp_path: Path) -> None:
    """Lightning's own saving goes through $TMPDIR; on another file system (here /dev/shm, on clusters a node's
    local disk) its final move is a copy, which a kill cuts short."""
    store = Store(tmp_path, "kill-while-saving")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other_file_system:
        result = fit(
            fproject, store, "--trainer.callbacks+=faults.KillWhileSaving", "--test_after_fit", "false",
            check=False, FAULT_STEP="11", TMPDIR=other_file_system,
        )  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    (run,) = store.runs()
    folder = checkpoints_of(fproject, run.info.run_id)
    for name in ("last.ckpt", "best.ckpt"):
        checkpoint = torch.load(folder / name, map_location="cpu", weights_only=True)
        assert checkpoint["global_step"] == 10, f"{name} is the first epoch's, whole"

    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((folder / "last.ckpt").read_bytes()[:40_000])
    prices = fproject / "data" / "sample" / "forecasting" / "prices.csv"
    commands = {
        "resume": ["fit", *QUICK, "--ckpt_path", str(broken)],
        "test": ["test", "--ckpt_path", str(broken)],
        "predict": ["predict", "--ckpt_path", str(broken), "--data.predict_path", str(prices)],
    }
    for name, command in commands.items():
        failed = run_cli(fproject, command[0], "--config", "configs/forecasting.yaml", *command[1:], check=False)
        assert failed.returncode == 1, name
        assert f"ERROR: '{broken}' is not a readable checkpoint" in failed.stderr, (name, failed.stderr[-2000:])
        assert "Traceback" not in failed.stderr, name


def test_resume_picks_the_run_and_says_which(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "two-runs")
    fit(fproject, store, "--test_after_fit", "false", "--tracking.run_name", "older")
    fit(fproject, store, "--test_after_fit", "false", "--tracking.run_name", "newer")
    runs = {r.info.run_name: r.info.run_id for r in store.runs()}
    resume = "ARGS=--trainer.max_epochs 3 --trainer.limit_train_batches 10 --trainer.limit_val_batches 3 " + (
        "--trainer.enable_progress_bar false --test_after_fit false"
    )
    newest = run_make(fproject, "resume", resume, **store.env).stdout
    assert f"MLflow run {runs['newer']} (continued)" in newest
    chosen = run_make(fproject, "resume", resume.replace("max_epochs 3", "max_epochs 4"), f"RUN={runs['older']}",
                      **store.env).stdout  # fmt: skip
    assert f"MLflow run {runs['older']} (continued)" in chosen
    ended = {r.info.run_name: r for r in store.runs()}
    assert len(ended) == 2 and all(r.info.status == "FINISHED" for r in ended.values())
    assert len(store.steps(runs["older"], "val/loss")) == 4 and len(store.steps(runs["newer"], "val/loss")) == 3

    unknown = run_make(fproject, "resume", resume, "RUN=0123456789abcdef0123456789abcdef", check=False, **store.env)
    assert unknown.returncode != 0 and "no last.ckpt of run 0123456789abcdef0123456789abcdef" in unknown.stderr

    elsewhere = Store(tmp_path, "empty")  # the store the checkpoint's run was in is gone
    missing = run_make(fproject, "resume", resume, check=False, **elsewhere.env)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert f"the checkpoint belongs to MLflow run {runs['older']}, which" in missing.stderr
    assert "--tracking.if_run_missing new" in missing.stderr
    run_make(fproject, "resume", resume + " --tracking.if_run_missing new", **elsewhere.env)
    (fresh,) = elsewhere.runs()
    assert fresh.info.status == "FINISHED" and fresh.info.run_id != runs["older"]


def test_kill_9_then_a_new_training_marks_the_dead_run_killed(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "dead")
    killed = fit(
        fproject, store, "--trainer.callbacks+=faults.SignalAtStep", "--trainer.max_epochs", "5",
        check=False, FAULT_SIGNAL="SIGKILL", FAULT_STEP="12",
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    (dead,) = store.runs()
    assert dead.info.status == "RUNNING"  # nothing could mark it then
    listed = run_make(fproject, "runs", **store.env).stdout
    assert f"{dead.info.run_id}  RUNNING (its process is gone" in listed
    fit(fproject, store, "--test_after_fit", "false")
    runs = {r.info.run_id: r for r in store.runs()}
    assert runs[dead.info.run_id].info.status == "KILLED"
    assert "its process died" in runs[dead.info.run_id].data.tags["process.ended"]
    shutil.rmtree(checkpoints_of(fproject, dead.info.run_id).parent)
