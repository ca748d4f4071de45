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


CANARY_MODULE = '''"""The module a crafted checkpoint names: importing it leaves a marker, as hostile code would act."""
from pathlib import Path

Path(__file__).with_name("IMPORTED").write_text("imported")


class Evil:
    def __init__(self, **kwargs):
        Path(__file__).with_name("INSTANTIATED").write_text(repr(kwargs))


def build(*args, **kwargs):
    return Evil(**kwargs)
'''


def crafted(source: Path, target: Path, **hparams: object) -> Path:
    """``source``, a real checkpoint, with hyper-parameters changed (None: removed); ``torch.load(weights_only=True)``
    reads it, as it reads any checkpoint of plain values."""
    import torch

    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    saved = checkpoint["hyper_parameters"]
    for key, value in hparams.items():
        saved.pop(key) if value is None else saved.update({key: value})
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target)
    torch.load(target, map_location="cpu", weights_only=True)
    return target


@pytest.mark.slow
def test_a_checkpoint_never_imports_the_code_it_names(sproject: Path, tmp_path: Path) -> None:
    """A checkpoint (a file, or `MODEL=runs:/...` from the store) naming a module on PYTHONPATH, with init arguments
    that load weights: the module is never imported; a class path the registry lacks is one ERROR line naming it,
    and the registry's own class takes only its own arguments, from the checkpoint's spec (no weights read)."""
    from mlflow import MlflowClient

    store = Store(tmp_path, "store")
    run_cli(sproject, "fit", "--config", "configs/forecasting.yaml", *QUICK, "--test_after_fit", "false", **store.env)
    (run,) = store.runs()
    trained = sproject / "runs" / "forecasting" / run.info.run_id / "checkpoints" / "best.ckpt"
    canary = tmp_path / "site"
    (canary / "canary_mod").mkdir(parents=True)
    (canary / "canary_mod" / "__init__.py").write_text(CANARY_MODULE)
    env = {"PYTHONPATH": str(canary), **store.env}
    hostile = {
        "weights_path": str(canary / "canary_mod" / "__init__.py"), "pretrained": True,
        "_instantiator": "canary_mod.build", "class_path": "canary_mod.Evil", "init_args": {"pretrained": True},
    }  # fmt: skip
    client = MlflowClient(store.uri)

    def in_store(checkpoint: Path) -> str:
        """A run of the store whose checkpoint artifact is ``checkpoint``: ``runs:/<its id>``."""
        made = client.create_run(run.info.experiment_id).info.run_id
        client.log_artifact(made, str(checkpoint), "checkpoints")
        return f"runs:/{made}"

    prices = sproject / "data" / "sample" / "forecasting" / "prices.csv"
    evil = crafted(trained, tmp_path / "evil" / "best.ckpt", _class_path="canary_mod.Evil", **hostile)
    lookalike = "canary_mod.tasks.forecasting.PriceForecaster"  # the registry's path, under another package
    lookalike_file = crafted(trained, tmp_path / "lookalike" / "last.ckpt", _class_path=lookalike, **hostile)
    specless = crafted(trained, tmp_path / "specless" / "best.ckpt", spec=None, **hostile)
    refusals = {
        "predict, a file": (["predict", "TASK=forecasting", f"INPUT={prices}", f"CKPT={evil}"], "canary_mod.Evil"),
        "predict, runs:/": (["predict", "TASK=forecasting", f"INPUT={prices}", f"MODEL={in_store(evil)}"],
                            "canary_mod.Evil"),
        "resume, a lookalike": (["resume", "TASK=forecasting", f"RUN={lookalike_file}"], lookalike),
        "no spec, runs:/": (["predict", "TASK=forecasting", f"INPUT={prices}", f"MODEL={in_store(specless)}"],
                            "holds no trained model"),
    }  # fmt: skip
    for what, (args, named) in refusals.items():
        refused = run_make(sproject, *args, check=False, **env)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr, (what, refused.stderr[-3000:])
        errors = [line for line in refused.stderr.splitlines() if line.startswith("ERROR:")]
        assert len(errors) == 1 and named in errors[0], (what, refused.stderr[-3000:])
        assert not list(canary.glob("canary_mod/[IN]*")), f"{what}: the checkpoint's module was imported"

    # The registry's class path, with the hostile arguments beside it: the model is the registry's, made with its
    # own arguments; nothing else the checkpoint says is imported or acted on.
    disguised = crafted(trained, tmp_path / "disguised" / "best.ckpt", **hostile)
    predicted = run_make(sproject, "predict", "TASK=forecasting", f"INPUT={prices}", f"MODEL={in_store(disguised)}",
                         **env)  # fmt: skip
    assert "Wrote 50 predictions" in predicted.stdout + predicted.stderr
    tested = run_cli(sproject, "test", "--config", "configs/forecasting.yaml", "--ckpt_path", str(disguised),
                     "--trainer.enable_progress_bar", "false", "--tracking.run_name", "disguised", **env)  # fmt: skip
    assert "Traceback" not in tested.stderr
    assert not list(canary.glob("canary_mod/[IN]*")), "the checkpoint's module was imported"
    (test_run,) = [r for r in store.runs() if r.info.run_name == "disguised"]
    assert "test/mase" in test_run.data.metrics
    taken = {"weights_path", "pretrained", "class_path", "init_args"} & set(test_run.data.params)
    assert not taken, test_run.data.params


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
