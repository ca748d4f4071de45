"""The LightningCLI entry point: ``python -m {{ cookiecutter.package_name }} fit --config configs/<task>.yaml``.

What it adds to stock LightningCLI, so every task behaves the same:
* an MLflow logger per run (experiment = the task), the resolved config logged as an artifact;
* a configurable ``checkpoint`` (best and last) and ``predictions`` writer;
* ``fit`` tests the best checkpoint afterwards in the same MLflow run (``--test_after_fit false`` to skip);
* ``--ckpt_path best|last`` finds the newest such checkpoint of the task, and resuming continues its run.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .callbacks import LogConfigToMLflow, RunLifecycle, TrainLoss
from .datamodules.common import DataError
from .predict import PredictionWriter
from .tracking import (
    TrackingUnavailable,
    checkpoint_entry,
    checkpoint_from_model_uri,
    find_tracker,
    run_id_in_checkpoint,
)

RUNS_DIR = "runs"


def newest_checkpoint(task: str, kind: str, runs_dir: str | Path = RUNS_DIR) -> Path:
    """The most recent ``best.ckpt`` or ``last.ckpt`` written for ``task``."""
    found = sorted(Path(runs_dir).glob(f"{task}/*/checkpoints/{kind}.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(
            f"ERROR: no {kind}.ckpt for task {task!r} under {Path(runs_dir).resolve()}/{task}/. "
            f"Train first (make train TASK={task}) or pass a checkpoint file: --ckpt_path path/to/file.ckpt"
        )
    return found[-1]


class TaskCLI(LightningCLI):
    """LightningCLI with MLflow tracking, checkpoint discovery and test-after-fit for every task."""

    def __init__(self, args: ArgsType = None, run: bool = True) -> None:
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=LogConfigToMLflow,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": {"class_path": f"{__package__}.tracking.MLflowTracker"},
                "default_root_dir": RUNS_DIR,
                "callbacks": [RunLifecycle(), TrainLoss()],
            },
            args=args,
            run=run,
        )

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
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Test the best checkpoint after fit.")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path in ("best", "last") and not (subcommand == "fit" and ckpt_path == "best"):
            task = self._task_name(config.model.class_path)
            config.ckpt_path = str(newest_checkpoint(task, ckpt_path, config.trainer.default_root_dir or RUNS_DIR))
            rank_zero_info(f"Using checkpoint {config.ckpt_path}")
        elif ckpt_path and ckpt_path.startswith(("runs:/", "models:/")):
            config.ckpt_path = str(checkpoint_from_model_uri(ckpt_path, Path(RUNS_DIR) / "mlflow-models"))

    @staticmethod
    def _task_name(class_path: str) -> str:
        module, _, name = class_path.rpartition(".")
        return getattr(importlib.import_module(module), name).task_name

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        configured = config.get("callbacks") or []
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
            callbacks = [*callbacks, RichProgressBar(leave=True)]
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        ckpt_path = self.config.get(self.subcommand or "", {}).get("ckpt_path")
        if self.subcommand == "fit" and not ckpt_path:
            ckpt_path = own_hpc_checkpoint(trainer)  # with or without a logger
        tracker = find_tracker(trainer)
        if tracker is not None:
            tracker.experiment_name = tracker.experiment_name or getattr(self.model, "task_name", "default")
            tracker.default_root_dir = Path(trainer.default_root_dir)
            tracker.tags.setdefault("task", tracker.experiment_name)
            tracker.tags.setdefault("command", self.subcommand or "")
            if self.subcommand == "fit" and ckpt_path and Path(ckpt_path).is_file() and tracker._run_id is None:
                tracker._run_id = run_id_in_checkpoint(ckpt_path)  # resuming continues the same run
        return trainer

    def before_fit(self) -> None:
        self._check_tracking()

    def before_test(self) -> None:
        self._check_tracking()

    def before_validate(self) -> None:
        self._check_tracking()

    def _check_tracking(self) -> None:
        tracker = find_tracker(self.trainer)
        if tracker is not None and self.trainer.is_global_zero:
            _ = tracker.experiment  # connects now: an unreachable store fails before any compute

    def after_fit(self) -> None:
        if not self._get(self.config, "test_after_fit") or self.trainer.interrupted:
            return
        if self.trainer.fast_dev_run or not self.datamodule or not _defines(self.datamodule, "test_dataloader"):
            return
        best = self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if best else None)


def own_hpc_checkpoint(trainer: Trainer) -> str | None:
    """The ``hpc_ckpt_*.ckpt`` that Lightning will resume from when fit has no ``ckpt_path`` under SLURM.

    Lightning takes any such file in the root folder; one that another job wrote (a cancelled one, say) is
    refused with a message rather than continued.
    """
    if not SLURMEnvironment.detect():
        return None
    path = trainer._checkpoint_connector._hpc_resume_path
    if path is None:
        return None
    job = os.environ.get("SLURM_JOB_ID")
    try:
        owner = checkpoint_entry(path, "slurm_job_id")
    except Exception:  # unreadable: not this job's either
        owner = None
    if owner is None or owner != job:
        raise SystemExit(
            f"ERROR: {path} is a preemption checkpoint of SLURM job {owner or '(unknown)'}, not of this job ({job}),"
            f" and Lightning would resume from it. To continue that training pass --ckpt_path {path}; to start a "
            "new one, move or delete the file."
        )
    return path


def _defines(obj: object, method: str) -> bool:
    return getattr(type(obj), method, None) is not getattr(LightningDataModule, method, None)


def main(args: ArgsType = None) -> None:
    try:
        TaskCLI(args=args)
    except (TrackingUnavailable, DataError) as error:  # the user's input, not our bug: no traceback
        raise SystemExit(f"ERROR: {error}") from None
    except SIGTERMException:  # Lightning exits with status 0 here; schedulers must see that the job did not finish
        print("Stopped by SIGTERM; `make resume` continues from last.ckpt.", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None


if __name__ == "__main__":
    main()
