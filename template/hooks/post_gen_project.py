"""Plug the chosen tasks into the generated project and leave out what belongs to the others.

Components live once, as plain Python, in the template repository's ``tasks/`` and ``datamodules/`` folders; the
task registry there (``tasks/__init__.py``) names each task's parts. This hook copies the parts of the chosen
tasks (``cookiecutter.__tasks``) and everything no task owns into ``src/<package>/``, writes the registry with the
chosen tasks' entries only, and removes the configs (demo budgets and sweep spaces included) and tests of the others. It finds the
components next to the ``template/`` folder cookiecutter rendered from (a local path or a clone of a git URL).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import sys
from pathlib import Path

PACKAGE = {{ cookiecutter.package_name|tojson }}
REPO_DIR = {{ cookiecutter._repo_dir|tojson }}
CHOSEN = {{ cookiecutter.__tasks|tojson }}.split()
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def find_repo_root() -> Path:
    """The folder that holds ``tasks/`` and ``datamodules/`` (the parent of ``template/``)."""
    template_dir = Path(REPO_DIR)
    if not template_dir.is_absolute():  # cookiecutter pointed straight at template/ by a relative path
        template_dir = Path(os.environ.get("PWD", ".")) / template_dir
    for candidate in (template_dir.parent, template_dir):
        if (candidate / "tasks").is_dir() and (candidate / "datamodules").is_dir():
            return candidate.resolve()
    sys.exit(
        f"ERROR: cannot find the tasks/ and datamodules/ folders next to {template_dir}. "
        "Run cookiecutter on the template repository's root (a path or a git URL), not on its template/ folder."
    )


def load_registry(path: Path) -> dict:
    """The ``TASKS`` of the registry file (it imports only the standard library)."""
    spec = importlib.util.spec_from_file_location("task_registry", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module.TASKS


def registry_for(source: str, chosen: list[str]) -> str:
    """The registry's source with the entries (``Task("name", ...)`` calls) of the unchosen tasks cut out."""
    lines = source.splitlines(keepends=True)
    cut: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Task" and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and name.value not in chosen:
                cut.update(range(node.lineno - 1, node.end_lineno))  # an entry has lines of its own
    return "".join(line for i, line in enumerate(lines) if i not in cut)


def copy_components(repo: Path, project: Path) -> None:
    tasks = load_registry(repo / "tasks" / "__init__.py")
    owned = {module for task in tasks.values() for module in task.modules()}
    wanted = {module for name in CHOSEN for module in tasks[name].modules()}
    target = project / "src" / PACKAGE
    for folder in ("tasks", "datamodules"):
        (target / folder).mkdir(parents=True, exist_ok=True)
        for source in sorted((repo / folder).iterdir()):
            module = f"{folder}.{source.name.removesuffix('.py')}"
            if source.name == "__pycache__" or (module in owned and module not in wanted):
                continue
            if source.is_dir():
                shutil.copytree(source, target / folder / source.name, ignore=IGNORED)
            else:
                shutil.copy2(source, target / folder / source.name)
    registry = target / "tasks" / "__init__.py"
    registry.write_text(registry_for(registry.read_text(), CHOSEN))
    for name in set(tasks) - set(CHOSEN):
        (project / "configs" / f"{name}.yaml").unlink(missing_ok=True)
        (project / "configs" / "demo" / f"{name}.yaml").unlink(missing_ok=True)
        (project / "configs" / "sweep" / f"{name}.yaml").unlink(missing_ok=True)
        (project / "tests" / f"test_{name}.py").unlink(missing_ok=True)


if __name__ == "__main__":
    copy_components(find_repo_root(), Path.cwd())
