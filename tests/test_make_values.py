"""Every variable a make recipe uses is taken literally: `$(...)`, backticks, `;` and quotes in a value given on
the command line reach neither make nor the shell. The recipes run for real, against stand-ins for Python,
torchrun, mlflow and sbatch that do nothing, so the only way a witness file appears is a value that was run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = {  # target: (the variables its recipe uses, what else it needs)
    "help": (["TASK"], []),
    "train": (["TRAINER", "DEVICES", "PRECISION", "DEMO"], ["TASK=forecasting"]),
    "resume": (["RUN"], ["TASK=forecasting"]),
    "replay": (["RUN"], []),
    "predict": (["INPUT", "CKPT", "MODEL"], ["TASK=forecasting", "INPUT=x"]),
    "train-torchrun": (["NNODES", "NPROC", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"], ["TASK=forecasting"]),
    "train-slurm": (["NNODES", "NPROC"], ["TASK=forecasting"]),
    "mlflow-ui": (["MLFLOW_HOST", "MLFLOW_PORT"], []),
    "mlflow-server": (
        ["MLFLOW_HOST", "MLFLOW_PORT", "MLFLOW_AUTH_ADMIN_PASSWORD_FILE", "BACKEND", "MLFLOW_WORKERS"],
        ["MLFLOW_AUTH=1"],
    ),
    "mlflow-db-upgrade": (["BACKEND"], []),
    "mlflow-migrate": (["TO", "FROM"], ["TO=http://127.0.0.1:9"]),
}


def stand_ins(folder: Path) -> tuple[Path, Path]:
    """A VENV whose python runs only `-c` snippets (the Makefile's task list) and a bin folder with sbatch."""
    venv = folder / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(
        f'#!/bin/sh\ncase "$1" in -c) exec {sys.executable} "$@";; esac\necho "$@" >> {folder}/argv\n'
        f'env > {folder}/env-python\necho "${{FAKE_STORE_URI:-sqlite:///{folder}/x.db}}"\n'
    )  # `store init` prints $FAKE_STORE_URI; each call's argv and the last one's environment are kept
    for name in ("torchrun", "mlflow"):
        (venv / "bin" / name).write_text("#!/bin/sh\nexit 0\n")
    tools = folder / "tools"
    tools.mkdir()
    (tools / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    for path in [*(venv / "bin").iterdir(), tools / "sbatch"]:
        path.chmod(0o755)
    return venv, tools


@pytest.mark.parametrize("target", list(RECIPES))
def test_no_value_of_a_recipe_variable_is_run(project: Path, tmp_path: Path, target: str) -> None:
    venv, tools = stand_ins(tmp_path)
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    variables, needs = RECIPES[target]
    payloads = ("$(touch {w}-a)", "`touch {w}-b`", "1;touch {w}-c;'\"$(shell touch {w}-d)")
    for variable, payload in [(v, p) for v in variables for p in payloads]:
        value = payload.format(w=tmp_path / f"ran-{variable}")
        assignments = [a for a in needs if not a.startswith(f"{variable}=")]
        result = subprocess.run(
            ["make", "-C", str(project), f"VENV={venv}", target, *assignments, f"{variable}={value}"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        ran = sorted(p.name for p in tmp_path.glob(f"ran-{variable}*"))
        assert not ran, f"make {target} {variable}=...: {ran}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


def test_a_finished_slurm_array_task_removes_its_own_preemption_checkpoints(project: Path, tmp_path: Path) -> None:
    """An array task keeps them in runs/slurm/<array job id>_<task id>/ (checkpoints.job_root): that folder is
    cleaned when it finishes, and no other job's."""
    venv, tools = stand_ins(tmp_path)
    (tools / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tools / "srun").chmod(0o755)
    folders = {name: project / "runs" / "slurm" / name for name in ("77_3", "77_4", "78")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hpc_ckpt_1.ckpt").write_bytes(b"checkpoint")
    slurm = {"SLURM_JOB_ID": "78", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "VENV": str(venv), **slurm}
    try:
        subprocess.run(["bash", "scripts/slurm.sbatch", "forecasting"], cwd=project, env=env, check=True, timeout=60)
        left = {name for name, folder in folders.items() if (folder / "hpc_ckpt_1.ckpt").exists()}
    finally:
        for folder in folders.values():
            (folder / "hpc_ckpt_1.ckpt").unlink(missing_ok=True)
    assert left == {"77_4", "78"}, left


DB_URI = "postgresql://ml:S3cret-pw@db.example.com/mlflow"
SERVER_URI = "http://ml:S3cret-pw@host:5000"


@pytest.mark.parametrize(
    ("target", "given", "received"),
    [
        ("mlflow-ui", [], ("env", f"MLFLOW_BACKEND_STORE_URI={DB_URI}")),
        ("mlflow-server", [], ("env", f"MLFLOW_BACKEND_STORE_URI={DB_URI}")),
        ("mlflow-db-upgrade", [f"BACKEND={DB_URI}"], ("env-python", f"MLFLOW_TRACKING_URI={DB_URI}")),
        ("mlflow-migrate", [f"TO={SERVER_URI}"], ("env-python", f"MIGRATE_TO={SERVER_URI}")),
    ],
)  # fmt: skip
def test_a_store_uri_reaches_its_command_in_the_environment_not_in_argv(
    project: Path, tmp_path: Path, target: str, given: list[str], received: tuple[str, str]
) -> None:
    """A URI with a password in it, which every user of the host would see in `ps` (/proc/<pid>/cmdline)."""
    venv, tools = stand_ins(tmp_path)
    (venv / "bin" / "mlflow").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/argv\nenv > {tmp_path}/env\n')
    env = {**os.environ, "FAKE_STORE_URI": DB_URI}
    subprocess.run(["make", "-C", str(project), f"VENV={venv}", target, *given], env=env, check=True,
                   capture_output=True)  # fmt: skip
    argv = (tmp_path / "argv").read_text()
    assert argv.strip() and "S3cret-pw" not in argv, argv
    file, line = received
    assert line in (tmp_path / file).read_text().splitlines()
