"""Hyper-parameter sweeps on Optuna: ``make sweep TASK=<task> [TRIALS=20] [WORKERS=1] [SWEEP=<name>]``.

The search space is ``configs/sweep/<task>.yaml`` (``space.py`` reads and checks it). Each trial is an ordinary
training, ``python -m <package> fit`` with the sampled values as flags, in a process of its own
(``trial_process.py``): a trial that crashes, diverges or is killed is recorded as failed and the sweep goes on.
The study lives in an Optuna journal file, ``sweeps/<task>-<name>.journal`` (safe on a cluster's shared file
system, unlike SQLite); running the same sweep again continues it. Here: the study and the loop of one worker
(ask, train, tell). Elsewhere: the storage, sampler and pruner (``study.py``), the worker threads
(``sweep_workers.py``), the parent and child runs in MLflow (``sweep_mlflow.py``), the best config file
``configs/sweep/<task>-<name>-best.yaml``, the plots and ``make sweep-report`` (``sweep_report.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .space import Space, SpaceError, read_space
from .store import TrackingUnavailable, prepare_store, project_root, tracking_uri
from .study import open_storage, pruner_of, sampler_of, stale_lock_removed
from .sweep_mlflow import SweepRuns
from .sweep_report import log_results, report, short, write_best
from .sweep_workers import run, worker_alive
from .tasks import PACKAGE  # not __name__: under `python -m <package>.sweep` that is __main__
from .trial_process import start_forkserver

if TYPE_CHECKING:
    import optuna

    from .trial_process import TrialProcess


class Sweep:
    """One study and its parent run; ``work`` is one worker (many may run, in threads or processes)."""

    def __init__(self, task: str, name: str, space: Space, trials: int, uri: str) -> None:
        self.task, self.name, self.space, self.trials, self.uri = task, name, space, trials, uri
        self.study_name = f"{task}-{name}"
        root = project_root()
        self.journal = root / "sweeps" / f"{self.study_name}.journal"
        self.logs = root / "sweeps" / self.study_name
        self.best_file = root / "configs" / "sweep" / f"{self.study_name}-best.yaml"
        self.runs = SweepRuns(uri, task, name)  # the parent run and the trials' child runs
        self.running: dict[int, TrialProcess] = {}  # trial number -> its process, in this worker process
        self.stopping = threading.Event()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The sweep's own lock (``flock``: the kernel drops it when a process dies): one ask or create at a time."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / "sweep.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ---- the study and its parent run, made once (the first worker to come; optuna #1092) ----------------------
    def open(self, worker: int = 0) -> optuna.Study:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with self.locked():
            if stale_lock_removed(self.journal):
                print(f"Removed a stale lock of {self.journal} (left by a killed sweep)")
            storage = open_storage(self.journal)
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                direction=self.space.direction,
                sampler=sampler_of(self.space.sampler, worker),
                pruner=pruner_of(self.space.pruner),
                load_if_exists=True,
            )
            saved = study.user_attrs.get("space")
            if saved is None:
                for key, value in self.space.as_attrs().items():
                    study.set_user_attr(key, value)
                study.set_user_attr("parent_run", self.runs.create_parent(self.space, self.study_name, self.journal))
            elif saved != self.space.as_attrs()["space"]:
                raise SpaceError(
                    f"sweep {self.name!r} of {self.task} was started with another space than "
                    f"{self.space.path} ({self.journal}): keep its space, or start a new sweep with SWEEP=<new name>"
                )
        self.runs.parent = study.user_attrs["parent_run"]
        return study

    # ---- a worker: ask, train in a process of its own, tell, until TRIALS trials are done ----------------------
    def work(self, study: optuna.Study, gpu: str | None) -> None:
        while not self.stopping.is_set():
            with self.locked():
                self.fail_stale(study)
                if self.budget_used(study) >= self.trials:
                    return
                trial = study.ask()
                trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
                trial.set_user_attr("heartbeat", time.time())
                values = {param.key: param.suggest(trial) for param in self.space.params}
            self.runs.later(self.runs.claim_parent)
            self.run_trial(study, trial, values, gpu)

    def budget_used(self, study: optuna.Study) -> int:
        """Trials that count towards TRIALS: finished (complete, pruned, failed) or running; not those whose worker
        died (stale: their budget is used again)."""
        stale = set(study.user_attrs.get("stale_trials", []))
        return sum(1 for t in study.get_trials(deepcopy=False) if t.number not in stale)

    def fail_stale(self, study: optuna.Study) -> None:
        """Mark FAIL the trials left RUNNING by a worker that died (kill -9, a lost node), and their child runs."""
        from optuna.trial import TrialState

        stale = list(study.user_attrs.get("stale_trials", []))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if worker_alive(trial.user_attrs):
                continue
            stale.append(trial.number)
            study.set_user_attr("stale_trials", stale)
            study.tell(trial.number, state=TrialState.FAIL)
            print(f"trial {trial.number}: its worker died; marked FAIL, its budget is used again")
            self.runs.end_child(trial.number, "FAIL (its sweep worker died)", None, "KILLED")

    def run_trial(self, study: optuna.Study, trial: optuna.Trial, values: dict[str, Any], gpu: str | None) -> None:
        from optuna.trial import TrialState

        from .trial_process import TrialProcess

        number = trial.number
        log_path = self.logs / f"trial-{number}.log"
        shown = " ".join(f"{key.rpartition('.')[2]}={short(value)}" for key, value in values.items())
        print(f"trial {number}: {shown} (log: {log_path.relative_to(project_root())})", flush=True)
        env = {**os.environ, "SWEEP_TRIAL": str(number), "SWEEP_NAME": self.study_name}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        started = time.monotonic()
        process = TrialProcess(self.trial_args(trial, values), env, project_root(), log_path)
        self.running[number] = process
        try:
            code = process.wait()
        finally:
            self.running.pop(number, None)
        if self.stopping.is_set():  # Ctrl-C, SIGTERM: not the trial's fault; its budget is used again
            study.set_user_attr("stale_trials", [*study.user_attrs.get("stale_trials", []), number])
            study.tell(number, state=TrialState.FAIL)
            self.runs.later(self.runs.end_child, number, "FAIL (the sweep was stopped)", log_path, "KILLED")
            return
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)  # what the training wrote
        state, value, why = self.outcome(code, frozen, log_path)
        study.tell(number, value if state == TrialState.COMPLETE else None, state=state)
        seconds = time.monotonic() - started
        result = f"{self.space.objective}={value:.5g}" if value is not None else why
        print(f"trial {number}: {state.name} {result} in {seconds:.0f} s", flush=True)
        label = state.name if value is None else f"{state.name} {value:.5g}"
        self.runs.later(self.runs.end_child, number, label, log_path)
        if value is not None:
            self.runs.later(self.runs.log_value, self.space.objective, number, value, study.best_value)

    def trial_args(self, trial: optuna.Trial, values: dict[str, Any]) -> list[str]:
        """The arguments of ``python -m <package>``: ``fit``, the sweep's config and flags, the sampled values."""
        callback = {
            "class_path": f"{PACKAGE}.pruning.TrialPruning",
            "init_args": {
                "storage": str(self.journal),
                "study": self.study_name,
                "trial_id": trial._trial_id,  # the storage's id of the trial (its number counts within the study)
                "monitor": self.space.objective,
                "pruner": self.space.pruner,
            },
        }
        tags = {**self.space.config_tags, **self.runs.child_tags(trial.number)}
        command = ["fit", *self.space.fit_args]
        command += ["--trainer.max_epochs", str(self.space.epochs), "--test_after_fit", "false"]
        command += ["--trainer.enable_progress_bar", "false", *self.space.args]
        for key, value in values.items():
            command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
        command += [f"--trainer.callbacks+={json.dumps(callback)}", "--tracking.tags", json.dumps(tags)]
        return [*command, "--tracking.run_name", f"{self.study_name} trial {trial.number}"]

    def outcome(self, code: int, trial: optuna.trial.FrozenTrial, log: Path) -> tuple[Any, float | None, str]:
        """The trial's state, objective value and why: from its exit code and what it reported to the study."""
        from optuna.trial import TrialState

        reported = trial.intermediate_values
        if code != 0:
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
            return TrialState.FAIL, None, f"({how}: {_last_error(log)})"
        if "diverged_at_epoch" in trial.user_attrs:
            return TrialState.FAIL, None, f"(diverged at epoch {trial.user_attrs['diverged_at_epoch']})"
        if "pruned_at_epoch" in trial.user_attrs:
            return TrialState.PRUNED, None, f"after epoch {trial.user_attrs['pruned_at_epoch']}"
        if not reported:
            return TrialState.FAIL, None, f"({self.space.objective} was never reported)"
        pick = min if self.space.direction == "minimize" else max
        return TrialState.COMPLETE, pick(reported.values()), ""  # the best epoch: what best.ckpt holds

    # ---- the result ---------------------------------------------------------------------------------------------
    def summarize(self, study: optuna.Study, interrupted: bool) -> None:
        """The best config file, and the parent's best value, params, plots and trials table; the parent ends
        FINISHED once TRIALS trials are done and none runs any more."""
        from optuna.trial import TrialState

        self.runs.settle()
        with self.locked():
            self.fail_stale(study)
            done = self.budget_used(study) >= self.trials
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if complete:
                write_best(self, study)
                log_results(self, study)
            if interrupted:
                self.runs.end_parent("KILLED")
            elif done and not running:
                self.runs.end_parent("FINISHED")
        if complete:
            best = study.best_trial
            print(f"Best: trial {best.number}, {self.space.objective}={best.value:.5g}; {self.best_file}")
            shown = self.best_file.relative_to(project_root())
            print(f'Train with it: make train TASK={self.task} ARGS="--config {shown}"')

    def stop(self) -> None:
        """Ctrl-C or SIGTERM: stop every trial of this process; each is failed and its budget used again."""
        self.stopping.set()
        for process in list(self.running.values()):
            process.send_signal(signal.SIGTERM)


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()[1:] if line.strip()]  # [0]: $ ...
    errors = [line for line in lines if line.startswith("ERROR:") or "Error:" in line]
    return (errors or lines or ["no output"])[-1][:300]


