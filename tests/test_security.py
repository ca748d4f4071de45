"""Nobody runs code they did not write, and secrets stay secret: predicting from the tracking store never unpickles,
the team server asks for a password, credentials never reach files or output, odd values never reach a shell.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
from pathlib import Path

import pytest
import requests
from conftest import VENV, Store, forecasting_project, project_env, run_cli, run_make
from test_mlflow_server import free_port, serving, stop_group

QUICK = [
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "2",
    "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar", "false",
]  # fmt: skip
SECRET = "s3cr3t-Pa55w0rd"


class Canary:
    """Unpickling this creates a file: what a poisoned model artifact could do instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def sproject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return forecasting_project(tmp_path_factory.mktemp("security"))


def test_predicting_from_the_store_never_unpickles(sproject: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    store = Store(tmp_path, "store")
    run_cli(sproject, "fit", "--config", "configs/forecasting.yaml", *QUICK, **store.env)
    (run,) = store.runs()
    client = MlflowClient(store.uri)
    canary = tmp_path / "canary"
    model = tmp_path / "model"
    (model / "data").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors:\n  pytorch:\n    model_data: data\n    pytorch_version: 2.11.0\n")
    (model / "data" / "model.pth").write_bytes(pickle.dumps(Canary(canary)))
    client.log_artifacts(run.info.run_id, str(model), "model")  # a poisoned model artifact beside the checkpoint
    client.create_registered_model("forecaster")
    client.create_model_version("forecaster", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)

    prices = sproject / "data" / "sample" / "forecasting" / "prices.csv"
    for uri in (f"runs:/{run.info.run_id}/model", "models:/forecaster/1"):
        predicted = run_make(sproject, "predict", "TASK=forecasting", f"INPUT={prices}", f"MODEL={uri}", **store.env)
        assert "Wrote 50 predictions" in predicted.stdout + predicted.stderr, uri
        assert not canary.exists(), f"predicting from {uri} unpickled the model artifact"

    poisoned = client.create_run(run.info.experiment_id).info.run_id  # a run whose checkpoint is a pickle
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(pickle.dumps(Canary(canary)))
    client.log_artifacts(poisoned, str(tmp_path / "checkpoints"), "checkpoints")
    refused = run_make(
        sproject, "predict", "TASK=forecasting", f"INPUT={prices}", f"MODEL=runs:/{poisoned}", check=False, **store.env
    )
    assert refused.returncode != 0 and "is not a readable checkpoint" in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr and not canary.exists()


@pytest.fixture(scope="module")
def auth_server(sproject: Path, tmp_path_factory: pytest.TempPathFactory):
    """`make mlflow-server MLFLOW_AUTH=1` with the admin password from a file; yields its URI."""
    password_file = tmp_path_factory.mktemp("secrets") / "admin-password"  # where an admin keeps it: not the project
    password_file.write_text(SECRET)
    try:
        with serving(sproject, "MLFLOW_AUTH=1", f"MLFLOW_AUTH_ADMIN_PASSWORD_FILE={password_file}") as uri:
            yield uri
    finally:
        password_file.unlink()


@pytest.mark.slow
def test_the_team_server_asks_for_a_password_and_secrets_stay_secret(sproject: Path, auth_server: str) -> None:
    from mlflow import MlflowClient

    answer = requests.post(f"{auth_server}/api/2.0/mlflow/experiments/search", json={"max_results": 1}, timeout=30)
    assert answer.status_code == 401, "a request without credentials is refused"

    host = auth_server.removeprefix("http://")
    outputs = []
    for name, env in {
        "in-the-uri": {"MLFLOW_TRACKING_URI": f"http://admin:{SECRET}@{host}"},
        "in-the-environment": {
            "MLFLOW_TRACKING_URI": auth_server, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": SECRET,
        },
    }.items():  # fmt: skip
        result = run_cli(sproject, "fit", "--config", "configs/forecasting.yaml", *QUICK, "--tracking.run_name", name,
                         **env)  # fmt: skip
        outputs.append(result.stdout + result.stderr)
    unreachable = f"http://admin:{SECRET}@127.0.0.1:{free_port()}"
    refused = run_cli(sproject, "fit", "--config", "configs/forecasting.yaml", check=False,
                      MLFLOW_TRACKING_URI=unreachable)  # fmt: skip
    assert "ERROR: MLflow tracking server http://127.0.0.1" in refused.stderr  # the password moved out of the URI
    outputs.append(refused.stdout + refused.stderr)

    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=SECRET)
    try:
        client = MlflowClient(auth_server)
        experiment = client.get_experiment_by_name("forecasting")
        runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
        assert {"in-the-uri", "in-the-environment"} <= set(runs)
        for run in runs.values():
            assert run.info.status == "FINISHED" and "test/mase" in run.data.metrics
            assert run.data.params["backbone"] == "lstm"
            listed = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"config.yaml", "checkpoints", "examples"} <= listed, (run.data.tags, outputs[0][-3000:])
            config = Path(client.download_artifacts(run.info.run_id, "config.yaml")).read_text()
            outputs.append(config + repr(run.data.params) + repr(run.data.tags))
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key)
    for text in outputs:
        assert SECRET not in text, text[max(0, text.find(SECRET) - 1500) : text.find(SECRET) + 300]
    written = [p for p in sproject.rglob("*") if p.is_file() and "data" not in p.relative_to(sproject).parts]
    leaks = [str(p) for p in written if SECRET.encode() in p.read_bytes()]
    assert not leaks, f"the secret is in {leaks}"


