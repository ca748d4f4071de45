"""The command line: ``python -m <package> fit|validate|test|predict --config configs/<task>.yaml [--key value]``.

``main`` runs a command from top to bottom, one numbered line per step, each handing its result to the next; the
generated README's "What `make train` does" follows it line by line.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import sys
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only, rank_zero_warn

from .checkpoints import (
    RUNS_DIR,
    AtomicCheckpointIO,
    CheckpointError,
    PreemptionCheckpoints,
    job_root,
    model_arguments,
    own_hpc_checkpoint,
    resolve,
    untracked_checkpoints,
)
from .datamodules.common import DataError, SpecDataModule
from .describe import describe_run
from .errors import ConfigError, explain, first_line, innermost_value_error
from .examples import ExamplePredictions
from .mlflow_logger import MLflowLogger
from .predict import PredictionWriter
from .preflight import PreflightError, check_command
from .quiet import quiet_terminal
from .run import RunMissing, RunSettings, TrackedRun
from .store import TrackingUnavailable, prepare_store, tracking_uri
from .tasks import PACKAGE, Task, task_of
from .tasks.base import TaskModule
from .train_loss import TrainLoss

COMMANDS = {"fit": Trainer.fit, "validate": Trainer.validate, "test": Trainer.test, "predict": Trainer.predict}
RESOLVED_CHECKPOINT = "LIGHTNING_TASKS_CHECKPOINT"  # --ckpt_path as rank 0 resolved it, for the other ranks
USER_ERRORS = (TrackingUnavailable, DataError, ConfigError, CheckpointError, RunMissing, PreflightError)  # one line


def main(args: list[str] | None = None) -> None:
    """Run one command (``fit``, ``validate``, ``test``, ``predict``) on the config ``args`` give."""
    quiet_terminal()  # VERBOSE=1 shows what it silences
    command, argv = split_command(list(sys.argv[1:] if args is None else args))
    try:
        parser = ConfigParser(command, argv)  # 1
        config, task = parser.config, parser.task
        check_command(command, config)  # the folders it writes, trainer values Lightning fails on late: up front
        root = Path(config.trainer.default_root_dir or RUNS_DIR)
        tracked = config.trainer.logger is not False
        uri = tracking_uri()
        checkpoint = resolve_checkpoint(command, config.ckpt_path, task, root, uri)  # 2
        if tracked and rank_zero_only.rank == 0:
            prepare_store(uri)  # 3
        built = parser.build(checkpoint)  # 4
        model, data = built.model, built.data
        connect(command, model, data)  # 5
        settings = describe_run(built.tracking, task, model.hparams, config.trainer.max_epochs)
        run = TrackedRun(settings, uri, task.name, root, parser.dump()) if tracked else None
        trainer = build_trainer(built, task, run, root)  # 6
        if run is None:  # no run folder: checkpoints in a folder of their own, where best/last find them
            untracked_checkpoints(trainer, root, task.name, checkpoint)
        continued = (checkpoint or own_hpc_checkpoint(trainer)) if command == "fit" else None  # resuming: its run
        with run.started(command, continued) if run else contextlib.nullcontext():  # 7
            keep_skipped(data.skipped, run, trainer, task, command)
            COMMANDS[command](trainer, model, datamodule=data, ckpt_path=checkpoint)
            if command == "fit" and config.test_after_fit:
                test_best(trainer, model, data)
    except USER_ERRORS as error:
        raise SystemExit(f"ERROR: {first_line(error)}") from None
    except Exception as error:  # a config value Lightning or jsonargparse refused: one line; anything else traces
        if explain(error) is None:
            raise
        raise SystemExit(f"ERROR: {explain(error)}") from None
    except SIGTERMException:  # Lightning exits with status 0 here; schedulers must see that the job did not finish
        print("Stopped by SIGTERM; `make resume` continues from last.ckpt.", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """The command (the first argument) and the config arguments after it."""
    if argv and argv[0] in COMMANDS:
        return argv[0], argv[1:]
    usage = f"python -m {PACKAGE} {'|'.join(COMMANDS)} --config configs/<task>.yaml [--key value ...]"
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: {usage}\n`python -m {PACKAGE} fit --help` lists every setting.")
        raise SystemExit(0)
    raise SystemExit(f"ERROR: the first argument must be the command, one of {', '.join(COMMANDS)}: {usage}")


class ConfigParser(LightningCLI):
    """LightningCLI as the config's parser and builder of data and model; ``main`` runs the command.

    ``run=False``: with LightningCLI's subcommands the trainer runs inside its constructor and the story of a command
    is told in ``before_*``/``after_*`` hooks. Here the command is ours to parse and run in plain sight. The tasks own
    their optimizers and schedules (warm-up, one-cycle), so LightningCLI's ``--optimizer`` flags are not offered.
    """

    def __init__(self, command: str, argv: list[str]) -> None:
        self.command = command
        super().__init__(
            TaskModule,
            SpecDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=None,
            trainer_defaults={"default_root_dir": RUNS_DIR},
            parser_kwargs={"prog": f"python -m {PACKAGE} {command}", "exit_on_error": False},  # errors: one line
            args=argv,
            run=False,
            auto_configure_optimizers=False,
        )
        self.task_class = _import(self.config.model.class_path)
        self.task: Task = task_of(self.task_class)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_class_arguments(RunSettings, "tracking")
        parser.add_argument(
            "--ckpt_path", type=str | None, default=None, help="best, last, a run id, a file, runs:/<id>"
        )
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Test the best checkpoint after fit.")

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str]) -> None:
        self.config = parser.parse_args(args)  # ``args`` is sys.argv after the command: LightningCLI's warning about
        # being given both does not apply

    def instantiate_classes(self) -> None:
        """Nothing here: ``build`` makes data and model once the checkpoint's arguments are in the config."""

    def build(self, checkpoint: Path | None) -> Namespace:
        """Data, model, callbacks and settings, as the config (and the checkpoint's model arguments) say."""
        if checkpoint is not None:  # test, predict and resume rebuild the trained model, its spec included
            saved = {
                "class_path": self.config.model.class_path,
                "init_args": model_arguments(checkpoint, self.task_class),
            }
            self.config = self.parser.parse_object({"model": saved}, self.config)
        try:
            self.config_init = self.parser.instantiate_classes(self.config)
        except (ValueError, LookupError) as error:  # a bad value in the config, not a bug to trace
            cause = innermost_value_error(error)
            raise cause if isinstance(cause, DataError) else ConfigError(explain(cause) or first_line(cause)) from None
        return self.config_init

    def dump(self) -> str:
        """The resolved config as YAML: the run's ``config.yaml``."""
        return self.parser.dump(self.config, skip_none=False)


