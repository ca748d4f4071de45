"""Hyper-parameter sweeps on Optuna: ``make sweep TASK=<task> [TRIALS=20] [WORKERS=1] [SWEEP=<name>]``.

The search space is ``configs/sweep/<task>.yaml`` (``space.py`` reads and checks it). Each trial is an ordinary
training, ``python -m <package> fit`` with the sampled values as flags, in a process of its own: a trial that
crashes, diverges or is killed is recorded as failed and the sweep goes on. The study lives in an Optuna journal
file, ``sweeps/<task>-<name>.journal`` (safe on a cluster's shared file system, unlike SQLite); running the same
sweep again continues it. In MLflow the sweep is a parent run of the task's experiment and each trial a child run
(the ``mlflow.parentRunId`` tag, which works across processes and SLURM array tasks). The best values are written
to ``configs/sweep/<task>-<name>-best.yaml``, a second ``--config`` for ``make train``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .space import Space, SpaceError, read_space
from .store import TrackingUnavailable, prepare_store, project_root, tracking_uri
from .tasks import PACKAGE  # not __name__: under `python -m <package>.sweep` that is __main__

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

STALE_LOCK_S = 10  # the journal's lock is held for a write of a few lines: one older than this was left by kill -9
HEARTBEAT_S, GONE_AFTER_S = 60.0, 300.0  # a running trial of another host without a heartbeat this long is lost
PARENT_TAG, TRIAL_TAG, SWEEP_TAG = "mlflow.parentRunId", "sweep.trial", "sweep.name"


def open_storage(journal: str | Path) -> optuna.storages.JournalStorage:
    """The study's journal file storage, with Optuna's open-file lock (NFSv3 and later)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    lock = JournalFileOpenLock(str(journal), grace_period=STALE_LOCK_S)
    return optuna.storages.JournalStorage(JournalFileBackend(str(journal), lock_obj=lock))


