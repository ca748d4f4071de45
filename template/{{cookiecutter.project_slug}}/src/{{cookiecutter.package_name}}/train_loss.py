"""``train/loss`` from what ``training_step`` returns, without a device sync or a ``self.log`` call per step.

``bench/overhead.py`` measured why: ``self.log`` costs about half a millisecond a call on a CPU (8% of an epoch of
the forecasting sample), and showing a GPU loss in the progress bar each step makes the CPU wait for the GPU.
So tasks return their loss and this callback logs it, exactly at the steps and with the values that
``self.log("train/loss", loss, on_step=True, on_epoch=True)`` would give (``tests/test_train_loss.py``). A task
that logs ``train/loss`` itself still works: this callback then stands aside.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class TrainLoss(Callback):
    """Logs ``train/loss`` every ``log_every_n_steps`` optimizer steps and its epoch mean ``train/loss_epoch``.

    Losses stay on their device and are read in one go every ``read_every_n_steps`` steps (on a CPU, where reading
    costs nothing, at every logged step), at checkpoints and at the end of each epoch. The latest value is in the
    progress bar and ``trainer.callback_metrics`` (refreshed at most twice a second). Assumes automatic
    optimization with one optimizer, as in the tasks.
    """

    SHOW_EVERY_S = 0.5

    def __init__(self, name: str = "train/loss", read_every_n_steps: int = 50) -> None:
        self.name, self.read_every_n_steps = name, read_every_n_steps
        self._kept: list[tuple[int, int, torch.Tensor]] = []  # (step, epoch, loss) not yet read
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._last_step = 0  # trainer.global_step after the previous batch
        self._active: bool | None = None  # None: not known until the first batch
        self._shown = -math.inf  # when the progress bar last got a value

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_step, self._active = trainer.global_step, None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sum, self._count = None, 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._active is None:  # a task that logs the loss itself keeps doing so
            logged = trainer.callback_metrics
            self._active = not any(k in logged for k in (self.name, f"{self.name}_step", f"{self.name}_epoch"))
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not self._active or not isinstance(loss, torch.Tensor):  # None: training_step skipped the batch
            return
        if pl_module.automatic_optimization and trainer.accumulate_grad_batches > 1:
            loss = loss * trainer.accumulate_grad_batches  # Lightning hands over the part that was backpropagated
        loss = loss.detach()
        self._sum = loss if self._sum is None else self._sum + loss
        self._count += 1
        stepped, self._last_step = trainer.global_step != self._last_step, trainer.global_step
        # as self.log: a value per optimizer step (none inside an accumulation window), at the step Lightning uses
        if stepped and (trainer.global_step % trainer.log_every_n_steps == 0 or trainer.should_stop):
            self._kept.append((trainer.global_step - 1, trainer.current_epoch, loss))
        if self._kept and (self._free_to_read(loss) or trainer.global_step % self.read_every_n_steps == 0):
            latest = self._read(trainer)
            if time.monotonic() - self._shown > self.SHOW_EVERY_S:  # a self.log call costs what a step saves
                pl_module.log(self.name, latest, prog_bar=True, logger=False, on_step=True, on_epoch=False)
                self._shown = time.monotonic()

    @staticmethod
    def _free_to_read(loss: torch.Tensor) -> bool:
        return loss.device.type == "cpu"

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._read(trainer)  # the logger sends what it has at each checkpoint: resuming starts from there

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._read(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._read(trainer)
        if self._active and self._count:  # the mean over every rank's batches, logged as self.log would
            mean = self._sum.float() / self._count
            pl_module.log(f"{self.name}_epoch", mean, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True)

    def _read(self, trainer: Trainer) -> float | None:
        """Send the kept losses to the loggers, with one wait for the device; the latest value."""
        if not self._kept:
            return None
        values = torch.stack([loss.float() for _, _, loss in self._kept]).tolist()
        for (step, epoch, _), value in zip(self._kept, values, strict=True):
            for logger in trainer.loggers:
                logger.log_metrics({self.name: value, "epoch": epoch}, step)
        self._kept = []
        return values[-1]
