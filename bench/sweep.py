"""Sweep overhead benchmark: python bench/sweep.py [--trials N] [--epochs E]

What a sweep adds to each trial, next to the trial's own training, on a baked forecasting project's sample data:
  training   seconds from the start to the end of ``Trainer.fit`` inside the trial's process (a timing callback);
  trial      seconds the study records for the trial (ask to tell): process start, imports, config, store,
             data set-up, the training, the end of its MLflow run, and the sweep's own reporting;
  alone      the same training run once by ``python -m <package> fit`` outside a sweep, start to exit (after the
             sweep, on the store it made: a new store's tables take seconds to create, once).
Prints one line per figure: (trial - training) / training, the overhead ratio per trial; trial / alone, what the
sweep adds to a plain training; and the overhead in seconds against a one-minute trial.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import bake, project_env  # noqa: E402

PACKAGE = "bench_project"
TIMER = Path(__file__).resolve().parent  # fit_timer.py
FLAGS = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false"]
SPACE = """
epochs: {epochs}
sampler: {{class: RandomSampler, seed: 0}}
pruner: {{class: NopPruner}}
params:
  model.init_args.lr: {{type: float, low: 0.002, high: 0.004, log: true}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        choice = {"image_captioning": False, "price_forecasting": True, "speech_transcription": False}
        project = bake(out, **choice, project_name="Bench Project", package_name=PACKAGE)
        env = project_env(project, PYTHONPATH=str(TIMER), MLFLOW_TRACKING_URI=f"sqlite:///{out / 'mlflow.db'}")
        env["FIT_TIMER_OUT"] = str(out / "fit")
        subprocess.run([sys.executable, "-m", f"{PACKAGE}.sample_data", "forecasting"], cwd=project, env=env,
                       check=True, capture_output=True)  # fmt: skip
        (out / "space.yaml").write_text(SPACE.format(epochs=options.epochs))
        fit = ["--config", "configs/forecasting.yaml", *FLAGS, "--trainer.callbacks+=fit_timer.FitTimer"]

        warm = [sys.executable, "-c", f"import {PACKAGE}.cli, {PACKAGE}.sweep, mlflow, optuna"]
        subprocess.run(warm, cwd=project, env=env, check=True)  # a cold file cache is not the sweep's cost
        sweep = [sys.executable, "-m", f"{PACKAGE}.sweep", "run", "forecasting", "--name", "bench"]
        sweep += ["--trials", str(options.trials), "--space", str(out / "space.yaml"), "--", *fit]
        subprocess.run(sweep, cwd=project, env=env, check=True, capture_output=True)
        started = time.monotonic()
        alone_env = {**env, "SWEEP_TRIAL": "alone"}
        subprocess.run([sys.executable, "-m", PACKAGE, "fit", *fit, "--trainer.max_epochs", str(options.epochs)],
                       cwd=project, env=alone_env, check=True, capture_output=True)  # fmt: skip
        alone = time.monotonic() - started

        trials, ends = trial_seconds(project)
        timed = [json.loads(Path(f"{out / 'fit'}.{number}").read_text()) for number in range(options.trials)]
    training = [t["seconds"] for t in timed]
    overhead = [t - f for t, f in zip(trials, training, strict=True)]
    startup = statistics.median(t["startup"] for t in timed)
    after = statistics.median(end - t["ended"] for end, t in zip(ends, timed, strict=True))
    median_training, median_overhead = statistics.median(training), statistics.median(overhead)
    print(
        f"sweep trial overhead / its training: {median_overhead / median_training:.2f} "
        f"({median_overhead:.1f} s on {median_training:.1f} s of training, median of {options.trials} trials)"
    )
    print(
        f"sweep trial / the same training alone: {statistics.median(trials) / alone:.2f} "
        f"({statistics.median(trials):.1f} s vs {alone:.1f} s)"
    )
    print(f"sweep trial overhead / a one-minute trial: {median_overhead / 60:.2f}")
    print(f"  of which: process start to fit {startup:.1f} s, fit end to the study's tell {after:.1f} s")


def trial_seconds(project: Path) -> tuple[list[float], list[float]]:
    """The study's own record of each trial: ask to tell, and when it was told (seconds since the epoch)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = str(project / "sweeps" / "forecasting-bench.journal")
    study = optuna.load_study(study_name="forecasting-bench", storage=optuna.storages.JournalStorage(
        JournalFileBackend(journal)))  # fmt: skip
    return [t.duration.total_seconds() for t in study.trials], [t.datetime_complete.timestamp() for t in study.trials]


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
