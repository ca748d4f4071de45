"""The MLflow UI as a user sees it: tests/ui/ui_check.py opens it in headless Chromium for a project with one finished
forecasting run and finds the experiment, the run and its drawn `train/loss` chart, then the run's overview page with
its description (the command that made it); it saves a screenshot of each.

Needs Debian's chromium (CI installs it with tests/ui/install_chromium.sh); skipped without it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import forecasting_project, mlflow_runs, project_env, run_cli
from mlflow import MlflowClient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: run tests/ui/install_chromium.sh (apt-get install chromium)"
)
TINY = [
    "--config", "configs/forecasting.yaml",
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "2",
    "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forecasting project with exactly one finished run."""
    project = forecasting_project(tmp_path_factory.mktemp("ui"))
    run_cli(project, "fit", *TINY)
    (run,) = mlflow_runs(project, "forecasting")
    assert run.info.status == "FINISHED"
    experiment = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # a training, not GenAI
    return project


UI_CHECK = Path(__file__).parent / "ui" / "ui_check.py"


def ui_check(project: Path, screenshot: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the UI check on the project's store: its newest forecasting run must show a drawn train/loss chart."""
    store = ["--tracking-uri", f"sqlite:///{project / 'mlflow.db'}", "--experiment", "forecasting"]
    return subprocess.run(
        [sys.executable, str(UI_CHECK), *store, "--screenshot", str(screenshot), *args],
        env=project_env(project),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_ui_shows_the_experiment_the_run_its_loss_chart_and_description(trained_once, tmp_path):
    screenshot, overview = tmp_path / "mlflow-ui.png", tmp_path / "overview.png"
    result = ui_check(
        trained_once, screenshot, "--overview", str(overview), "--expect", "Headline metric",
        "--forbid", str(trained_once), "--forbid", "Evaluation runs",
    )  # fmt: skip
    print(f"MLflow UI screenshots: {screenshot}, {overview}")
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    run_name = mlflow_runs(trained_once, "forecasting")[0].info.run_name
    assert run_name.startswith("forecasting lstm hidden_size=64")  # readable: the task and its hyper-parameters
    assert f"UI check passed: experiment 'forecasting', run '{run_name}'" in result.stdout
    assert "UI overview check passed: description and Headline metric" in result.stdout
    tags = mlflow_runs(trained_once, "forecasting")[0].data.tags  # what the overview shows, untruncated
    assert not [v for k, v in tags.items() if str(trained_once) in v and k != "mlflow.source.name"], tags
    for shot in (screenshot, overview):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.mark.slow
def test_ui_check_fails_when_the_chart_is_not_there(trained_once, tmp_path):
    """The check is not vacuous: a metric the run never logged is reported missing, with a screenshot anyway."""
    screenshot = tmp_path / "missing.png"
    result = ui_check(trained_once, screenshot, "--metric", "train/never_logged", "--timeout", "40")
    assert result.returncode == 1
    assert "did not show a drawn train/never_logged chart" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert screenshot.exists()
