"""Faults injected into trainings under test, as Lightning callbacks named on the command line.

Used as ``--trainer.callbacks+=faults.<Name>`` with this folder on PYTHONPATH; settings come from the
environment so that the same command line works for every process of a DDP job.
"""

from __future__ import annotations

import os
import signal
import time

from lightning.pytorch import Callback


class RaiseOnRank1(Callback):
    """Rank 1 fails at step 3, as a bug or a bad batch on one GPU would."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_rank == 1 and trainer.global_step == 3:
            raise RuntimeError("injected failure on rank 1")


class SignalAtStep(Callback):
    """Sends $FAULT_SIGNAL to this process at step $FAULT_STEP after $FAULT_DELAY s (a preemption, an OOM kill)."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == int(os.environ["FAULT_STEP"]):
            time.sleep(float(os.environ.get("FAULT_DELAY", "0")))
            os.kill(os.getpid(), signal.Signals[os.environ["FAULT_SIGNAL"]])
