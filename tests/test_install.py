"""A real `make install` from scratch in a baked project, then `make train` in the environment it made.

In a file of its own so that pytest-xdist runs it beside the other slow tests: make install links the locked
wheels from uv's cache (seconds once the cache is warm; the first time it downloads about 3 GB).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import bake, project_env
from packaging.markers import Marker
from packaging.utils import canonicalize_name


def locked_here(lock: Path) -> dict[str, str]:
    """The lock's pins whose markers hold on this machine (the universal lock also pins other platforms' packages)."""
    pins = re.findall(r"^([\w.-]+)==([^ ;\\]+)(?: ; ([^\\]+))?", lock.read_text(), re.M)
    return {canonicalize_name(n): v for n, v, marker in pins if not marker or Marker(marker.strip()).evaluate()}


@pytest.mark.slow
def test_make_install_from_scratch_then_train(tmp_path: Path) -> None:
    """The one test that installs a project's own environment, as a new user's first command does."""
    project = bake(tmp_path, image_captioning=False, speech_transcription=False)
    env = {k: v for k, v in project_env(project).items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)  # make install then installs the git hook
    install = subprocess.run(["make", "install"], cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    python = project / ".venv" / "bin" / "python"
    freeze = subprocess.run(
        [project / ".venv" / "bin" / "uv", "pip", "freeze", "--python", python], capture_output=True, text=True
    ).stdout
    found = re.findall(r"^([\w.-]+)==(\S+)$", freeze, re.M)
    installed = {canonicalize_name(n): v for n, v in found if n != "pip"}  # pip came with the venv; uv keeps it
    assert installed == locked_here(project / "requirements.lock"), "the environment is exactly the lock"
    assert "pre-commit" in (project / ".git" / "hooks" / "pre-commit").read_text()
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
