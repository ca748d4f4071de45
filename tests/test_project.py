"""The generated project as a user drives it: make targets, its own test suite, and a real install from scratch."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import bake, project_env, run_make


def test_make_help_lists_the_targets(project: Path) -> None:
    out = run_make(project, "help").stdout
    for target in (
        "install",
        "train",
        "resume",
        "test",
        "predict",
        "mlflow-ui",
        "mlflow-server",
        "lint",
        "sample-data",
    ):
        assert f"make {target} " in out
    assert "tasks: captioning forecasting transcription (TASK=captioning by default)" in out


def test_make_rejects_an_unknown_task_and_a_missing_input(project: Path) -> None:
    result = run_make(project, "train", "TASK=translation", check=False)
    assert result.returncode != 0
    assert (
        "TASK=translation is not in this project; choose one of: captioning forecasting transcription" in result.stderr
    )
    result = run_make(project, "predict", "TASK=forecasting", check=False)
    assert result.returncode != 0
    assert "ERROR: set INPUT" in result.stderr


@pytest.mark.slow
def test_generated_projects_own_tests_pass(project: Path) -> None:
    result = run_make(project, "test", timeout=1200)
    assert " passed" in result.stdout and " failed" not in result.stdout


@pytest.mark.slow
def test_make_install_from_scratch_then_train(tmp_path: Path) -> None:
    """The one test that installs a project's own environment, as a new user's first command does."""
    project = bake(tmp_path, image_captioning=False, speech_transcription=False)
    env = {k: v for k, v in project_env(project).items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    install = subprocess.run(["make", "install"], cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    python = project / ".venv" / "bin" / "python"
    versions = subprocess.run(
        [
            python,
            "-c",
            "import torch, torchvision, torchaudio, lightning, mlflow; "
            "print(torch.__version__, torchvision.__version__, torchaudio.__version__, lightning.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert versions.startswith("2.11.0") and " 0.26.0" in versions and " 2.6." in versions
    train = subprocess.run(
        [
            "make",
            "train",
            "ARGS=--trainer.max_epochs 1 --trainer.limit_train_batches 5 --trainer.enable_progress_bar false",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert (project / "mlflow.db").exists()
    shutil.rmtree(project / ".venv")  # about 6 GB
