"""The LightningCLI entry point: ``python -m <package> fit|validate|test|predict --config configs/<task>.yaml``.

A command goes one way, each step handing its result to the next:
1. parse the config; ``--ckpt_path best|last`` becomes the newest such checkpoint of the task (``checkpoints.py``);
2. prepare the tracking store, once, on global rank 0: an unreachable server fails here, before any compute;
3. build the DataModule and the model, then the trainer with the run owner (``run.py``), the logger that sends
   metrics to it (``mlflow_logger.py``) and the callbacks every task shares;
4. connect data and model: a new training configures the model from the DataModule's ``spec``; resuming, testing
   and predicting make the data follow the spec the checkpoint holds;
5. start (or continue) the MLflow run and run the command; ``fit`` then tests the best checkpoint in the same run;
6. end the run with how the command ended: FINISHED, FAILED, or KILLED (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only, rank_zero_warn

from .checkpoints import (
    RUNS_DIR,
    AtomicCheckpointIO,
    CheckpointError,
    CheckpointKeeper,
    job_root,
    own_hpc_checkpoint,
    resolve,
    run_id,
    untracked_checkpoints,
)
from .datamodules.common import DataError
from .describe import describe_run
from .errors import explain
from .mlflow_logger import MLflowLogger
from .predict import PredictionWriter
from .preflight import PreflightError, check_command
from .run import LogConfig, RunMissing, RunSettings, TrackedRun
from .samples import SamplePredictions
from .store import TrackingUnavailable, prepare_store, tracking_uri
from .tasks import task_of
from .train_loss import TrainLoss

RESOLVED_CHECKPOINT = "LIGHTNING_TASKS_CHECKPOINT"  # --ckpt_path as rank 0 resolved it, for the other ranks


class ConfigError(ValueError):
    """A config value the model or the trainer cannot work with; reported without a traceback."""


class TaskCLI(LightningCLI):
    """LightningCLI with one MLflow run per command, checkpoint aliases and test-after-fit, for every task."""

    def __init__(self, args: ArgsType = None) -> None:
        self.run: TrackedRun | None = None
        try:
            super().__init__(
                LightningModule,
                LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_callback=LogConfig,
                save_config_kwargs={"overwrite": True},
                trainer_defaults={"default_root_dir": RUNS_DIR},
                parser_kwargs={"exit_on_error": False},  # a parse error raises: main() prints it as one line
                args=args,
            )
        except BaseException:
            if self.run is not None:
                self.run.end("FAILED")  # KILLED when the run saw a Ctrl-C or SIGTERM
            raise
        if self.run is not None:
            self.run.end("FINISHED")

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
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Test the best checkpoint after fit.")

    # 1. checkpoint aliases -----------------------------------------------------------------------------------------
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if not config or not config.get("ckpt_path"):
            return
        if rank_zero_only.rank != 0 and os.environ.get(RESOLVED_CHECKPOINT):
            config.ckpt_path = os.environ[RESOLVED_CHECKPOINT]  # what rank 0 resolved, whatever changed since
            return
        if subcommand == "fit" and config.ckpt_path == "best":
            raise CheckpointError("fit continues a training from its last checkpoint: --ckpt_path last, not best")
        module, _, name = config.model.class_path.rpartition(".")
        task = task_of(getattr(importlib.import_module(module), name))
        resolved = str(resolve(str(config.ckpt_path), task.name, config.trainer.default_root_dir or RUNS_DIR))
        if resolved != config.ckpt_path:
            rank_zero_info(f"Using checkpoint {resolved}")
        config.ckpt_path = os.environ[RESOLVED_CHECKPOINT] = resolved  # the ranks Lightning starts inherit it

    # 2. the store --------------------------------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        check_command(self.subcommand, self.config[self.subcommand])  # folders it writes, trainer values, at once
        if self.config[self.subcommand].trainer.logger is not False and rank_zero_only.rank == 0:
            prepare_store(tracking_uri())

    # 3. data, model, trainer ---------------------------------------------------------------------------------------
    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, LookupError) as error:  # a bad value in the config, not a bug to trace
            cause = _first_cause(error)  # jsonargparse wraps what a class raised in a message of its own
            if isinstance(cause, DataError):
                raise cause from None
            raise ConfigError(explain(cause) or str(cause)) from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand]
        trainer = config.trainer
        root = Path(trainer.default_root_dir or RUNS_DIR)
        task = task_of(type(self.model))
        callbacks = [*(trainer.callbacks or []), TrainLoss(), CheckpointKeeper()]
        plugins = trainer.plugins if isinstance(trainer.plugins, list) else [p for p in [trainer.plugins] if p]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins = [*plugins, AtomicCheckpointIO()]
        loggers = trainer.logger
        if loggers is not False:
            settings = describe_run(config.tracking, task, self.model.hparams, trainer.max_epochs)  # name, description
            self.run = TrackedRun(settings, tracking_uri(), task.name, root)
            extra = [] if loggers in (None, True) else list(loggers) if isinstance(loggers, Iterable) else [loggers]
            loggers = [MLflowLogger(self.run), *extra]
            callbacks.append(self.run)
        upload = self.run.log_artifacts if self.run else lambda folder, name: _copy(folder, root / task.name / name)
        callbacks.append(SamplePredictions(upload))
        if trainer.enable_progress_bar is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(RichProgressBar(leave=True))
        own = {"logger": loggers, "callbacks": callbacks, "plugins": plugins, "default_root_dir": str(job_root(root))}
        made = super().instantiate_trainer(**{**own, **kwargs})
        if loggers is False:  # no run folder: a folder of its own per training, where best/last find it
            untracked_checkpoints(made, root, task.name, config.get("ckpt_path"))
        return made

    # 4. data -> model ----------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        """The one handshake between data and model; the model never reaches back into the DataModule."""
        model, data = self.model, self.datamodule
        if not hasattr(model, "configure") or data is None:  # a model without layers that depend on the data
            return
        if model.spec is None:
            if self.subcommand != "fit":
                raise ConfigError(
                    "the model has not been trained: pass a checkpoint with --ckpt_path best|last|path/to/file.ckpt"
                )
            data.setup("fit")
            try:
                model.configure(data.spec)
            except ValueError as error:  # a model setting that does not fit the data (season_length >= lookback)
                raise ConfigError(str(error)) from None
        elif self.subcommand == "fit":  # resuming: the data must be what the checkpoint was trained on
            data.setup("fit")
            if data.spec != model.spec:
                differ = [
                    f.name for f in fields(model.spec) if getattr(data.spec, f.name) != getattr(model.spec, f.name)
                ]
                raise DataError(
                    f"the data differs from what the checkpoint was trained on ({', '.join(differ)}): resume with "
                    "the same data and data settings, or start a new training without --ckpt_path"
                )
        else:
            data.use_spec(model.spec)
            data.setup(self.subcommand)  # validate, test, predict: bad input is refused here, before a run or compute

    # 5. the run ----------------------------------------------------------------------------------------------------
    def _start_run(self, checkpoint: str | None = None) -> None:
        if self.run is not None and rank_zero_only.rank == 0:
            continued = run_id(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
            self.run.start(self.subcommand, continue_run=continued)  # resuming continues the same run
        self._keep_skipped()

    def _keep_skipped(self) -> None:
        """The inputs the data dropped (``on_bad_input: skip``), as ``skipped_inputs.txt`` in the run, or without a
        run next to the predictions (``predict``) or under ``runs/<task>/``."""
        skipped = getattr(self.datamodule, "skipped", None)
        if not skipped or rank_zero_only.rank != 0:
            return
        text = "".join(f"{reason}\n" for reason in skipped)
        if self.run is not None and self.run.id is not None:
            self.run.log_text(text, "skipped_inputs.txt")
            where = f"skipped_inputs.txt of MLflow run {self.run.id}"
        else:
            writers = [c for c in self.trainer.callbacks if isinstance(c, PredictionWriter)]
            folder = writers[0].output_dir if self.subcommand == "predict" and writers else None
            folder = folder or Path(self.trainer.default_root_dir) / task_of(type(self.model)).name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "skipped_inputs.txt").write_text(text)
            where = str(folder / "skipped_inputs.txt")
        rank_zero_warn(f"{len(skipped)} input(s) were skipped (on_bad_input: skip); the list is in {where}")

    def before_fit(self) -> None:
        checkpoint = self.config_init.fit.ckpt_path or own_hpc_checkpoint(self.trainer)
        self._connect()
        self._start_run(checkpoint)

    def before_validate(self) -> None:
        self._connect()
        self._start_run()

    def before_test(self) -> None:
        self._connect()
        self._start_run()

    def before_predict(self) -> None:
        self._connect()
        self._start_run()

    def after_fit(self) -> None:
        trainer, data = self.trainer, self.datamodule
        if not self.config_init.fit.test_after_fit or trainer.interrupted or trainer.fast_dev_run:
            return
        if data is None or type(data).test_dataloader is LightningDataModule.test_dataloader:
            return
        if data.hparams.get("test_fraction") == 0:
            rank_zero_info("data.test_fraction is 0: no test after training")
            return
        best = trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
        trainer.test(self.model, datamodule=data, ckpt_path="best" if best else None)


def _copy(folder: Path, target: Path) -> None:
    """Keep sample files locally when no run is tracked."""
    shutil.copytree(folder, target, dirs_exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def _first_cause(error: BaseException) -> BaseException:
    """The innermost ValueError or LookupError ``error`` was raised from: what the user's value set off."""
    found, seen = error, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ValueError | LookupError):
            found = error
        error = error.__cause__ or error.__context__
    return found


def _one_line(error: Exception) -> str:
    """The message of ``error``; a DataLoader worker's error arrives wrapped in its traceback: keep its last line."""
    message = str(error)
    if "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.partition(f"{type(error).__name__}: ")[2] or last
    return message


def main(args: ArgsType = None) -> None:
    package = logging.getLogger(__name__.rpartition(".")[0])  # what the data modules say: skipped entries, formats
    package.setLevel(logging.INFO)
    if not logging.getLogger().handlers:  # quiet.py gives the root logger one; without it, print them here
        package.addHandler(logging.StreamHandler())
        package.propagate = False
    try:
        TaskCLI(args=args)
    except (TrackingUnavailable, DataError, ConfigError, CheckpointError, RunMissing, PreflightError) as error:
        raise SystemExit(f"ERROR: {_one_line(error)}") from None
    except Exception as error:  # a config value Lightning or jsonargparse refused: one line; anything else traces
        if explain(error) is None:
            raise
        raise SystemExit(f"ERROR: {explain(error)}") from None
    except SIGTERMException:  # Lightning exits with status 0 here; schedulers must see that the job did not finish
        print("Stopped by SIGTERM; `make resume` continues from last.ckpt.", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None


if __name__ == "__main__":
    main()
