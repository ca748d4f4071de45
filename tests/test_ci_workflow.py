"""The generated project's GitHub Actions workflow passes actionlint and runs the steps its README promises."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import VENV, bake


@pytest.fixture(scope="module")
def workflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = bake(tmp_path_factory.mktemp("ci"), image_captioning=False, python_version="3.12")
    return project / ".github" / "workflows" / "ci.yml"


def actionlint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV / "bin" / "actionlint"), "-no-color", str(path)], capture_output=True, text=True)


def test_the_workflow_passes_actionlint(workflow: Path) -> None:
    linted = actionlint(workflow)
    assert linted.returncode == 0, linted.stdout


def test_actionlint_finds_a_broken_workflow(workflow: Path, tmp_path: Path) -> None:
    broken = tmp_path / "ci.yml"
    broken.write_text(workflow.read_text().replace("runs-on: ubuntu-latest", "runs-on: [ubuntu-latest, {]"))
    assert actionlint(broken).returncode != 0
    typo = tmp_path / "typo.yml"
    typo.write_text(workflow.read_text().replace("${{ runner.os }}", "${{ runner.oss }}"))
    linted = actionlint(typo)
    assert linted.returncode != 0 and "oss" in linted.stdout


def test_the_workflow_installs_from_the_lock_then_lints_and_tests(workflow: Path) -> None:
    steps = yaml.safe_load(workflow.read_text())["jobs"]["test"]["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@") and steps[0]["with"]["fetch-depth"] == 0
    assert steps[1]["with"]["python-version"] == "3.12"
    assert [s["run"] for s in steps if "run" in s] == ["make install", "make lint", "make test"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "~/.cache/uv" and "hashFiles('requirements.lock')" in cache["with"]["key"]
