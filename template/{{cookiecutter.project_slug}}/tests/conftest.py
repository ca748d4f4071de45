"""Shared fixtures: sample data made once per test session, and the CLI run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }} import sample_data

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package_name }}"


@pytest.fixture(scope="session")
def sample_path(tmp_path_factory: pytest.TempPathFactory):
    """``sample_path(task)``: the task's offline sample data, generated once per session."""
    root = tmp_path_factory.mktemp("sample")
    return lambda task: sample_data.write(task, root)


def run_cli(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m <package> ARGS`` in ``workdir`` with a private tracking store; fails with its output."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    result = subprocess.run(
        [sys.executable, "-m", PACKAGE, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result
