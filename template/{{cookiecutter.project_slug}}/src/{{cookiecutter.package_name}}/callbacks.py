"""Callbacks that keep a training and its MLflow run in step; the CLI adds them to every trainer."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .tracking import find_tracker


class LogConfigToMLflow(SaveConfigCallback):
    """Logs the resolved config as ``config.yaml`` in the run (Lightning's version needs a local log dir)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        tracker = find_tracker(trainer)
        if tracker is not None:
            text = self.parser.dump(self.config, skip_none=False)
            tracker.experiment.log_text(tracker.run_id, text, "config.yaml")


class RunLifecycle(Callback):
    """Keeps the MLflow run in step with the training: its id (and the SLURM job's) in every checkpoint, so
    resuming continues it,
    KILLED rather than FAILED when stopped by Ctrl-C or SIGTERM (after saving ``last.ckpt``), and the trained
    model logged with ``mlflow.pytorch`` at the end of ``fit`` (``runs:/<id>/model``)."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if "SLURM_JOB_ID" in os.environ:  # tells this job's preemption checkpoints from other jobs' (see cli.py)
            checkpoint["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
        tracker = find_tracker(trainer)
        if tracker is not None and trainer.is_global_zero:
            checkpoint["mlflow"] = {"run_id": tracker.run_id, "tracking_uri": tracker.tracking_uri}

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        tracker = find_tracker(trainer)
        if tracker is None or not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        tracker.stopped_by_user = True
        callback = trainer.checkpoint_callback
        if isinstance(exception, SIGTERMException) and callback is not None and callback.dirpath:
            trainer.save_checkpoint(Path(callback.dirpath) / "last.ckpt")  # so `make resume` loses little work
            rank_zero_info(f"Saved {Path(callback.dirpath) / 'last.ckpt'} before stopping; `make resume` continues")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        tracker = find_tracker(trainer)
        if tracker is not None and tracker.log_model and trainer.is_global_zero and not trainer.interrupted:
            tracker.log_pytorch_model(pl_module)


class TrainLoss(Callback):
    """Logs the loss that ``training_step`` returns as ``train/loss`` every ``log_every_n_steps`` steps (rank 0's,
    as ``self.log`` would) and its epoch mean over all ranks as ``train/loss_epoch``, so that tasks call
    ``self.log`` for validation and test metrics only.

    Why not ``self.log`` each step: on a CPU it costs about half a millisecond a call (it moves a torchmetrics
    state each time), and turning a GPU loss into a number each step makes the CPU wait for the GPU. Here losses
    stay on their device and are read in one go every ``read_every_n_steps`` steps (on a CPU, where reading costs
    nothing, at every logged step), at checkpoints and at the end of each epoch. Each value is logged with the
    step Lightning would have used; the latest one is in the progress bar and ``trainer.callback_metrics``.
    """

    def __init__(self, name: str = "train/loss", read_every_n_steps: int = 50) -> None:
        self.name, self.read_every_n_steps = name, read_every_n_steps
        self._kept: list[tuple[int, int, torch.Tensor]] = []  # (step, epoch, loss) not yet read
        self._sum: torch.Tensor | None = None
        self._count = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sum, self._count = None, 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):  # training_step returned None: a skipped batch
            return
        accumulating = pl_module.automatic_optimization and trainer.accumulate_grad_batches > 1
        if accumulating:  # Lightning hands over loss / accumulate_grad_batches, the part that was backpropagated
            loss = loss * trainer.accumulate_grad_batches
        loss = loss.detach()
        self._sum = loss if self._sum is None else self._sum + loss
        self._count += 1
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # what Lightning logs step metrics with
        if accumulating and trainer.fit_loop._should_accumulate():
            pass  # as with self.log: a value at optimizer steps only, one per step number
        elif (step + 1) % trainer.log_every_n_steps == 0 or trainer.should_stop:
            self._kept.append((step, trainer.current_epoch, loss))
        if self._kept and (self._free_to_read(loss) or (step + 1) % self.read_every_n_steps == 0):
            self._read(trainer)

    @staticmethod
    def _free_to_read(loss: torch.Tensor) -> bool:
        return loss.device.type == "cpu"

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._read(trainer)  # the logger sends what it has at each checkpoint: resuming starts from there

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._read(trainer)
        if self._count:  # the mean over every rank's batches: one all-reduce per epoch
            mean = trainer.strategy.reduce(self._sum.float() / self._count, reduce_op="mean").item()
            self._publish(trainer, f"{self.name}_epoch", mean, trainer.fit_loop.epoch_loop._batches_that_stepped - 1)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._read(trainer)

    def _read(self, trainer: Trainer) -> None:
        if not self._kept:
            return
        values = torch.stack([loss.float() for _, _, loss in self._kept]).tolist()  # one wait for the device
        for (step, epoch, _), value in zip(self._kept, values, strict=True):
            for logger in trainer.loggers:
                logger.log_metrics({self.name: value, "epoch": epoch}, step)
        self._kept = []
        self._publish(trainer, self.name, values[-1], None)

    def _publish(self, trainer: Trainer, name: str, value: float, step: int | None) -> None:
        trainer.callback_metrics[name] = torch.tensor(value)  # for ModelCheckpoint/EarlyStopping on train loss
        trainer.progress_bar_metrics[name] = value
        if step is not None:
            for logger in trainer.loggers:
                logger.log_metrics({name: value, "epoch": trainer.current_epoch}, step)
