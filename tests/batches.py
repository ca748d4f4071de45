"""A callback for tests/test_prepared.py, loaded by the CLI as ``batches.RecordBatches`` (tests/ on PYTHONPATH)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch import Callback


class RecordBatches(Callback):
    """Appends ``<epoch> <global step> <file>`` for every training item to $BATCHES_DIR/rank<N>.txt, as it is
    trained on; with $KILL_AT_STEP, SIGKILLs this process when that step is reached (after a checkpoint)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        kill = os.environ.get("KILL_AT_STEP")
        if kill and trainer.global_step == int(kill):
            os.kill(os.getpid(), signal.SIGKILL)
        out = Path(os.environ["BATCHES_DIR"]) / f"rank{trainer.global_rank}.txt"
        with out.open("a") as file:
            file.writelines(f"{trainer.current_epoch} {trainer.global_step} {f}\n" for f in batch["file"])
