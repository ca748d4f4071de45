"""Baking: every task combination renders, bad answers are rejected, every way of naming the template works."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ALL_TASKS, REPO, VENV, bake
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

TASK_FILES = {
    "image_captioning": (
        "captioning",
        ["tasks/captioning.py", "datamodules/images.py", "datamodules/sample_images.py"],
    ),
    "price_forecasting": (
        "forecasting",
        ["tasks/forecasting.py", "datamodules/timeseries.py", "datamodules/sample_prices.py"],
    ),
    "speech_transcription": (
        "transcription",
        ["tasks/transcription.py", "datamodules/audio.py", "datamodules/sample_speech.py"],
    ),
}
COMBINATIONS = [
    dict(zip(ALL_TASKS, flags, strict=True)) for flags in itertools.product([True, False], repeat=3) if any(flags)
]


@pytest.mark.parametrize("choice", COMBINATIONS, ids=lambda c: "+".join(k.split("_")[1] for k, v in c.items() if v))
def test_bake_task_combination(tmp_path: Path, choice: dict[str, bool]) -> None:
    project = bake(tmp_path, **choice)
    package = project / "src" / "demo_project"
    for key, (name, files) in TASK_FILES.items():
        for file in files:
            assert (package / file).exists() == choice[key], file
        assert (project / "configs" / f"{name}.yaml").exists() == choice[key]
        assert (project / "tests" / f"test_{name}.py").exists() == choice[key]
    for path in project.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "{{" not in text and "{%" not in text, f"unrendered Jinja in {path}"
            if path.suffix == ".py":
                compile(text, str(path), "exec")  # a syntax error fails here
    meta = tomllib.loads((project / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "demo-project"
    assert "torch==2.11.0" in meta["project"]["dependencies"]
    assert (
        any(d.startswith("espeakng-loader") for d in meta["project"]["dependencies"]) == choice["speech_transcription"]
    )
    chosen = [TASK_FILES[k][0] for k, v in choice.items() if v]
    tasks = subprocess.run(
        ["make", "-s", "-C", str(project), "print-tasks"], capture_output=True, text=True, check=True
    )
    assert tasks.stdout.split() == chosen


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"project_slug": "My Project!"}, "project_slug 'My Project!' is not a valid folder name"),
        ({"package_name": "class"}, "package_name 'class' is not a valid Python package name"),
        ({"package_name": "2fast"}, "package_name '2fast' is not a valid Python package name"),
        ({"image_captioning": False, "price_forecasting": False, "speech_transcription": False}, "no task chosen"),
        ({"python_version": "3.9"}, "python_version '3.9' is not supported"),
        ({"mlflow_tracking_uri": "mlruns"}, "mlflow_tracking_uri 'mlruns' is not a tracking URI"),
    ],
)
def test_bad_answers_are_rejected_and_nothing_is_left(tmp_path: Path, answers: dict, message: str) -> None:
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from conftest import bake; from pathlib import Path; "
        f"bake(Path(sys.argv[2]), **{answers!r})"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(REPO / "tests"), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == [], "a rejected project must not be left half-generated"


def test_hook_failure_raises_for_callers(tmp_path: Path) -> None:
    with pytest.raises(FailedHookException):
        bake(tmp_path, package_name="import")


def test_bake_from_relative_path(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(VENV / "bin" / "cookiecutter"), "--no-input", "-o", str(tmp_path), REPO.name, "project_name=Rel Path"],
        cwd=REPO.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "rel-path" / "src" / "rel_path" / "tasks" / "forecasting.py").exists()


def test_bake_from_git_url(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    for item in ("cookiecutter.json", "template", "tasks", "datamodules"):
        copy = shutil.copytree if (REPO / item).is_dir() else shutil.copy2
        copy(REPO / item, clone / item)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "template"]):
        subprocess.run(git + args, cwd=clone, check=True)
    project = cookiecutter(
        f"git+file://{clone}",
        no_input=True,
        output_dir=str(tmp_path / "out"),
        extra_context={"project_name": "From Git", "image_captioning": False},
        default_config={"cookiecutters_dir": str(tmp_path / "cc"), "replay_dir": str(tmp_path / "replay")},
    )
    package = Path(project) / "src" / "from_git"
    assert (package / "tasks" / "forecasting.py").exists()
    assert (package / "datamodules" / "audio.py").exists()
    assert not (package / "tasks" / "captioning.py").exists()


def test_bake_with_pytest_cookies(cookies) -> None:
    result = cookies.bake(
        template=str(REPO), extra_context={"project_name": "Cookie Jar", "speech_transcription": "no"}
    )
    assert result.exit_code == 0, result.exception
    package = result.project_path / "src" / "cookie_jar"
    assert (package / "tasks" / "captioning.py").exists()
    assert not (package / "tasks" / "transcription.py").exists()


def test_generated_project_is_ruff_clean(project: Path) -> None:
    ruff = VENV / "bin" / "ruff"
    config = ["--config", str(project / "pyproject.toml")]
    check = subprocess.run([ruff, "check", *config, "."], capture_output=True, text=True, cwd=project)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run([ruff, "format", "--check", *config, "."], capture_output=True, text=True, cwd=project)
    assert fmt.returncode == 0, fmt.stdout


def test_template_code_is_ruff_clean() -> None:
    ruff = VENV / "bin" / "ruff"
    paths = [str(REPO / p) for p in ("tasks", "datamodules", "tests", "bench") if (REPO / p).exists()]
    check = subprocess.run([ruff, "check", *paths], capture_output=True, text=True, cwd=REPO)
    assert check.returncode == 0, check.stdout
