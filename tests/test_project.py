"""The generated project as a user drives it: make targets and its own test suite (install: test_install.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_make


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
        "lock",
        "update-template",
        "check-template",
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
