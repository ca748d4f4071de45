"""A callback for bench/sweep.py: the seconds ``Trainer.fit`` takes inside a trial's process.

Named on the command line as ``--trainer.callbacks+=fit_timer.FitTimer`` with bench/ on PYTHONPATH; writes
``{"seconds": ..., "startup": <process start to fit start>, "ended": <wall clock>}``
to ``$FIT_TIMER_OUT.<$SWEEP_TRIAL>``.
"""

from __future__ import annotations

import json
import os
import time

from lightning.pytorch import Callback


class FitTimer(Callback):
    def on_fit_start(self, trainer, pl_module) -> None:
        self.started = time.time()

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            import psutil

            path = f"{os.environ['FIT_TIMER_OUT']}.{os.environ.get('SWEEP_TRIAL', 'alone')}"
            born = psutil.Process().create_time()
            with open(path, "w") as f:
                json.dump({"seconds": time.time() - self.started, "startup": self.started - born,
                           "ended": time.time()}, f)  # fmt: skip
