"""A sweep's results: the best config file, what the parent run shows (best values, plots, the trials table) and
``make sweep-report``, the trials as a table in the terminal."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .space import SpaceError
from .store import project_root

if TYPE_CHECKING:
    import optuna

    from .sweep import Sweep


def write_best(sweep: Sweep, study: optuna.Study) -> None:
    """``configs/sweep/<task>-<name>-best.yaml``: the best trial's values, nested as a config (a second --config)."""
    import yaml

    best = study.best_trial
    nested: dict[str, Any] = {}
    for key, value in best.params.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    space = sweep.space
    header = (
        f"# The best trial ({best.number}) of sweep {sweep.name!r}: {space.objective} = {best.value:.6g} "
        f"({space.direction}) after {space.epochs} epochs.\n"
        f'# make train TASK={sweep.task} ARGS="--config configs/sweep/{sweep.best_file.name}"\n'
    )
    sweep.best_file.parent.mkdir(parents=True, exist_ok=True)
    text = header + yaml.safe_dump(nested, sort_keys=False)
    tmp = sweep.best_file.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(sweep.best_file)


def log_results(sweep: Sweep, study: optuna.Study) -> None:
    """The parent run's best trial and values (tags, a metric), the best config, trials.csv and the plots."""
    best, client, parent = study.best_trial, sweep.runs.client, sweep.runs.parent
    client.set_tag(parent, "best.trial", str(best.number))
    key = f"best/{sweep.space.objective}"  # its worker logged it when the trial ended, unless killed right then
    if best.number not in {m.step for m in client.get_metric_history(parent, key)}:
        client.log_metric(parent, key, best.value, step=best.number)
    for key, value in best.params.items():
        client.set_tag(parent, f"best.{key}", str(value))
    client.log_artifact(parent, str(sweep.best_file), "sweep")
    with tempfile.TemporaryDirectory() as folder:
        study.trials_dataframe().to_csv(Path(folder) / "trials.csv", index=False)
        _plots(study, Path(folder))
        client.log_artifacts(parent, folder, "sweep")


def _plots(study: optuna.Study, folder: Path) -> None:
    """The optimization history and parameter importances, as PNG files (skipped when they cannot be drawn)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, draw in (("optimization_history", plots.plot_optimization_history),
                           ("param_importances", plots.plot_param_importances)):  # fmt: skip
            try:
                axes = draw(study)
                axes.figure.tight_layout()
                axes.figure.savefig(folder / f"{name}.png", dpi=100)
            except Exception:  # too few complete trials for importances: nothing to draw yet
                pass
            plt.close("all")


def report(task: str, name: str) -> None:
    """``make sweep-report``: every trial with its state, value, duration and params, and the best."""
    import optuna

    from .study import open_storage

    journal = project_root() / "sweeps" / f"{task}-{name}.journal"
    if not journal.exists():
        raise SpaceError(f"no sweep {name!r} of {task} in this project ({journal} is missing): make sweep first")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=f"{task}-{name}", storage=open_storage(journal))
    stale = set(study.user_attrs.get("stale_trials", []))
    objective = study.user_attrs.get("objective", "value")
    keys = list(study.user_attrs.get("space", {}))
    print(f"Sweep {task}-{name}: {objective} ({study.direction.name.lower()}), MLflow parent run "
          f"{study.user_attrs.get('parent_run')}")  # fmt: skip
    print(f"{'trial':>5}  {'state':<9} {'value':>10} {'time':>7}  params")
    for trial in study.trials:
        state = trial.state.name + ("*" if trial.number in stale else "")
        value = f"{trial.value:.5g}" if trial.value is not None else "-"
        seconds = trial.duration.total_seconds() if trial.duration else None
        took = f"{seconds:.0f} s" if seconds is not None else "-"
        params = " ".join(f"{k.rpartition('.')[2]}={short(trial.params[k])}" for k in keys if k in trial.params)
        print(f"{trial.number:>5}  {state:<9} {value:>10} {took:>7}  {params}")
    if stale:
        print("* its worker died or was stopped: not counted, its budget was used again")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        print(f"best: trial {study.best_trial.number}, {objective}={study.best_value:.5g}")


def short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
