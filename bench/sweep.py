"""Sweep overhead benchmark: python bench/sweep.py [--trials N] [--epochs E] [--template <checkout>]

What a sweep adds to each trial, next to the trial's own training, on a baked forecasting project's sample data.
The same sweep runs twice: with every trial a fresh Python (``SWEEP_FRESH_PYTHON=1``: the baseline, what a
``subprocess`` per trial costs) and as shipped, each trial a fork of a server that has imported torch, Lightning
and MLflow once. Per trial:
  training   seconds from the start to the end of ``Trainer.fit`` inside the trial's process (a timing callback);
  trial      seconds the study records for the trial (ask to tell): process start, imports, config, store,
             data set-up, the training, the end of its MLflow run, and the sweep's own reporting;
  between    seconds from one trial's tell to the next one's ask (one worker): what the sweep does in between;
  alone      the same training run once by ``python -m <package> fit`` outside a sweep, start to exit (after the
             sweeps, on the store they made: a new store's tables take seconds to create, once).
Prints, for each way: (trial - training) / training, the overhead ratio per trial; trial / alone; the overhead
against a one-minute trial (and the first trial's, which waits for the forkserver's imports once per sweep process);
then the shipped overhead over the baseline's.
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
from conftest import REPO, bake, project_env  # noqa: E402

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
WAYS = {"fresh": "a fresh Python per trial (baseline)", "forked": "forked from a preloaded server (shipped)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--template", default=str(REPO), help="the template to bake (another checkout: before/after)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        choice = {"image_captioning": False, "price_forecasting": True, "speech_transcription": False}
        project = bake(out, options.template, **choice, project_name="Bench Project", package_name=PACKAGE)
        env = project_env(project, PYTHONPATH=str(TIMER), MLFLOW_TRACKING_URI=f"sqlite:///{out / 'mlflow.db'}")
        subprocess.run([sys.executable, "-m", f"{PACKAGE}.sample_data", "forecasting"], cwd=project, env=env,
                       check=True, capture_output=True)  # fmt: skip
        (out / "space.yaml").write_text(SPACE.format(epochs=options.epochs))
        fit = ["--config", "configs/forecasting.yaml", *FLAGS, "--trainer.callbacks+=fit_timer.FitTimer"]

        warm = [sys.executable, "-c", f"import {PACKAGE}.cli, {PACKAGE}.sweep, mlflow, optuna"]
        subprocess.run(warm, cwd=project, env=env, check=True)  # a cold file cache is not the sweep's cost
        figures = {}
        for way in WAYS:
            sweep = [sys.executable, "-m", f"{PACKAGE}.sweep", "run", "forecasting", "--name", way]
            sweep += ["--trials", str(options.trials), "--space", str(out / "space.yaml"), "--", *fit]
            way_env = {**env, "FIT_TIMER_OUT": str(out / way), "SWEEP_FRESH_PYTHON": "1" if way == "fresh" else "0"}
            subprocess.run(sweep, cwd=project, env=way_env, check=True, capture_output=True)
            figures[way] = measured(project, way, out / way, options.trials)
        started = time.monotonic()
        alone_env = {**env, "FIT_TIMER_OUT": str(out / "alone"), "SWEEP_TRIAL": "alone"}
        subprocess.run([sys.executable, "-m", PACKAGE, "fit", *fit, "--trainer.max_epochs", str(options.epochs)],
                       cwd=project, env=alone_env, check=True, capture_output=True)  # fmt: skip
        alone = time.monotonic() - started
    for way, said in WAYS.items():
        f = figures[way]
        print(f"{way}: {said}")
        print(
            f"  sweep trial overhead / its training: {f['overhead'] / f['training']:.2f} "
            f"({f['overhead']:.1f} s on {f['training']:.1f} s of training, median of {options.trials} trials)"
        )
        print(
            f"  sweep trial / the same training alone: {f['trial'] / alone:.2f} ({f['trial']:.1f} s vs {alone:.1f} s)"
        )
        print(f"  sweep trial overhead / a one-minute trial: {f['overhead'] / 60:.3f}")
        print(
            f"    of which: process start to fit {f['startup']:.1f} s, fit end to the study's tell "
            f"{f['after']:.1f} s; between trials {f['between']:.1f} s; the first trial's overhead {f['first']:.1f} s"
        )
    ratio = figures["forked"]["overhead"] / figures["fresh"]["overhead"]
    print(f"shipped overhead / fresh-Python overhead: {ratio:.2f}")


def measured(project: Path, way: str, timer: Path, trials: int) -> dict[str, float]:
    """Medians over the trials of sweep ``way``: training, trial, overhead, startup, after, between (seconds)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = str(project / "sweeps" / f"forecasting-{way}.journal")
    study = optuna.load_study(study_name=f"forecasting-{way}", storage=optuna.storages.JournalStorage(
        JournalFileBackend(journal)))  # fmt: skip
    timed = [json.loads(Path(f"{timer}.{number}").read_text()) for number in range(trials)]
    spans = [(t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in study.trials]
    trial = [end - start for start, end in spans]
    training = [t["seconds"] for t in timed]
    return {
        "training": statistics.median(training),
        "trial": statistics.median(trial),
        "overhead": statistics.median(a - b for a, b in zip(trial, training, strict=True)),
        "startup": statistics.median(t["startup"] for t in timed),
        "after": statistics.median(end - t["ended"] for (_, end), t in zip(spans, timed, strict=True)),
        "first": trial[0] - training[0],
        "between": statistics.median(b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False)) if trials > 1 else 0,
    }


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
