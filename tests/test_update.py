"""make update-template brings a template's later commits into a project and keeps its owner's edits.

From git repositories the test makes: a template repository at commit A (this repository's template and
components), a project made from it as a new user makes one (stock `cruft create --directory template`) with its
owner's edits committed; commit B changes the Makefile and the forecasting task (and the captioning task, which the
project did not choose); commit C changes a config line the owner changed too. About 15 s: cruft clones a local
repository and renders the template twice per update.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, VENV, bake, run_make

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]
SKELETON = "template/{{cookiecutter.project_slug}}"
ANSWERS = {"project_name": "Demo Project", "image_captioning": False, "speech_transcription": False}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(GIT + list(args), cwd=cwd, capture_output=True, text=True, check=True).stdout


def commit_to_template(template: Path, message: str, edits: dict[str, tuple[str | None, str]]) -> None:
    """Replace ``old`` by ``new`` (once; old None: append ``new``) in each file of the template repository, commit."""
    for path, (old, new) in edits.items():
        text = (template / path).read_text()
        assert old is None or old in text, f"{path} has no {old!r}"
        (template / path).write_text(text + new if old is None else text.replace(old, new, 1))
    git(template, "commit", "-qam", message)


def errors(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ERROR:")]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding this template at commit A."""
    repo = tmp_path_factory.mktemp("update") / "template-repo"
    repo.mkdir()
    for item in ("cookiecutter.json", "template", "tasks", "datamodules"):
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, repo / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / item, repo / item)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "A")
    return repo


@pytest.fixture(scope="module")
def project(template: Path) -> Path:
    """A forecasting-only project made by stock cruft, in git, with its owner's edits committed."""
    out = template.parent / "projects"
    created = subprocess.run(
        [str(VENV / "bin/cruft"), "create", "--no-input", "--directory", "template", "--output-dir", str(out),
         "--extra-context", json.dumps(ANSWERS), str(template)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    project = out / "demo-project"
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "commit", "-qm", "baked")
    config = project / "configs" / "forecasting.yaml"
    config.write_text(config.read_text().replace("hidden_size: 64", "hidden_size: 128", 1))
    task = project / "src" / "demo_project" / "tasks" / "forecasting.py"
    task.write_text("# owner: tuned for our prices\n" + task.read_text())
    git(project, "commit", "-qam", "owner's edits")
    return project


def test_update_brings_template_changes_and_keeps_the_owners_edits(template: Path, project: Path) -> None:
    assert "Up to date" in run_make(project, "check-template").stdout
    commit_to_template(
        template,
        "B",
        {
            f"{SKELETON}/Makefile": ("clean: ## Remove", "hello-b: ## From commit B\n\t@echo B\n\nclean: ## Remove"),
            "tasks/forecasting.py": (None, "\n\nFIXED_IN_B = True  # a template fix, far from the owner's edit\n"),
            "tasks/captioning.py": (None, "\n\nFIXED_IN_B = True\n"),
        },
    )
    behind = run_make(project, "check-template", check=False)
    assert behind.returncode != 0 and len(errors(behind)) == 1 and "make update-template" in errors(behind)[0]

    run_make(project, "update-template")
    assert "hello-b: ## From commit B" in (project / "Makefile").read_text()
    task = (project / "src" / "demo_project" / "tasks" / "forecasting.py").read_text()
    assert task.startswith("# owner: tuned for our prices\n") and task.endswith(
        "FIXED_IN_B = True  # a template fix, far from the owner's edit\n"
    )
    assert "hidden_size: 128" in (project / "configs" / "forecasting.yaml").read_text()
    assert not (project / "src" / "demo_project" / "tasks" / "captioning.py").exists()
    assert not (project / "configs" / "captioning.yaml").exists()
    assert json.loads((project / ".cruft.json").read_text())["commit"] == git(template, "rev-parse", "HEAD").strip()
    git(project, "add", "-A")
    git(project, "commit", "-qm", "template update B")
    assert "Up to date" in run_make(project, "check-template").stdout


def test_a_clashing_update_lists_what_to_resolve(template: Path, project: Path, tmp_path: Path) -> None:
    if "hello-b" not in (project / "Makefile").read_text():
        pytest.skip("needs the update of the test before")
    without_git = tmp_path / "demo-project"  # no history to merge with: cruft writes .rej files instead
    shutil.copytree(project, without_git, ignore=shutil.ignore_patterns(".git"))
    commit_to_template(template, "C", {f"{SKELETON}/configs/forecasting.yaml": ("hidden_size: 64", "hidden_size: 32")})

    clashed = run_make(project, "update-template", check=False)
    assert clashed.returncode != 0
    assert len(errors(clashed)) == 1 and "configs/forecasting.yaml" in errors(clashed)[0]
    assert "<<<<<<<" in (project / "configs" / "forecasting.yaml").read_text()  # git's three-way merge

    rejected = run_make(without_git, "update-template", check=False)
    assert rejected.returncode != 0
    assert len(errors(rejected)) == 1 and "configs/forecasting.yaml.rej" in errors(rejected)[0]
    assert "hidden_size: 32" in (without_git / "configs" / "forecasting.yaml.rej").read_text()
    assert "hidden_size: 128" in (without_git / "configs" / "forecasting.yaml").read_text()


def test_a_plain_cookiecutter_bake_can_follow_its_template(template: Path, tmp_path: Path) -> None:
    project = bake(tmp_path, template=template, **ANSWERS)
    state = json.loads((project / ".cruft.json").read_text())
    assert state["template"] == str(template) and state["directory"] == "template"
    assert state["commit"] == git(template, "rev-parse", "HEAD").strip()
    assert state["context"]["cookiecutter"]["image_captioning"] is False
    assert "Up to date" in run_make(project, "check-template").stdout


def test_an_unlinked_project_is_told_how_to_link(tmp_path: Path) -> None:
    project = bake(tmp_path, **ANSWERS)
    (project / ".cruft.json").unlink()
    for target in ("check-template", "update-template"):
        refused = run_make(project, target, check=False)
        assert refused.returncode != 0 and len(errors(refused)) == 1 and "Keep up to date" in errors(refused)[0]
