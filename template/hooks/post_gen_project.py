"""Plug the chosen tasks into the generated project and leave out what belongs to the others.

Components live once, as plain Python, in the template repository's ``tasks/`` and ``datamodules/`` folders; the
task registry there (``tasks/__init__.py``) names each task's parts. This hook copies the parts of the chosen
tasks (``cookiecutter.__tasks``) and everything no task owns into ``src/<package>/``, writes the registry with the
chosen tasks' entries only, and removes the configs (demo budgets and sweep spaces included) and tests of the others. It finds the
components next to the ``template/`` folder cookiecutter rendered from (a local path or a clone of a git URL).

cruft runs this hook again on every ``cruft update``, in a temporary folder, for the project's commit and the new
one, and diffs the two: so the hook does only what a bake at that commit produces (the same tasks, from the same
answers) and nothing with side effects: no sample data, no ``git init``, no installs. A plain ``cookiecutter`` bake
(no ``_commit`` in the context: cruft sets it) also gets the ``.cruft.json`` that ``cruft create`` writes, so every
project can be updated (``make update-template``).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = {{ cookiecutter.package_name|tojson }}
TEMPLATE_DIR = {{ template_dir()|tojson }}  # local_extensions.py: cookiecutter's _repo_dir, which cruft lacks
CHOSEN = {{ cookiecutter.__tasks|tojson }}.split()
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
CONTEXT = json.loads({{ cookiecutter|tojson|tojson }})  # the answers, as a JSON string (true, null)
BY_CRUFT = "_commit" in CONTEXT  # cruft create writes .cruft.json itself; cruft update renders into a temp folder


def find_repo_root() -> Path:
    """The folder that holds ``tasks/`` and ``datamodules/`` (the parent of ``template/``)."""
    template_dir = Path(TEMPLATE_DIR)
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


def git(repo: Path, *args: str) -> str:
    found = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else ""


def write_cruft_state(repo: Path, project: Path) -> None:
    """``.cruft.json`` as ``cruft create --directory template`` writes it: template, commit, folder, answers."""
    commit = git(repo, "rev-parse", "HEAD")
    if not commit or git(repo, "rev-parse", "--show-toplevel") != str(repo):
        print(f"NOTE: {repo} is not a git repository: this project cannot follow template updates (README).")
        return
    # A clone (cookiecutter's own of a git URL, or yours) whose commit is on its remote: updates fetch from there.
    # A commit of your own not pushed yet is only in this folder: updates come from the folder.
    origin = git(repo, "remote", "get-url", "origin")
    pushed = origin and git(repo, "branch", "-r", "--contains", commit)
    answers = {k: v for k, v in CONTEXT.items() if k not in ("_repo_dir", "_output_dir", "_checkout")}
    answers.update(_template=origin if pushed else str(repo), _commit=commit)
    state = {
        "template": answers["_template"],
        "commit": commit,
        "checkout": None,
        "context": {"cookiecutter": answers},
        "directory": "template",
    }
    (project / ".cruft.json").write_text(json.dumps(state, indent=2) + "\n")


if __name__ == "__main__":
    root = find_repo_root()
    copy_components(root, Path.cwd())
    if not BY_CRUFT:
        write_cruft_state(root, Path.cwd())
