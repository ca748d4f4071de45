"""Baking: every task combination renders, bad answers are rejected, every way of naming the template works."""

from __future__ import annotations

import ast
import itertools
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ALL_TASKS, REPO, VENV, bake, load_registry
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

REGISTRY = load_registry()
PROMPTS = dict(zip(ALL_TASKS, ["captioning", "forecasting", "transcription"], strict=True))  # answer -> task
COMBINATIONS = [
    dict(zip(ALL_TASKS, flags, strict=True)) for flags in itertools.product([True, False], repeat=3) if any(flags)
]


@pytest.mark.parametrize("choice", COMBINATIONS, ids=lambda c: "+".join(k.split("_")[1] for k, v in c.items() if v))
def test_bake_task_combination(tmp_path: Path, choice: dict[str, bool]) -> None:
    project = bake(tmp_path, **choice)
    package = project / "src" / "demo_project"
    chosen = [PROMPTS[k] for k, v in choice.items() if v]
    for name, task in REGISTRY.items():
        for module in task.modules():  # each task's own code, e.g. tasks/captioning.py and datamodules/images/
            path = package / module.replace(".", "/")
            assert (path.exists() or path.with_suffix(".py").exists()) == (name in chosen), module
        assert (project / "configs" / f"{name}.yaml").exists() == (name in chosen)
        assert (project / "configs" / "demo" / f"{name}.yaml").exists() == (name in chosen)
        assert (project / "configs" / "sweep" / f"{name}.yaml").exists() == (name in chosen)
        assert (project / "tests" / f"test_{name}.py").exists() == (name in chosen)
    assert (package / "datamodules" / "common.py").exists()  # what no task owns is always there
    registry = (package / "tasks" / "__init__.py").read_text()
    assert [n for n in REGISTRY if f'"{n}",' in registry] == chosen, "the registry lists the chosen tasks only"
    for path in project.rglob("*"):
        if path.is_file() and path.suffix != ".png":  # docs/ holds a screenshot
            text = path.read_text()
            jinja = text.replace("${{", "")  # GitHub Actions expressions in .github/workflows/
            assert "{{" not in jinja and "{%" not in jinja, f"unrendered Jinja in {path}"
            if path.suffix == ".py":
                compile(text, str(path), "exec")  # a syntax error fails here
    meta = tomllib.loads((project / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "demo-project"
    assert "torch==2.11.0" in meta["project"]["dependencies"]
    assert (
        any(d.startswith("espeakng-loader") for d in meta["project"]["dependencies"]) == choice["speech_transcription"]
    )
    tasks = subprocess.run(
        ["make", "-s", "-C", str(project), "print-tasks"], capture_output=True, text=True, check=True
    )
    assert tasks.stdout.split() == chosen
    imported = subprocess.run(
        [sys.executable, "-c", "from demo_project.tasks import TASKS, load; [load(t.model) for t in TASKS.values()]"],
        env={"PYTHONPATH": str(project / "src")},
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"project_slug": "My Project!"}, "project_slug 'My Project!' is not a valid folder name"),
        ({"package_name": "class"}, "package_name 'class' is not a valid Python package name"),
        ({"package_name": "2fast"}, "package_name '2fast' is not a valid Python package name"),
        ({"image_captioning": False, "price_forecasting": False, "speech_transcription": False}, "no task chosen"),
        ({"python_version": "3.9"}, "python_version '3.9' is not supported"),
        ({"mlflow_tracking_uri": "mlruns"}, "mlflow_tracking_uri 'mlruns' is not a tracking URI"),
        ({"mlflow_tracking_uri": "http://"}, "mlflow_tracking_uri 'http://' is not a tracking URI (no host"),
        ({"mlflow_tracking_uri": "sqlite:///"}, "mlflow_tracking_uri 'sqlite:///' is not a tracking URI"),
        ({"mlflow_tracking_uri": 'sqlite:///a"b.db'}, "is not a tracking URI (empty, or spaces, quotes"),
        ({"description": "tasks\n\ttrain:\n\t\ttouch pwned"}, "description has a control character in it ('\\n')"),
        ({"author": "Ann\u2028Lee"}, "author has a control character in it ('\\u2028')"),
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


ODD = 'O\'Brien "OB" \\ é $HOME `id` $(id)'


def test_an_emoji_in_the_description_bakes_valid_toml(tmp_path: Path) -> None:
    description = "Prices 🚀 and captions, naïvely \U0001f600"  # beyond the BMP: tojson wrote surrogate pairs
    project = bake(tmp_path, description=description, image_captioning=False, speech_transcription=False)
    assert tomllib.loads((project / "pyproject.toml").read_text())["project"]["description"] == description


def test_odd_answers_bake_a_valid_project(tmp_path: Path) -> None:
    """Quotes, backslashes, `$` and non-ASCII in free-text answers: the project parses, imports and lints."""
    project = bake(tmp_path, project_name=ODD, author=ODD, description=ODD, image_captioning=False)
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert meta["description"] == ODD and meta["authors"] == [{"name": ODD}]
    assert project.name == "o-brien-ob-e-home-id-id"
    package = project.name.replace("-", "_")
    imported = subprocess.run(
        [sys.executable, "-c", f"import {package}.cli, {package}.tasks; print({package}.tasks.TASKS)"],
        env={"PYTHONPATH": str(project / "src")},
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    linted = subprocess.run(["make", "-C", str(project), f"VENV={VENV}", "lint"], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout[-3000:] + linted.stderr[-3000:]
    assert "O'Brien" in (project / "README.md").read_text()


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
    assert (package / "datamodules" / "audio" / "datamodule.py").exists()
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


# Private names of Lightning and jsonargparse objects that our subclasses (LightningCLI, LightningModule) inherit.
INHERITED_PRIVATE = {"_get", "_trainer", "_hparams", "_hparams_initial", "_parser", "_instantiate_trainer",
                     "_run_subcommand", "_results", "_current_fx_name", "_log_hyperparams", "_set_seed"}  # fmt: skip


def private_lightning_names(source: str) -> list[str]:
    """Uses of private names of Lightning/jsonargparse in code (not in comments or docstrings)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PRIVATE_SOURCES:
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = ast.unparse(node.value)
            on_lightning = re.search(r"(trainer|loop|connector|cli)$", owner, re.IGNORECASE)
            if on_lightning or (owner in ("self", "super()") and node.attr in INHERITED_PRIVATE):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


PRIVATE_SOURCES = {"lightning", "pytorch_lightning", "jsonargparse"}


def test_private_lightning_names_live_in_one_module(project: Path) -> None:
    found = {p.name: uses for p in (project / "src").rglob("*.py") if (uses := private_lightning_names(p.read_text()))}
    assert list(found) == ["checkpoints.py"], f"private Lightning names outside checkpoints.py: {found}"
    # Trainer._checkpoint_connector._hpc_resume_path: both attributes, on one line, commented there
    assert [use.split(":")[0] for use in found["checkpoints.py"]] == [found["checkpoints.py"][0].split(":")[0]] * 2


def test_the_private_name_check_finds_what_it_looks_for() -> None:
    code = "from lightning.pytorch.cli import _x\nstep = trainer.fit_loop._batches_that_stepped\nself._get(c, 'k')\n"
    assert [use.split(": ")[1] for use in private_lightning_names(code)] == [
        "import _x",
        "trainer.fit_loop._batches_that_stepped",
        "self._get",
    ]


def test_the_readme_lists_the_steps_of_main_in_order(project: Path) -> None:
    """The generated README's "what `make train` does" names each step by the call in ``cli.main`` that makes it."""
    readme = (project / "README.md").read_text()
    steps = readme[readme.index("What `make train TASK=forecasting` does") : readme.index("Adding a task:")]
    named = re.findall(r"^\d+\. \*\*\w+\*\* \(`([^`]+)`\)", steps, flags=re.MULTILINE)
    calls = [name.removesuffix("(...)") for name in named]
    assert calls == ["ConfigParser", "resolve_checkpoint", "prepare_store", "parser.build", "connect", "build_trainer",
                     "with run.started"], calls  # fmt: skip
    source = (project / "src" / "demo_project" / "cli.py").read_text()
    body = source[source.index("def main(") : source.index("\ndef ", source.index("def main(") + 1)]
    positions = [body.find(call) for call in calls]
    assert -1 not in positions and positions == sorted(positions), dict(zip(calls, positions, strict=True))


def test_the_cli_asks_tasks_and_data_nothing_by_name(project: Path) -> None:
    """The contracts between the CLI, the tasks and the DataModules are the two base classes: no duck typing."""
    source = (project / "src" / "demo_project" / "cli.py").read_text()
    assert not re.search(r"\b(hasattr|getattr)\(", source)
