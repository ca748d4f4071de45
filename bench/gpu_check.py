"""GPU check: train each task of a freshly baked project for about a minute in bf16-mixed on one GPU.

Prints, per task, training samples/s and peak GPU memory. Run on a machine with a GPU: ``bash bench/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import bake  # noqa: E402


class Throughput(Callback):
    """Counts training samples and time after a warm-up of a few steps."""

    WARMUP = 5
    last: Throughput | None = None  # the meter of the latest training: the CLI does not hand its trainer back

    def __init__(self) -> None:
        self.samples, self.steps, self.start = 0, 0, 0.0
        Throughput.last = self

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        if self.steps == self.WARMUP:
            torch.cuda.synchronize()
            self.start = time.perf_counter()
        elif self.steps > self.WARMUP:
            first = next(v for v in batch.values() if isinstance(v, torch.Tensor))
            self.samples += first.shape[0]

    def rate(self) -> float:
        torch.cuda.synchronize()
        return self.samples / max(time.perf_counter() - self.start, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="training time per task")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no GPU visible to PyTorch"
    with tempfile.TemporaryDirectory() as tmp:
        project = bake(Path(tmp))
        sys.path.insert(0, str(project / "src"))
        sys.path.insert(0, str(Path(__file__).parent))  # this module, for --trainer.callbacks
        os.chdir(project)
        from demo_project import sample_data
        from demo_project.cli import main as cli
        from demo_project.tasks import TASKS

        print(f"device {torch.cuda.get_device_name()}  torch {torch.__version__}")
        for task in TASKS:
            sample_data.write(task)
            torch.cuda.reset_peak_memory_stats()
            limit = f"00:00:00:{args.seconds:02d}" if args.seconds < 60 else "00:00:01:00"
            cli(
                [
                    "fit",
                    *("--config", f"configs/{task}.yaml", "--config", "configs/trainer/gpu.yaml"),
                    *("--trainer.max_time", limit, "--trainer.max_epochs", "1000", "--trainer.logger", "false"),
                    *("--trainer.enable_progress_bar", "false", "--data.num_workers", "4", "--test_after_fit", "false"),
                    "--trainer.callbacks+=gpu_check.Throughput",
                ]
            )
            meter = importlib.import_module("gpu_check").Throughput.last  # the module the config named, not __main__
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"{task:<14} {meter.rate():10.1f} samples/s  peak memory {peak:6.2f} GiB  ({meter.steps} steps)")


if __name__ == "__main__":
    main()