def main(args: list[str] | None = None) -> None:
    from .quiet import quiet_terminal

    quiet_terminal()
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "create", "report"], help="run workers, only create, list trials")
    parser.add_argument("task")
    parser.add_argument("--name", default="default", help="the sweep; the same name again continues it")
    parser.add_argument("--trials", type=int, default=20, help="trials in all, whatever the number of runs")
    parser.add_argument("--workers", type=int, default=1, help="trials at once in this process")
    parser.add_argument("--space", help="default: configs/sweep/<task>.yaml")
    parser.epilog = "After --: the trials' fit flags (default: --config configs/<task>.yaml)."
    argv = list(sys.argv[1:] if args is None else args)
    split = argv.index("--") if "--" in argv else len(argv)
    options, fit_args = parser.parse_args(argv[:split]), argv[split + 1 :]
    try:
        if options.command == "report":
            return report(options.task, options.name)
        if options.trials < 1 or options.workers < 1:
            raise SpaceError(f"TRIALS ({options.trials}) and WORKERS ({options.workers}) must be at least 1")
        if not options.name.replace("-", "").replace("_", "").isalnum():
            raise SpaceError(f"SWEEP={options.name!r}: use letters, digits, - and _ (it names files)")
        space_file = Path(options.space or project_root() / "configs" / "sweep" / f"{options.task}.yaml")
        space = read_space(space_file, fit_args or ["--config", f"configs/{options.task}.yaml"], options.task)
        uri = tracking_uri()
        prepare_store(uri)
        if options.command == "run":  # the trials' imports, while this process opens the study (input is good now)
            start_forkserver(options.task)
        sweep = Sweep(options.task, options.name, space, options.trials, uri)
        if options.command == "create":
            sweep.open()
            print(f"Sweep {sweep.study_name}: study {sweep.journal}, MLflow parent run {sweep.runs.parent}")
            return None
        index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
        run(sweep, options.workers, index)
    except (SpaceError, TrackingUnavailable) as error:
        raise SystemExit(f"ERROR: {error}") from None
    return None


if __name__ == "__main__":
    main()
