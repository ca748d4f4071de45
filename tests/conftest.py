"""Fixtures that bake projects from this template and run them, reusing one virtual environment.

Tests run with the interpreter of that environment (``make test`` creates it), and generated projects
get it through their Makefile's ``VENV`` variable instead of installing their own.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import forked
import pytest
from cookiecutter.main import cookiecutter

# The test files that take longest, longest first (2 cores, 2026-12-02: test_sweep.py 376 s down to
# test_template.py 80 s); the others follow in their usual order. pytest-xdist hands whole files to its workers in
# this order (`make test`: --dist loadfile --no-loadscope-reorder): its default, the files with most tests first,
# started the real install and the project's own tests last, to run alone at the end (a 2-worker run of 24 min 43 s
# spent ~75 s more than this order's, replayed with each test's measured time).
LONGEST_FIRST = (
    "test_sweep.py", "test_distributed.py", "test_postgres.py", "test_team_server.py", "test_security.py",
    "test_demo.py", "test_prepared.py", "test_install.py", "test_mlflow_server.py", "test_project.py",
    "test_mlflow_ui.py", "test_slurm.py", "test_faults.py", "test_transcription.py", "test_forecasting.py",
    "test_template.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of ``LONGEST_FIRST`` first, in its order; the tests of a file keep theirs."""
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
PACKAGE = "demo_project"
ALL_TASKS = {"image_captioning": True, "price_forecasting": True, "speech_transcription": True}


def bake(output_dir: Path, template: str | Path = REPO, **context: object) -> Path:
    """Generate a project without prompts and return its folder."""
    extra = {"project_name": "Demo Project", **ALL_TASKS, **context}
    return Path(cookiecutter(str(template), no_input=True, output_dir=str(output_dir), extra_context=extra))


def load_registry() -> dict:
    """The template's task registry (``tasks/__init__.py``: standard library only), as the post-gen hook reads it."""
    spec = importlib.util.spec_from_file_location("template_task_registry", REPO / "tasks" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.TASKS


def project_env(project: Path, **extra: str) -> dict[str, str]:
    # quiet.py sets MLFLOW_LOGGING_LEVEL in a process that ran the CLI in-process: not for the projects' commands
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_LOGGING_LEVEL")}
    paths = [str(project / "src"), *([extra.pop("PYTHONPATH")] if "PYTHONPATH" in extra else [])]
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", **extra)
    return env


def _run(command: list[str], project: Path, timeout: float, check: bool, env: dict[str, str]):
    if command[:2] == [sys.executable, "-m"]:  # started as a fork of a Python that has imported torch and MLflow
        result = forked.run(command[2], command[3:], project, project_env(project, **env), timeout)
    else:
        result = subprocess.run(
            command, cwd=project, env=project_env(project, **env), capture_output=True, text=True, timeout=timeout
        )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-4000:]}\nSTDERR:\n{result.stderr[-6000:]}"
        )
    return result


def run_cli(project: Path, *args: str, timeout: float = 600, check: bool = True, **env: str):
    """Run ``python -m demo_project ARGS`` in the project, as a user would: a process of its own (``forked.py``)."""
    return _run([sys.executable, "-m", PACKAGE, *args], project, timeout, check, env)


def run_make(project: Path, *targets: str, timeout: float = 900, check: bool = True, **env: str):
    """Run ``make TARGETS`` in the project with this test environment as its VENV."""
    return _run(["make", "-C", str(project), f"VENV={VENV}", *targets], project, timeout, check, env)


def forecasting_project(output_dir: Path) -> Path:
    """A project with only the (fastest) forecasting task and its sample data, and no tracking store yet."""
    project = bake(output_dir, image_captioning=False, speech_transcription=False)
    _run([sys.executable, "-m", f"{PACKAGE}.sample_data", "forecasting"], project, 120, True, {})
    return project


def mlflow_runs(project: Path, experiment: str) -> list:
    """All runs of ``experiment`` in the project's SQLite store, newest first."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {project / 'mlflow.db'}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])


class Store:
    """A fresh SQLite tracking store per training: a new file, never one deleted under an open connection."""

    def __init__(self, folder: Path, name: str) -> None:
        self.uri = f"sqlite:///{folder / name}.db"

    @property
    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.uri}

    def runs(self, experiment: str = "forecasting") -> list:
        from mlflow import MlflowClient

        client = MlflowClient(self.uri)
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment!r} in {self.uri}"
        return client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])

    def steps(self, run_id: str, key: str) -> list[int]:
        from mlflow import MlflowClient

        history = MlflowClient(self.uri).get_metric_history(run_id, key)
        assert history, f"no {key} in run {run_id}"
        return sorted(m.step for m in history)


def run_count(project: Path) -> int:
    """How many MLflow runs the project's SQLite store holds (0 without a store): a refused command adds none."""
    import sqlite3

    if not (project / "mlflow.db").exists():
        return 0
    with sqlite3.connect(project / "mlflow.db") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0


def assert_refused(result: subprocess.CompletedProcess, *names: str) -> str:
    """The command ended with exit code 1 and one ``ERROR:`` line naming each of ``names``, without a traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project baked with every task, shared by the tests that only read or train in it."""
    return bake(tmp_path_factory.mktemp("baked"))


@pytest.fixture(scope="session")
def package(project: Path):
    """The baked project's package, importable in this process: the one package of that name a test imports, so
    that whatever order the test files run in, an in-process test finds every task's code."""
    sys.path.insert(0, str(project / "src"))
    imported = importlib.import_module(PACKAGE)
    assert Path(imported.__file__).is_relative_to(project / "src"), (
        f"{PACKAGE} was imported from {imported.__file__} before this fixture: import it through `package`"
    )
    return imported