def pruner_of(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    """An Optuna pruner from ``{"class": "MedianPruner", <its arguments>}``."""
    import optuna

    return getattr(optuna.pruners, spec["class"])(**{k: v for k, v in spec.items() if k != "class"})


def sampler_of(spec: dict[str, Any], worker: int) -> optuna.samplers.BaseSampler:
    """An Optuna sampler; a seed is offset per worker, or parallel workers would sample the same values."""
    import optuna

    kwargs = {k: v for k, v in spec.items() if k != "class"}
    if kwargs.get("seed") is not None:
        kwargs["seed"] += worker
    return getattr(optuna.samplers, spec["class"])(**kwargs)


def _stale_lock_removed(journal: Path) -> bool:
    """Remove the journal's lock file when a killed process left it (optuna #5921: waiting on it forever)."""
    lock = Path(f"{journal}.lock")
    with contextlib.suppress(FileNotFoundError):
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink()
            return True
    return False


class Sweep:
    """One study and its parent run; ``work`` is one worker (many may run, in threads or processes)."""

    def __init__(self, task: str, name: str, space: Space, trials: int, uri: str) -> None:
        self.task, self.name, self.space, self.trials, self.uri = task, name, space, trials, uri
        self.study_name = f"{task}-{name}"
        root = project_root()
        self.journal = root / "sweeps" / f"{self.study_name}.journal"
        self.logs = root / "sweeps" / self.study_name
        self.best_file = root / "configs" / "sweep" / f"{self.study_name}-best.yaml"
        self.parent: str | None = None
        self.running: dict[int, subprocess.Popen] = {}  # trial number -> its process, in this worker process
        self.stopping = threading.Event()
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

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
            if _stale_lock_removed(self.journal):
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
                study.set_user_attr("parent_run", self._create_parent())
            elif saved != self.space.as_attrs()["space"]:
                raise SpaceError(
                    f"sweep {self.name!r} of {self.task} was started with another space than "
                    f"{self.space.path} ({self.journal}): keep its space, or start a new sweep with SWEEP=<new name>"
                )
        self.parent = study.user_attrs["parent_run"]
        return study

    def _create_parent(self) -> str:
        from mlflow.entities import Param

        from .store import artifact_location

        experiment = self.client.get_experiment_by_name(self.task)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(self.task, artifact_location=artifact_location(self.uri, self.task))
        )
        tags = {SWEEP_TAG: self.name, "task": self.task, "command": "sweep", "sweep.storage": str(self.journal)}
        tags["mlflow.note.content"] = (
            f"Sweep `{self.name}` of {self.task}: {self.space.objective} ({self.space.direction}), trials as child "
            f"runs.\n\n`make sweep TASK={self.task} SWEEP={self.name}` continues it; `make sweep-report` lists them."
        )
        run = self.client.create_run(experiment_id, tags=tags, run_name=f"sweep {self.study_name}")
        params = [Param(k, str(v)) for k, v in self.space.params_to_log().items()]
        self.client.log_batch(run.info.run_id, params=params)
        self.client.log_text(run.info.run_id, self.space.text, f"sweep/{self.space.path.name}")
        return run.info.run_id

    def _claim_parent(self) -> None:
        """The parent run is RUNNING while a worker lives, with that worker's process tags (``liveness.py``)."""
        from .liveness import process_tags

        self.client.update_run(self.parent, status="RUNNING")
        for key, value in process_tags().items():
            self.client.set_tag(self.parent, key, value)

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
            self._claim_parent()
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
            if _worker_alive(trial.user_attrs):
                continue
            stale.append(trial.number)
            study.set_user_attr("stale_trials", stale)
            study.tell(trial.number, state=TrialState.FAIL)
            print(f"trial {trial.number}: its worker died; marked FAIL, its budget is used again")
            child = self.child_run(study, trial.number)
            if child is not None and child.info.status == "RUNNING":
                self.client.set_tag(child.info.run_id, "sweep.state", "FAIL (its sweep worker died)")
                self.client.set_terminated(child.info.run_id, "KILLED")

    def run_trial(self, study: optuna.Study, trial: optuna.Trial, values: dict[str, Any], gpu: str | None) -> None:
        from optuna.trial import TrialState

        number = trial.number
        log_path = self.logs / f"trial-{number}.log"
        shown = " ".join(f"{key.rpartition('.')[2]}={_short(value)}" for key, value in values.items())
        print(f"trial {number}: {shown} (log: {log_path.relative_to(project_root())})", flush=True)
        env = {**os.environ, "SWEEP_TRIAL": str(number), "SWEEP_NAME": self.study_name}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        started = time.monotonic()
        with open(log_path, "w") as log:  # a session of its own: Ctrl-C reaches the sweep alone, which stops it
            process = subprocess.Popen(
                self.trial_command(trial, values), cwd=project_root(), env=env, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent, start_new_session=True,
            )  # fmt: skip
            self.running[number] = process
            try:
                code = process.wait()
            finally:
                self.running.pop(number, None)
        if self.stopping.is_set():  # Ctrl-C, SIGTERM: not the trial's fault; its budget is used again
            study.set_user_attr("stale_trials", [*study.user_attrs.get("stale_trials", []), number])
            study.tell(number, state=TrialState.FAIL)
            self._end_child(study, number, "FAIL (the sweep was stopped)", log_path, kill=True)
            return
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)  # what the training wrote
        state, value, why = self.outcome(code, frozen, log_path)
        study.tell(number, value if state == TrialState.COMPLETE else None, state=state)
        seconds = time.monotonic() - started
        result = f"{self.space.objective}={value:.5g}" if value is not None else why
        print(f"trial {number}: {state.name} {result} in {seconds:.0f} s", flush=True)
        self._end_child(study, number, state.name if value is None else f"{state.name} {value:.5g}", log_path)
        if value is not None:
            self.client.log_metric(self.parent, f"trial/{self.space.objective}", value, step=number)
            best = study.best_value
            self.client.log_metric(self.parent, f"best/{self.space.objective}", best, step=number)

    def trial_command(self, trial: optuna.Trial, values: dict[str, Any]) -> list[str]:
        """``python -m <package> fit`` with the sweep's config and flags, then the trial's sampled values."""
        callback = {
            "class_path": f"{PACKAGE}.pruning.TrialPruning",
            "init_args": {
                "storage": str(self.journal),
                "study": self.study_name,
                "trial_id": trial._trial_id,  # the storage's id of the trial (its number counts within the study)
                "monitor": self.space.objective,
            },
        }
        tags = {**self.space.config_tags, PARENT_TAG: self.parent, TRIAL_TAG: str(trial.number), SWEEP_TAG: self.name}
        command = [sys.executable, "-m", PACKAGE, "fit", *self.space.fit_args]
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

    def child_run(self, study: optuna.Study, number: int) -> Any:
        """The MLflow run of trial ``number`` (None before its training started one)."""
        parent = self.client.get_run(self.parent)
        found = self.client.search_runs(
            [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{self.parent}' and tags.`{TRIAL_TAG}` = '{number}'"
        )
        return found[0] if found else None

    def _end_child(self, study: optuna.Study, number: int, state: str, log: Path, kill: bool = False) -> None:
        """The child run shows the trial's state (``sweep.state``: PRUNED, FAIL, ...) and the trial's log."""
        child = self.child_run(study, number)
        if child is None:
            return
        self.client.set_tag(child.info.run_id, "sweep.state", state)
        with contextlib.suppress(Exception):  # a log that cannot be uploaded is still on disk
            self.client.log_artifact(child.info.run_id, str(log), "sweep")
        if child.info.status == "RUNNING":  # killed (SIGKILL, OOM) before it could end its run
            self.client.set_terminated(child.info.run_id, "KILLED" if kill else "FAILED")

    # ---- the result ---------------------------------------------------------------------------------------------
    def summarize(self, study: optuna.Study, interrupted: bool) -> None:
        """The best config file, and the parent's best value, params, plots and trials table; the parent ends
        FINISHED once TRIALS trials are done and none runs any more."""
        from optuna.trial import TrialState

        with self.locked():
            self.fail_stale(study)
            done = self.budget_used(study) >= self.trials
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if complete:
                self._write_best(study)
                self._log_results(study)
            if interrupted:
                self.client.set_terminated(self.parent, "KILLED")
            elif done and not running:
                self.client.set_terminated(self.parent, "FINISHED")
        if complete:
            best = study.best_trial
            print(f"Best: trial {best.number}, {self.space.objective}={best.value:.5g}; {self.best_file}")
            shown = self.best_file.relative_to(project_root())
            print(f'Train with it: make train TASK={self.task} ARGS="--config {shown}"')

    def _write_best(self, study: optuna.Study) -> None:
        import yaml

        best = study.best_trial
        nested: dict[str, Any] = {}
        for key, value in best.params.items():
            *parents, leaf = key.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        header = (
            f"# The best trial ({best.number}) of sweep {self.name!r}: {self.space.objective} = {best.value:.6g} "
            f"({self.space.direction}) after {self.space.epochs} epochs.\n"
            f'# make train TASK={self.task} ARGS="--config configs/sweep/{self.best_file.name}"\n'
        )
        self.best_file.parent.mkdir(parents=True, exist_ok=True)
        text = header + yaml.safe_dump(nested, sort_keys=False)
        tmp = self.best_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.best_file)

    def _log_results(self, study: optuna.Study) -> None:
        best = study.best_trial
        self.client.set_tag(self.parent, "best.trial", str(best.number))
        self.client.log_metric(self.parent, f"best/{self.space.objective}", best.value, step=best.number)
        for key, value in best.params.items():
            self.client.set_tag(self.parent, f"best.{key}", str(value))
        self.client.log_artifact(self.parent, str(self.best_file), "sweep")
        with tempfile.TemporaryDirectory() as folder:
            study.trials_dataframe().to_csv(Path(folder) / "trials.csv", index=False)
            _plots(study, Path(folder))
            self.client.log_artifacts(self.parent, folder, "sweep")

    def stop(self) -> None:
        """Ctrl-C or SIGTERM: stop every trial of this process; each is failed and its budget used again."""
        self.stopping.set()
        for process in list(self.running.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)


