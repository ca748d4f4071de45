"""A baked project's pre-commit hooks pass on its own files and refuse run outputs, with no network.

The hooks run the project environment's tools (scripts/venv-run: .venv, else the activated environment), so the
test environment stands in for the project's .venv through VIRTUAL_ENV, as an activated environment would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import VENV, bake

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A forecasting project in a git repository with its hook installed and its files committed through it."""
    tmp = tmp_path_factory.mktemp("precommit")
    project = bake(tmp, image_captioning=False, speech_transcription=False)
    # PATH without the test environment: the hooks must find their tools through VIRTUAL_ENV alone
    env = {**os.environ, "VIRTUAL_ENV": str(VENV), "PRE_COMMIT_HOME": str(tmp / "cache"), "PATH": "/usr/bin:/bin"}
    for command in (GIT + ["init", "-q"], [str(VENV / "bin/pre-commit"), "install"], GIT + ["add", "."]):
        assert run(command, project, env).returncode == 0
    return project, env


def test_hooks_pass_on_a_fresh_project(repo: tuple[Path, dict[str, str]]) -> None:
    project, env = repo
    checked = run([str(VENV / "bin/pre-commit"), "run", "--all-files"], project, env)
    assert checked.returncode == 0, checked.stdout[-3000:]
    for hook in ("ruff check", "ruff format", "no trailing whitespace", "no files over 1 MB"):
        assert hook in checked.stdout and "Failed" not in checked.stdout
    committed = run(GIT + ["commit", "-qm", "baked"], project, env)
    assert committed.returncode == 0, committed.stdout[-3000:] + committed.stderr[-3000:]


@pytest.mark.parametrize("planted", ["mlflow.db", "runs/forecasting/last.ckpt"])
def test_a_planted_run_output_is_refused(repo: tuple[Path, dict[str, str]], planted: str) -> None:
    project, env = repo
    head = run(GIT + ["rev-parse", "HEAD"], project, env).stdout
    (project / planted).parent.mkdir(parents=True, exist_ok=True)
    (project / planted).write_bytes(b"SQLite format 3\x00")
    assert run(GIT + ["add", "-f", planted], project, env).returncode == 0  # -f: .gitignore lists them
    refused = run(GIT + ["commit", "-qm", "add a run output"], project, env)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr  # git passes the hook's output on stderr
    assert "refused: keep run outputs out of git" in said and planted in said
    assert run(GIT + ["rev-parse", "HEAD"], project, env).stdout == head
    run(GIT + ["rm", "-q", "--cached", planted], project, env)


def test_a_badly_formatted_file_is_refused(repo: tuple[Path, dict[str, str]]) -> None:
    project, env = repo
    bad = project / "src" / "demo_project" / "scratch.py"
    bad.write_text("import os\nx=1   \n")
    assert run(GIT + ["add", str(bad)], project, env).returncode == 0
    refused = run(GIT + ["commit", "-qm", "scratch"], project, env)
    assert refused.returncode != 0
    assert "F401" in refused.stdout + refused.stderr  # ruff check: os imported, unused
    run(GIT + ["rm", "-qf", str(bad)], project, env)
