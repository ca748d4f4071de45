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
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only

from .checkpoints import RUNS_DIR, CheckpointKeeper, from_model_uri, newest, own_hpc_checkpoint, run_id
from .datamodules.common import DataError
from .describe import describe_run
from .mlflow_logger import MLflowLogger
from .predict import PredictionWriter
from .run import LogConfig, RunSettings, TrackedRun
from .samples import SamplePredictions
from .store import TrackingUnavailable, prepare_store, tracking_uri
from .tasks import task_of
from .train_loss import TrainLoss


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
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path in ("best", "last") and not (subcommand == "fit" and ckpt_path == "best"):
            module, _, name = config.model.class_path.rpartition(".")
            task = task_of(getattr(importlib.import_module(module), name))
            config.ckpt_path = str(newest(task.name, ckpt_path, config.trainer.default_root_dir or RUNS_DIR))
            rank_zero_info(f"Using checkpoint {config.ckpt_path}")
        elif ckpt_path and ckpt_path.startswith(("runs:/", "models:/")):
            config.ckpt_path = str(from_model_uri(ckpt_path, Path(RUNS_DIR) / "mlflow-models"))

    # 2. the store --------------------------------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        if self.config[self.subcommand].trainer.logger is not False and rank_zero_only.rank == 0:
            prepare_store(tracking_uri())

    # 3. data, model, trainer ---------------------------------------------------------------------------------------
    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, LookupError) as error:  # a bad value in the config, not a bug to trace
            if isinstance(error, DataError):
                raise
            raise ConfigError(str(error)) from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand]
        trainer = config.trainer
        root = Path(trainer.default_root_dir or RUNS_DIR)
        task = task_of(type(self.model))
        callbacks = [*(trainer.callbacks or []), TrainLoss(), CheckpointKeeper()]
        loggers = trainer.logger
        if loggers is not False:
            settings = describe_run(config.tracking, task, self.model.hparams, trainer.max_epochs)  # name, description
            self.run = TrackedRun(settings, tracking_uri(), task.name, root)
            extra = [] if loggers in (None, True) else list(loggers) if isinstance(loggers, Iterable) else [loggers]
            loggers = [MLflowLogger(self.run, settings.flush_interval_s), *extra]
            callbacks.append(self.run)
        upload = self.run.log_artifacts if self.run else lambda folder, name: _copy(folder, root / task.name / name)
        callbacks.append(SamplePredictions(upload))
        if trainer.enable_progress_bar is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(RichProgressBar(leave=True))
        return super().instantiate_trainer(**{"logger": loggers, "callbacks": callbacks, **kwargs})

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
            model.configure(data.spec)
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

    # 5. the run ----------------------------------------------------------------------------------------------------
    def _start_run(self, checkpoint: str | None = None) -> None:
        if self.run is not None and rank_zero_only.rank == 0:
            continued = run_id(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
            self.run.start(self.subcommand, continue_run=continued)  # resuming continues the same run

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
        best = trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
        trainer.test(self.model, datamodule=data, ckpt_path="best" if best else None)


def _copy(folder: Path, target: Path) -> None:
    """Keep sample files locally when no run is tracked."""
    shutil.copytree(folder, target, dirs_exist_ok=True)


def main(args: ArgsType = None) -> None:
    try:
        TaskCLI(args=args)
    except (TrackingUnavailable, DataError, ConfigError) as error:  # the user's input, not our bug: no traceback
        raise SystemExit(f"ERROR: {error}") from None
    except SIGTERMException:  # Lightning exits with status 0 here; schedulers must see that the job did not finish
        print("Stopped by SIGTERM; `make resume` continues from last.ckpt.", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None


if __name__ == "__main__":
    main()
