"""Each requirements lock matches its pyproject.toml, covers the CUDA wheels, and make install refuses a stale one.

All offline: the locks are compared with the requirements they record (scripts/lock.py), not re-resolved.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, VENV, bake

LOCK_SCRIPT = REPO / "template" / "{{cookiecutter.project_slug}}" / "scripts" / "lock.py"
CUDA = ("nvidia-cublas", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "triton")


def lock_check(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LOCK_SCRIPT), "check", *args], cwd=cwd, capture_output=True, text=True)


def pins(lock: Path) -> dict[str, str]:
    """Package name -> the whole of its entry (pin line, markers, hashes, via comments)."""
    entries: dict[str, str] = {}
    name = None
    for line in lock.read_text().splitlines():
        match = re.match(r"([a-z0-9][a-z0-9._-]*)==", line)
        if match:
            name = match.group(1)
            entries[name] = ""
        if name:
            entries[name] += line + "\n"
    return entries


def test_the_template_repository_lock_matches_its_pyproject() -> None:
    checked = lock_check(REPO, "--group", "test")
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("transcription", [True, False], ids=["all-tasks", "no-transcription"])
def test_a_baked_lock_matches_the_baked_pyproject(tmp_path: Path, transcription: bool) -> None:
    project = bake(tmp_path, speech_transcription=transcription, python_version="3.12")
    checked = lock_check(project, "--extra", "dev")
    assert checked.returncode == 0, checked.stderr
    entries = pins(project / "requirements.lock")
    assert ("espeakng-loader" in entries) is transcription
    assert all("--hash=sha256:" in entry for entry in entries.values())
    assert "torch==2.11.0 " in entries["torch"] and "torchvision==0.26.0 " in entries["torchvision"]
    for package in CUDA:  # what torch pulls in on Linux x86_64
        assert "sys_platform == 'linux'" in entries[package], package
    direct = {n for n, e in entries.items() if "demo-project (pyproject.toml)" in e}
    assert {"torch", "lightning", "mlflow", "uv", "cruft", "pre-commit"} <= direct


def test_make_install_refuses_a_lock_older_than_pyproject(tmp_path: Path) -> None:
    project = bake(tmp_path, image_captioning=False, speech_transcription=False)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"pandas>=2.2"', '"pandas>=2.3"'))
    venv = tmp_path / "venv"  # never the test environment: make install makes its VENV exactly the lock
    refused = subprocess.run(["make", "install", f"VENV={venv}"], cwd=project, capture_output=True, text=True)
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "now pandas>=2.3; was pandas>=2.2" in errors[0] and "make lock" in errors[0]
    assert not venv.exists()


def test_a_lock_without_its_header_is_refused(tmp_path: Path) -> None:
    project = bake(tmp_path, image_captioning=False, speech_transcription=False)
    lock = project / "requirements.lock"
    lock.write_text("\n".join(line for line in lock.read_text().splitlines() if not line.startswith("#")) + "\n")
    refused = lock_check(project, "--extra", "dev")
    assert refused.returncode == 1 and refused.stderr.startswith("ERROR:") and "make lock" in refused.stderr


def test_uv_is_bootstrapped_from_the_lock_with_its_hashes(tmp_path: Path) -> None:
    project = bake(tmp_path, image_captioning=False, speech_transcription=False)
    pinned = subprocess.run(
        [sys.executable, "scripts/lock.py", "pin", "uv"], cwd=project, capture_output=True, text=True, check=True
    ).stdout
    assert re.match(r"uv==\S+", pinned) and pinned.count("--hash=sha256:") >= 2
    assert pinned == pins(project / "requirements.lock")["uv"].split("    # via")[0]
    assert (VENV / "bin" / "uv").exists()  # the template's .venv is installed the same way (Makefile)
