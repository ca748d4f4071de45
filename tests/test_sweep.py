"""Hyper-parameter sweeps (`make sweep`): crashes, pruning, SIGKILL and resume, parallel workers, DDP, SLURM arrays.

Tiny trials on the forecasting sample (2-3 epochs of 3 batches); each test has its own sweep name and MLflow store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PACKAGE, VENV, Store, assert_refused, forecasting_project, project_env, run_make

FAULTS = str(Path(__file__).parent)
TINY = (
    "--trainer.accelerator cpu --trainer.limit_train_batches 3 --trainer.limit_val_batches 2 "
    "--trainer.log_every_n_steps 1 --tracking.system_metrics false"
)
SPACE = """
epochs: {epochs}
sampler: {{class: RandomSampler, seed: 0}}
pruner: {pruner}
params:
  model.init_args.lr: {{type: float, low: 0.001, high: 0.02, log: true}}
  model.init_args.hidden_size: {{type: int, low: 8, high: 32, step: 8}}
  model.init_args.backbone: {{type: categorical, choices: [lstm, gru]}}
"""
NO_PRUNING = "{class: NopPruner}"


@pytest.fixture(scope="module")
def fproject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return forecasting_project(tmp_path_factory.mktemp("sweep"))


def space(folder: Path, epochs: int = 2, pruner: str = NO_PRUNING) -> str:
    path = folder / "space.yaml"
    path.write_text(SPACE.format(epochs=epochs, pruner=pruner))
    return str(path)


def load_study(project: Path, name: str):
    import optuna

    journal = project / "sweeps" / f"forecasting-{name}.journal"
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=f"forecasting-{name}", storage=storage)


def children(store: Store, parent: str) -> list:
    return [r for r in store.runs() if r.data.tags.get("mlflow.parentRunId") == parent]


def states(study) -> dict[str, int]:
    found: dict[str, int] = {}
    for trial in study.trials:
        found[trial.state.name] = found.get(trial.state.name, 0) + 1
    return found


# ---- refused before any trial ----------------------------------------------------------------------------------
GOOD = {"model.init_args.lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True}}
BAD_SPACES = [
    ({"model.init_args.lrr": GOOD["model.init_args.lr"]}, ["params.model.init_args.lrr", "model.init_args.lr?"]),
    ({"model.init_args.lr": {"type": "float", "low": 0.01, "high": 0.001}}, ["params.model.init_args.lr", "empty"]),
    ({"model.init_args.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, ["init_args.lr", "log"]),
    ({"model.init_args.backbone": {"type": "categorical", "choices": []}}, ["init_args.backbone", "choices"]),
    ({"model.init_args.hidden_size": {"type": "float", "low": 8.5, "high": 9.5}}, ["hidden_size"]),
    ({"data.init_args.lookback": {"type": "integer", "low": 8, "high": 9}}, ["data.init_args.lookback", "type"]),
]


@pytest.mark.parametrize(("params", "names"), BAD_SPACES, ids=["path", "range", "log", "choices", "type", "kind"])
def test_a_bad_space_is_refused_by_name(
    project: Path, package, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: dict, names: list[str]
) -> None:
    monkeypatch.chdir(project)  # the session's project, whose package this process imports (conftest.package)
    from demo_project.space import SpaceError, read_space

    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"epochs": 1, "params": params}))
    with pytest.raises(SpaceError) as refused:
        read_space(path, ["--config", "configs/forecasting.yaml"], "forecasting")
    for name in names:
        assert name in str(refused.value), (name, str(refused.value))
    assert str(path.name) in str(refused.value)


def test_make_sweep_refuses_a_bad_space_before_any_trial(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "refused")
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  model.init_args.lr: {type: float, low: -1, high: 0.1, log: true}\n")
    result = subprocess.run(
        [sys.executable, "-m", f"{PACKAGE}.sweep", "run", "forecasting", "--name", "refused", "--space", str(bad)],
        cwd=fproject, env=project_env(fproject, **store.env), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert_refused(result, "bad.yaml", "params.model.init_args.lr", "log scale")
    assert not (fproject / "sweeps" / "forecasting-refused.journal").exists()
    assert not Path(store.uri.removeprefix("sqlite:///")).exists(), "no store, no run: nothing started"


# ---- a sweep with a crash and a pruner, then the best config trains ----------------------------------------------
@pytest.mark.slow
def test_a_sweep_with_a_crash_and_pruning_finishes_and_its_best_config_trains(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "crash")
    aggressive = "{class: PercentilePruner, percentile: 1.0, n_startup_trials: 1, n_warmup_steps: 0}"
    args = f"{TINY} --trainer.callbacks+=faults.RaiseInTrial"
    result = run_make(fproject, "sweep", "TRIALS=6", "SWEEP=crash", f"SPACE={space(tmp_path, 3, aggressive)}",
                      f"ARGS={args}", PYTHONPATH=FAULTS, FAULT_TRIAL="2", **store.env)  # fmt: skip
    assert "trial 2: FAIL (exit 1: " in result.stdout and "injected failure in trial 2" in result.stdout, result.stdout
    study = load_study(fproject, "crash")
    found = states(study)
    assert len(study.trials) == 6 and found["FAIL"] == 1 and found.get("PRUNED", 0) >= 1, found
    parent = store.runs()[-1]  # the first run made
    assert parent.data.tags["sweep.name"] == "crash" and parent.info.status == "FINISHED"
    assert study.user_attrs["parent_run"] == parent.info.run_id
    kids = {int(r.data.tags["sweep.trial"]): r for r in children(store, parent.info.run_id)}
    assert sorted(kids) == list(range(6)), sorted(kids)
    for trial in study.trials:
        run = kids[trial.number]
        assert run.info.status == ("FAILED" if trial.state.name == "FAIL" else "FINISHED"), (trial.number, run.info)
        assert run.data.tags["sweep.state"].startswith(trial.state.name)
        if trial.state.name == "PRUNED":  # stopped early: fewer validations logged than the sweep's 3 epochs
            epochs = len(store.steps(run.info.run_id, "val/loss"))
            assert epochs == trial.user_attrs["pruned_at_epoch"] + 1 < 3, (trial.number, epochs)
        elif trial.state.name == "COMPLETE":
            assert len(store.steps(run.info.run_id, "val/loss")) == 3
            assert float(run.data.params["lr"]) == pytest.approx(trial.params["model.init_args.lr"])
    best = study.best_trial
    assert float(parent.data.tags["best.model.init_args.lr"]) == pytest.approx(best.params["model.init_args.lr"])
    assert "best/val/loss" in parent.data.metrics
    from mlflow import MlflowClient

    artifacts = {a.path for a in MlflowClient(store.uri).list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/optimization_history.png", "sweep/trials.csv", "sweep/forecasting-crash-best.yaml"} <= artifacts
    report = run_make(fproject, "sweep-report", "SWEEP=crash").stdout
    assert report.count("COMPLETE") + report.count("PRUNED") == 5 and "best: trial" in report, report

    best_file = fproject / "configs" / "sweep" / "forecasting-crash-best.yaml"
    trained = Store(tmp_path, "best")
    run_make(fproject, "train", f"ARGS={TINY} --trainer.max_epochs 1 --config {best_file}", **trained.env)
    (run,) = trained.runs()
    assert run.info.status == "FINISHED"
    assert run.data.params["backbone"] == best.params["model.init_args.backbone"]
    assert int(run.data.params["hidden_size"]) == best.params["model.init_args.hidden_size"]


# ---- SIGKILL in the middle of a trial, then the same command again ----------------------------------------------
def sweep_command(name: str, trials: int, space_file: str, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", f"{PACKAGE}.sweep", "run", "forecasting", "--name", name, "--trials", str(trials),
            "--workers", str(workers), "--space", space_file, "--", "--config", "configs/forecasting.yaml",
            *TINY.split()]  # fmt: skip


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.slow
def test_sigkill_mid_trial_then_rerun_ends_with_exactly_trials_finished(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "killed")
    command = sweep_command("killed", 2, space(tmp_path, epochs=3))
    held = tmp_path / "trial-1-held"  # trial 1 has validated once and waits: kill the sweep in the middle of it
    env = project_env(fproject, PYTHONPATH=FAULTS, FAULT_TRIAL="1", FAULT_FILE=str(held), **store.env)
    log = tmp_path / "first.log"
    with log.open("w") as out:
        held_command = [*command, "--trainer.callbacks+=faults.HoldTrial"]
        driver = subprocess.Popen(held_command, cwd=fproject, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: held.exists() or driver.poll() is not None, 400, "trial 1's first validation")
            assert driver.poll() is None, log.read_text()[-3000:]
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            if driver.poll() is None:
                driver.kill()
    killed = next(r for r in store.runs() if r.data.tags.get("sweep.trial") == "1")
    trial_pid = int(killed.data.tags["process.pid"])
    wait_for(lambda: not _alive(trial_pid), 30, "the killed sweep's trial process to die with it")
    # a journal lock left behind, as by a kill -9 while writing (optuna #5921): the rerun must not wait on it
    lock = fproject / "sweeps" / "forecasting-killed.journal.lock"
    lock.touch()
    os.utime(lock, (time.time() - 60, time.time() - 60))

    rerun = subprocess.run(command, cwd=fproject, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "Removed a stale lock" in rerun.stdout and "trial 1: its worker died; marked FAIL" in rerun.stdout
    study = load_study(fproject, "killed")
    found = states(study)
    assert found.get("COMPLETE", 0) + found.get("PRUNED", 0) == 2 and found["FAIL"] == 1, found
    assert study.trials[1].state.name == "FAIL"
    parent = study.user_attrs["parent_run"]
    kids = children(store, parent)
    numbers = [r.data.tags["sweep.trial"] for r in kids]
    assert sorted(numbers) == ["0", "1", "2"], numbers  # one child per trial, none run twice
    statuses = {r.data.tags["sweep.trial"]: r.info.status for r in kids}
    assert statuses == {"0": "FINISHED", "1": "KILLED", "2": "FINISHED"}, statuses
    assert next(r for r in store.runs() if r.info.run_id == parent).info.status == "FINISHED"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waits for its reaper: it has stopped
        return f.read().split(") ")[1][0] != "Z"


# ---- parallel workers: threads of one sweep and a second process on the same study ------------------------------
@pytest.mark.slow
def test_two_sweep_processes_share_one_study_and_parent(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "parallel")
    space_file = space(tmp_path)
    env = project_env(fproject, **store.env)
    both = [
        subprocess.Popen(sweep_command("parallel", 3, space_file, workers), cwd=fproject, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for workers in (2, 1)
    ]  # fmt: skip
    outputs = [process.communicate(timeout=600)[0] for process in both]
    assert [p.returncode for p in both] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    study = load_study(fproject, "parallel")
    assert [t.number for t in study.trials] == [0, 1, 2] and states(study) == {"COMPLETE": 3}
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2, "both processes ran trials"
    parents = [r for r in store.runs() if "sweep.name" in r.data.tags and "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, "the study and its parent run are made once"
    kids = children(store, parents[0].info.run_id)
    assert sorted(r.data.tags["sweep.trial"] for r in kids) == ["0", "1", "2"]
    starts = sorted((t.datetime_start, t.datetime_complete) for t in study.trials)
    assert any(b[0] < a[1] for a, b in zip(starts, starts[1:], strict=False)), "trials ran at the same time"


# ---- a DDP trial, pruned, on 2 CPU processes --------------------------------------------------------------------
@pytest.mark.slow
def test_a_pruned_ddp_trial_stops_on_both_ranks_with_the_same_values(fproject: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "ddp")
    prune_all = "{class: ThresholdPruner, upper: 0.0}"  # val/loss is positive: pruned after the first validation
    record = tmp_path / "trained"
    args = f"{TINY} --trainer.callbacks+=faults.RecordTrainedValues"
    sweep = ["sweep", "TRIALS=1", "SWEEP=ddp", f"SPACE={space(tmp_path, 3, prune_all)}", "TRAINER=ddp", "DEVICES=2"]
    run_make(fproject, *sweep, f"ARGS={args}", PYTHONPATH=FAULTS, FAULT_RECORD=str(record), timeout=400, **store.env)
    (trial,) = load_study(fproject, "ddp").trials
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_at_epoch"] == 0
    ranks = [json.loads(Path(f"{record}.0.{rank}").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["hparams"] == ranks[1]["hparams"]
    assert ranks[0]["hparams"]["lr"] == pytest.approx(trial.params["model.init_args.lr"])
    assert [r["epochs"] for r in ranks] == [1, 1], "both ranks stopped after the first epoch"


# ---- SLURM: an array of 2 workers on the single-node cluster the suite starts ------------------------------------
@pytest.mark.slow
def test_sweep_slurm_runs_an_array_of_two_workers(slurm: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    """`slurm` (test_slurm.py) skips when slurm is not installed."""
    project = forecasting_project(tmp_path)  # its own project: sbatch runs from the project folder
    store = Store(tmp_path, "slurm")
    result = run_make(project, "sweep-slurm", "TRIALS=2", "WORKERS=2", "SWEEP=array", f"SPACE={space(tmp_path)}",
                      f"ARGS={TINY}", **slurm, **store.env)  # fmt: skip
    job = next(line.split()[-1] for line in result.stdout.splitlines() if line.startswith("Submitted batch job"))
    env = project_env(project, VENV=str(VENV), **slurm, **store.env)

    def queued() -> bool:
        shown = subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True)
        return bool(shown.stdout.strip())

    wait_for(lambda: not queued(), 500, f"array job {job}")
    logs = sorted(project.glob(f"slurm-{job}_*.out"))
    study = load_study(project, "array")
    assert len(logs) == 2, sorted(p.name for p in project.glob("slurm-*"))
    text = "\n".join(p.read_text()[-2000:] for p in logs)
    assert states(study) == {"COMPLETE": 2}, text
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2, text
    parent = study.user_attrs["parent_run"]
    assert sorted(r.data.tags["sweep.trial"] for r in children(store, parent)) == ["0", "1"]
    assert next(r for r in store.runs() if r.info.run_id == parent).info.status == "FINISHED"


from test_slurm import slurm  # noqa: E402,F401  (the cluster fixture, started once if a test here needs it)
