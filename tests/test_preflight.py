"""What is checked before any compute: the tracking URI of every scheme, the folders a command writes; and where
trainings without a logger keep their checkpoints (their own folder per task and training, found by best/last).
"""

from __future__ import annotations

import importlib
import os

import inprocess
import pytest
from inprocess import FAST


@pytest.fixture(scope="module")
def baked(project, package, tmp_path_factory) -> inprocess.Project:
    return inprocess.prepare(project, package, tmp_path_factory.mktemp("in-process"))


@pytest.fixture
def cli(baked, monkeypatch) -> inprocess.Project:
    return inprocess.enter(baked, monkeypatch)


@pytest.fixture(scope="module")
def preflight(package):
    return importlib.import_module(f"{package.__name__}.preflight")


@pytest.fixture(scope="module")
def checkpoints(package):
    return importlib.import_module(f"{package.__name__}.checkpoints")


SCHEMES = "http(s)://host:port (an MLflow server), sqlite:////absolute/path/mlflow.db"
URIS = {  # URI -> None (usable here) or the words its one line must hold
    "htp:/host": ["tracking URI 'htp:/host'", "has the scheme htp:", SCHEMES],
    "http:/host": ["tracking URI 'http:/host' names no server", SCHEMES],
    "https://": ["names no server"],
    "mlflow.example.com:5000": ["has the scheme mlflow.example.com:"],
    "sqlite:/mlflow.db": ["is not a SQLite file URI (write sqlite:////absolute/path/mlflow.db)"],
    "sqlite:////etc/hostname/mlflow.db": ["the tracking store's folder", "'/etc/hostname' is a file, not a folder"],
    "postgresql://user:secret@db:5432/mlflow": [
        "tracking URI 'postgresql://***@db:5432/mlflow' needs the psycopg2 driver",
        "write postgresql+psycopg://",
    ],  # noqa: E501
    "mysql+pymysql://user@db/mlflow": ["needs the pymysql driver", "pip install pymysql"],
    "file://server/share/mlruns": ["names a host"],
    "databricks": ["needs DATABRICKS_HOST"],
    "http://localhost:5000": None,
    "https://user:token@mlflow.example.com": None,
    "postgresql+psycopg://user@db:5432/mlflow": None,
    "sqlite:///{tmp}/store/mlflow.db": None,
    "file://{tmp}/mlruns": None,
    "{tmp}/mlruns": None,
}


@pytest.mark.parametrize(("uri", "says"), URIS.items(), ids=URIS.keys())
def test_every_tracking_uri_is_checked_and_a_bad_one_named_with_the_schemes_that_work(
    preflight, tmp_path, monkeypatch, uri, says
):
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if importlib.util.find_spec("psycopg2") is not None and "psycopg2" in str(says):
        pytest.skip("psycopg2 is installed here")
    uri = uri.format(tmp=tmp_path)
    if says is None:
        preflight.check_tracking_uri(uri)
        return
    with pytest.raises(preflight.PreflightError) as error:
        preflight.check_tracking_uri(uri)
    line = str(error.value)
    assert "\n" not in line and "secret" not in line
    for words in says:
        assert words in line, (words, line)


def test_a_bad_tracking_uri_stops_the_command_before_the_data_is_read(cli, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "htp:/mlflow.example.com")
    code, line, printed, runs = cli.fit("forecasting", "--data.init_args.path", "/nonexistent/prices.csv")
    assert code == 1 and "tracking URI 'htp:/mlflow.example.com'" in line and "prices.csv" not in line, line
    assert "Traceback" not in printed and runs == 0


def test_folders_that_cannot_be_written_are_refused_up_front(preflight, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(preflight.PreflightError, match=r"'.*a-file/runs' cannot be made: '.*a-file' is a file"):
        preflight.check_writable([tmp_path / "a-file" / "runs"])
    if os.geteuid() != 0:  # root writes into read-only folders; the file case above stands in for it there
        (tmp_path / "locked").mkdir(mode=0o555)
        with pytest.raises(preflight.PreflightError, match=r"'.*locked/runs' is not writable"):
            preflight.check_writable([tmp_path / "locked" / "runs"])
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _: type("Usage", (), {"free": 5 * 2**20})())
    with pytest.raises(preflight.PreflightError, match=r"is on a disk with 5 MB free \(at least 200 MB needed\)"):
        preflight.check_writable([tmp_path / "runs"])


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--trainer.default_root_dir", "{file}/runs"], ["runs", "is a file, not a folder"]),
        (["--trainer.log_every_n_steps", "0"], ["trainer.log_every_n_steps"]),
    ],
    ids=["runs-under-a-file", "log-every-zero"],
)
def test_a_command_that_could_not_write_its_results_stops_before_compute(cli, tmp_path, args, names):
    (tmp_path / "file").write_text("x")
    args = [a.format(file=tmp_path / "file") for a in args]
    code, line, printed, runs = cli.fit("forecasting", *cli.data_args("forecasting"), *args)
    assert code == 1 and all(n in line for n in names) and runs == 0 and "Traceback" not in printed, line


def test_untracked_trainings_get_a_checkpoint_folder_each_and_best_last_find_them(cli, checkpoints, tmp_path):
    runs_dir = tmp_path / "runs"
    epoch = {**FAST, "trainer.max_steps": "-1"}  # a whole (two-batch) epoch: validation runs and checkpoints save
    for _ in range(2):
        code, line, printed, runs = cli.fit(
            "forecasting", *cli.data_args("forecasting"), "--trainer.logger", "false",
            "--trainer.default_root_dir", str(runs_dir), fast=epoch,
        )  # fmt: skip
        assert code == 0 and runs == 0, (line, printed[-2000:])
    folders = sorted((runs_dir / "forecasting").glob("untracked-*/checkpoints"))
    assert len(folders) == 2, sorted(p.relative_to(runs_dir) for p in runs_dir.rglob("*"))
    assert all(sorted(p.name for p in f.iterdir()) == ["best.ckpt", "last.ckpt"] for f in folders), "no -vN copies"
    assert not (runs_dir / "checkpoints").exists(), "nothing in one flat folder for every task"
    newest = max(folders, key=lambda f: (f / "last.ckpt").stat().st_mtime)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert checkpoints.resolve("best", "forecasting", runs_dir, uri) == newest / "best.ckpt"
    assert checkpoints.resolve("last", "forecasting", runs_dir, uri) == newest / "last.ckpt"