def test_serving_on_every_address_without_a_password_warns(sproject: Path) -> None:
    process = subprocess.Popen(
        ["make", "-C", str(sproject), f"VENV={VENV}", "mlflow-server", "MLFLOW_HOST=0.0.0.0",
         f"MLFLOW_PORT={free_port()}"],
        env=project_env(sproject), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        first = process.stderr.readline()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        stop_group(process)
    assert first.startswith("WARNING: serving on 0.0.0.0 without authentication"), first


def test_command_line_values_never_reach_a_shell(sproject: Path, tmp_path: Path) -> None:
    witness = tmp_path / "pwned"
    for args in (
        ["train", f"TASK=$(shell touch {witness})"],
        ["train", f"TASK=forecasting; touch {witness}"],
        ["predict", "TASK=forecasting", f"INPUT={tmp_path}/a b/$(touch {witness})'\"x"],
        ["resume", "TASK=forecasting", f"RUN=`touch {witness}`"],
        ["predict", "TASK=forecasting", f"INPUT={tmp_path}", f"CKPT=$$(touch {witness})"],
    ):
        result = run_make(sproject, *args, check=False)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, (args, result.stderr[-2000:])
        assert not witness.exists(), f"make {' '.join(args)} ran a command"
    spaced = tmp_path / "prices with spaces.csv"
    missing = run_make(sproject, "predict", "TASK=forecasting", f"INPUT={spaced}", check=False)
    assert f"'{spaced}' does not exist" in missing.stderr or "no best.ckpt" in missing.stderr, missing.stderr[-2000:]


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://user:tok3n@mlflow.example.com/", "https://***@mlflow.example.com/"),
        ("postgresql://ml:pw@db.example.com:5432/mlflow", "postgresql://***@db.example.com:5432/mlflow"),
        (
            "postgresql+psycopg://ml:pw@db/mlflow?sslmode=require&password=pw",
            "postgresql+psycopg://***@db/mlflow?sslmode=require&password=***",
        ),
        ("http://me:p@ss/w0rd@127.0.0.1:5000/", "http://***@127.0.0.1:5000/"),  # "@" and "/" typed as they are
        (
            "error at http://me:a@b@host:5000/api/2.0/x (http://other/y)",
            "error at http://***@host:5000/api/2.0/x (http://other/y)",
        ),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////home/me/project/mlflow.db", "sqlite:////home/me/project/mlflow.db"),
    ],
)
def test_tracking_uris_are_printed_without_their_secrets(package, uri: str, shown: str) -> None:
    from demo_project.store import redact

    assert redact(uri) == shown