def _worker_alive(attrs: dict[str, Any]) -> bool:
    host, _, pid = str(attrs.get("worker", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return time.time() - float(attrs.get("heartbeat", 0)) < GONE_AFTER_S


def _die_with_parent() -> None:
    """In a trial's process before it starts: die when its sweep dies (kill -9), rather than train on unseen."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _prctl() -> Any:
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the forked child calls it and nothing else
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _prctl()


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:") or "Error:" in line]
    return (errors or lines or ["no output"])[-1][:300]


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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


def visible_gpus() -> list[str]:
    """The GPUs workers are spread over, one each in turn."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g for g in listed.split(",") if g] if listed else [str(i) for i in range(torch.cuda.device_count())]


def run(sweep: Sweep, workers: int, worker_index: int) -> None:
    """``workers`` workers in threads of this process (each trial is a process of its own), then the summary."""
    study = sweep.open(worker_index)
    gpus = visible_gpus() if workers > 1 else []
    counted = sweep.budget_used(study)
    print(
        f"Sweep {sweep.study_name}: {counted}/{sweep.trials} trials done or running; {workers} worker(s); "
        f"study {sweep.journal}; MLflow parent run {sweep.parent}",
        flush=True,
    )
    heartbeat = threading.Thread(target=_heartbeat, args=(sweep, study), daemon=True)
    heartbeat.start()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # scancel, a scheduler's stop: as Ctrl-C
    # Workers say they are done with an event: a Thread.join interrupted by Ctrl-C marks a running thread as
    # stopped in Python < 3.13, and the sweep would end without telling the study about its trials.
    done = [threading.Event() for _ in range(workers)]
    interrupted = False
    try:
        for i in range(workers):
            gpu = gpus[i % len(gpus)] if gpus else None
            threading.Thread(target=_worker, args=(sweep, study, gpu, done[i]), daemon=True).start()
            time.sleep(0.5)  # workers start apart: the first asks while the others load
        _wait(done)
    except KeyboardInterrupt:
        interrupted = True
        print("Stopping the sweep: its running trials are failed and will be run again next time", file=sys.stderr)
        sweep.stop()
        _wait(done)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sweep.summarize(study, interrupted)
    if interrupted:
        raise SystemExit(128 + signal.SIGINT)


def _worker(sweep: Sweep, study: optuna.Study, gpu: str | None, done: threading.Event) -> None:
    try:
        sweep.work(study, gpu)
    finally:
        done.set()


def _wait(events: list[threading.Event]) -> None:
    for event in events:
        while not event.wait(0.5):
            pass


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _heartbeat(sweep: Sweep, study: optuna.Study) -> None:
    """Every HEARTBEAT_S: the running trials and the parent run say that their worker lives (another host reads
    nothing else)."""
    from optuna.trial import Trial

    from .liveness import HEARTBEAT_TAG

    while not sweep.stopping.wait(HEARTBEAT_S):
        with contextlib.suppress(Exception):  # a store that does not answer now may answer next time
            sweep.client.set_tag(sweep.parent, HEARTBEAT_TAG, str(int(time.time())))
            for trial in study.get_trials(deepcopy=False):
                if trial.number in sweep.running:
                    Trial(study, trial._trial_id).set_user_attr("heartbeat", time.time())


def report(task: str, name: str) -> None:
    """``make sweep-report``: every trial with its state, value, duration and params, and the best."""
    import optuna

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
        params = " ".join(f"{k.rpartition('.')[2]}={_short(trial.params[k])}" for k in keys if k in trial.params)
        print(f"{trial.number:>5}  {state:<9} {value:>10} {took:>7}  {params}")
    if stale:
        print("* its worker died or was stopped: not counted, its budget was used again")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        print(f"best: trial {study.best_trial.number}, {objective}={study.best_value:.5g}")


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
        sweep = Sweep(options.task, options.name, space, options.trials, uri)
        if options.command == "create":
            sweep.open()
            print(f"Sweep {sweep.study_name}: study {sweep.journal}, MLflow parent run {sweep.parent}")
            return None
        index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
        run(sweep, options.workers, index)
    except (SpaceError, TrackingUnavailable) as error:
        raise SystemExit(f"ERROR: {error}") from None
    return None


if __name__ == "__main__":
    main()