def resolve_checkpoint(command: str, value: str | None, task: Task, root: Path, uri: str) -> Path | None:
    """The checkpoint file ``--ckpt_path`` names (``checkpoints.resolve``), resolved once, on rank 0."""
    if not value:
        return None
    if rank_zero_only.rank != 0 and os.environ.get(RESOLVED_CHECKPOINT):
        return Path(os.environ[RESOLVED_CHECKPOINT])  # what rank 0 resolved, whatever changed since
    if command == "fit" and value == "best":
        raise CheckpointError("fit continues a training from its last checkpoint: --ckpt_path last, not best")
    resolved = resolve(value, task.name, root, uri)
    if str(resolved) != value:
        rank_zero_info(f"Using checkpoint {resolved}")
    os.environ[RESOLVED_CHECKPOINT] = str(resolved)  # the ranks Lightning starts inherit it
    return resolved


def connect(command: str, model: TaskModule, data: SpecDataModule) -> None:
    """The one handshake between data and model; the model never reaches back into the DataModule."""
    if model.spec is None:
        if command != "fit":
            raise ConfigError(
                "the model has not been trained: pass a checkpoint with --ckpt_path best|last|path/to/file.ckpt"
            )
        data.setup("fit")
        try:
            model.configure(data.spec)
        except ValueError as error:  # a model setting that does not fit the data (season_length >= lookback)
            raise ConfigError(str(error)) from None
    elif command == "fit":  # resuming: the data must be what the checkpoint was trained on
        data.setup("fit")
        if data.spec != model.spec:
            ours, saved = asdict(data.spec), asdict(model.spec)
            differ = [name for name in saved if ours[name] != saved[name]]
            raise DataError(
                f"the data differs from what the checkpoint was trained on ({', '.join(differ)}): resume with "
                "the same data and data settings, or start a new training without --ckpt_path"
            )
    else:
        data.use_spec(model.spec)
        data.setup(command)  # validate, test, predict: bad input is refused here, before a run or compute


def build_trainer(built: Namespace, task: Task, run: TrackedRun | None, root: Path) -> Trainer:
    """The config's trainer, with the run as logger and callback and the callbacks every task shares."""
    trainer = {**built.trainer}
    callbacks = [*(trainer.pop("callbacks") or []), built.checkpoint, built.predictions]
    callbacks += [TrainLoss(), PreemptionCheckpoints()]
    plugins = trainer.pop("plugins")
    plugins = plugins if isinstance(plugins, list) else [p for p in [plugins] if p]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    loggers = trainer.pop("logger")
    if run is not None:
        extra = [] if loggers in (None, True) else list(loggers) if isinstance(loggers, Iterable) else [loggers]
        loggers = [MLflowLogger(run), *extra]
        callbacks.append(run)
    upload = run.log_artifacts if run else lambda folder, name: _keep_locally(folder, root / task.name / name)
    callbacks.append(ExamplePredictions(upload))
    if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(RichProgressBar(leave=True))
    trainer.update(logger=loggers, callbacks=callbacks, plugins=plugins, default_root_dir=str(job_root(root)))
    return Trainer(**trainer)


def keep_skipped(skipped: list[str], run: TrackedRun | None, trainer: Trainer, task: Task, command: str) -> None:
    """The inputs the data dropped (``on_bad_input: skip``), as ``skipped_inputs.txt`` in the run, or without a
    run next to the predictions (``predict``) or under ``runs/<task>/``."""
    if not skipped or rank_zero_only.rank != 0:
        return
    text = "".join(f"{reason}\n" for reason in skipped)
    if run is not None:
        run.log_text(text, "skipped_inputs.txt")
        where = f"skipped_inputs.txt of MLflow run {run.id}"
    else:
        writers = [c for c in trainer.callbacks if isinstance(c, PredictionWriter)]
        folder = writers[0].output_dir if command == "predict" and writers else None
        folder = folder or Path(trainer.default_root_dir) / task.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "skipped_inputs.txt").write_text(text)
        where = str(folder / "skipped_inputs.txt")
    rank_zero_warn(f"{len(skipped)} input(s) were skipped (on_bad_input: skip); the list is in {where}")


def test_best(trainer: Trainer, model: TaskModule, data: SpecDataModule) -> None:
    """Test the best checkpoint of a finished training, in the same run."""
    if trainer.interrupted or trainer.fast_dev_run:
        return
    if not data.has_test_split:
        rank_zero_info("data.test_fraction is 0: no test after training")
        return
    best = trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
    trainer.test(model, datamodule=data, ckpt_path="best" if best else None)


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return vars(importlib.import_module(module))[name]


def _keep_locally(folder: Path, target: Path) -> None:
    """Example predictions without a tracked run: kept under ``runs/<task>/``."""
    shutil.copytree(folder, target, dirs_exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
