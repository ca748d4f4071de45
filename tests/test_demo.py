"""The first ten minutes: `make demo` trains every task on the budget of its configs/demo/<task>.yaml, and each run
must beat its baseline on the bundled sample data, with fixed seeds; the terminal of `make train` shows the model
summary, the progress and the metric tables, and none of the libraries' noise unless VERBOSE=1.

Each task trains once here, through `make train TASK=<task> DEMO=1` as `make demo` runs it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import bake, load_registry, mlflow_runs, run_make

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two pytest workers share two cores: more threads only spin-wait
# What the terminal showed before quiet.py, each a line or a part of one that must not come back.
NOISE = {
    "Lightning's advertisement": "💡 Tip",
    "torch's _pytree deprecation": "is deprecated, use `isinstance(treespec, TreeSpec)",
    "MLflow's system-metrics INFO lines": "system_metrics_monitor",
    "MLflow's pickle warning": "Saving pytorch model by Pickle",
    "Lightning's lines reformatted by mlflow.pytorch's logging.basicConfig": "INFO:pytorch_lightning",
    "Lightning's srun hint": "The `srun` command is available on your system but is not used",
    "jsonargparse's tuple dump": "Dump of a value that does not round-trip",
    "ModelCheckpoint's dirpath notice (predict)": "The dirpath has changed from",
    "ModelCheckpoint's non-empty folder notice (resume)": "exists and is not empty",
    "the skip notice as a Python warning": "input(s) were skipped (on_bad_input: skip); the list is in",
}
VERBOSE_ONLY = set(list(NOISE)[:4])  # what VERBOSE=1 brings back in a tiny training (not predict or resume)
REGISTRY = load_registry()


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bake(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def forecasting_demo(demo_project: Path):
    """The console output of `make train TASK=forecasting DEMO=1` (the fastest task) and its MLflow run."""
    # with the (opt-in) pickled MLflow model too, so that its warning and mlflow.pytorch's logging set-up happen
    args = ("TASK=forecasting", "DEMO=1", "ARGS=--tracking.log_model true")
    result = run_make(demo_project, "train", *args, **ONE_THREAD)
    return result, mlflow_runs(demo_project, "forecasting")[0]


def beats(task: str, metrics: dict[str, float]) -> None:
    """The task's headline test metric beats its baseline, both logged by the run."""
    entry = REGISTRY[task]
    score, baseline = metrics[f"test/{entry.metric}"], metrics[f"test/{entry.baseline}"]
    print(f"{task}: test/{entry.metric}={score:.3f} vs test/{entry.baseline}={baseline:.3f}")
    assert entry.beats_baseline(metrics), f"test/{entry.metric}={score} does not beat test/{entry.baseline}={baseline}"


def test_forecasting_demo_beats_the_naive_forecast_and_says_so(forecasting_demo, demo_project) -> None:
    _, run = forecasting_demo
    assert run.info.status == "FINISHED"
    beats("forecasting", run.data.metrics)
    assert run.data.metrics["test/mase"] < 0.9 * run.data.metrics["test/naive_mase"]
    # the MLflow UI's story: a readable name, the command and what to compare in the description, the demo tag
    assert run.info.run_name == "forecasting lstm hidden_size=64 quantile epochs=8"
    note = run.data.tags["mlflow.note.content"]
    assert "fit --config configs/forecasting.yaml --config configs/demo/forecasting.yaml" in note
    assert "**test/mase**" in note and "**test/naive_mase**" in note
    assert run.data.tags["budget"] == "demo"
    listed = run_make(demo_project, "-s", "runs").stdout
    assert f"{run.info.run_id}  FINISHED" in listed and "test/naive_mase=" in listed
    assert "beats the baseline  (forecasting lstm hidden_size=64 quantile epochs=8)" in listed


def test_make_train_shows_tables_and_progress_without_the_noise(forecasting_demo) -> None:
    result, _ = forecasting_demo
    console = result.stdout + result.stderr
    found = [what for what, text in NOISE.items() if text in console]
    assert not found, f"noise in the terminal: {found}\n{console[-4000:]}"
    for wanted in ("Trainable params", "Epoch 7/7", "Test metric", "test/mase", "test/naive_mase"):
        assert wanted in console, f"{wanted!r} is missing from the terminal:\n{console[-4000:]}"
    restored = [line for line in console.splitlines() if line.startswith("Restoring states from the checkpoint")]
    assert len(restored) == 1, restored  # once, and in Lightning's own plain form
    warned = [line for line in console.splitlines() if re.search(r"\.py:\d+: ", line)]  # path.py:123: message
    assert len(warned) == len(set(warned)), f"a warning shown more than once: {warned}"
    assert re.search(r"^Result: test/mase \S+ beats the baseline test/naive_mase", console, re.M), console[-2000:]


def test_predict_and_resume_are_quiet_too(forecasting_demo, demo_project, tmp_path) -> None:
    """The commands after a training: predict (with the sample's own prices) and a resume by one more epoch."""
    prices = demo_project / "data" / "sample" / "forecasting" / "prices.csv"
    predicted = run_make(demo_project, "predict", "TASK=forecasting", f"INPUT={prices}", **ONE_THREAD)
    resumed = run_make(demo_project, "resume", "TASK=forecasting", "ARGS=--trainer.max_epochs 9", **ONE_THREAD)
    for result in (predicted, resumed):
        console = result.stdout + result.stderr
        found = [what for what, text in NOISE.items() if text in console]
        assert not found, f"noise in the terminal: {found}\n{console[-4000:]}"
        warned = [line for line in console.splitlines() if re.search(r"\.py:\d+: ", line)]
        assert not warned, f"warnings with a source location: {warned}"
    assert "Wrote 50 predictions to predictions/forecasting.csv" in predicted.stdout + predicted.stderr  # 5 x 10 days
    assert "Result: test/mase " in resumed.stdout


def test_verbose_shows_what_is_silenced(demo_project) -> None:
    """The noise is silenced by quiet.py, not gone by chance: VERBOSE=1 brings it back (a tiny training)."""
    tiny = "--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 1"
    tiny += " --tracking.log_model true"
    result = run_make(demo_project, "train", "TASK=forecasting", "VERBOSE=1", f"ARGS={tiny}", **ONE_THREAD)
    console = result.stdout + result.stderr
    shown = {what for what, text in NOISE.items() if text in console}
    assert shown >= VERBOSE_ONLY, shown


@pytest.mark.parametrize("task", ["captioning", "transcription"])  # about 30 s each on 2 idle cores
def test_demo_budget_beats_the_baseline(demo_project: Path, task: str) -> None:
    result = run_make(
        demo_project, "train", f"TASK={task}", "DEMO=1", "ARGS=--trainer.enable_progress_bar false", **ONE_THREAD
    )
    run = mlflow_runs(demo_project, task)[0]
    assert run.info.status == "FINISHED"
    beats(task, run.data.metrics)
    entry = REGISTRY[task]  # the last line says it in words
    assert re.search(rf"^Result: test/{entry.metric} \S+ beats the baseline test/{entry.baseline}", result.stdout, re.M)
    if task == "transcription":  # on speakers never heard in training
        assert run.data.metrics["test/wer"] <= 0.5, run.data.metrics
    else:
        assert run.data.metrics["test/bleu4"] > 2 * run.data.metrics["test/common_bleu4"], run.data.metrics
