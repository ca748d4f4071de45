"""Price forecasting benchmark: model error against the naive forecast, and the Lightning loop against plain PyTorch.

Prints one line per figure, each a ratio against a baseline measured in the same run:
  mase_ratio        test MASE of the trained model / test MASE of the naive (last value) forecast (< 1 is better)
  epoch_time_ratio  seconds per training epoch, generated Lightning trainer / plain PyTorch loop (same model, data)

Usage: python bench/forecasting.py [--epochs 15] [--timing-epochs 4]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import bake  # noqa: E402


class EpochTimer:
    """Wall time of each training epoch (Lightning callback)."""

    def __init__(self) -> None:
        from lightning.pytorch import Callback

        timer = self

        class _Timer(Callback):
            def on_train_epoch_start(self, *args) -> None:
                timer.start = time.perf_counter()

            def on_train_epoch_end(self, *args) -> None:
                timer.times.append(time.perf_counter() - timer.start)

        self.times: list[float] = []
        self.callback = _Timer()


def lightning_epoch_times(pkg, data_path: Path, epochs: int) -> list[float]:
    from lightning.pytorch import Trainer, seed_everything

    seed_everything(0)
    data, model = pkg.build(data_path)
    timer = EpochTimer()
    trainer = Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        callbacks=[timer.callback],
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=data)
    return timer.times


def plain_epoch_times(pkg, data_path: Path, epochs: int) -> list[float]:
    from lightning.pytorch import seed_everything

    seed_everything(0)
    data, model = pkg.build(data_path)
    optimizer = model.configure_optimizers()
    loader = data.train_dataloader()
    times = []
    model.train()
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in loader:
            loss = model._loss(model(batch["past"]), batch["target"])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def trained_mase(pkg, data_path: Path, epochs: int) -> tuple[float, float, float]:
    from lightning.pytorch import Trainer, seed_everything

    seed_everything(42)
    data, model = pkg.build(data_path)
    trainer = Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        accelerator="cpu",
        default_root_dir=str(data_path.parent / "runs"),
    )
    trainer.fit(model, datamodule=data)
    metrics = trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)[0]
    return metrics["test/mase"], metrics["test/naive_mase"], metrics["test/snaive_mase"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="training epochs for the MASE figure (config default)")
    parser.add_argument("--timing-epochs", type=int, default=4, help="epochs timed per loop (the first is warm-up)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        project = bake(Path(tmp), image_captioning=False, speech_transcription=False)
        sys.path.insert(0, str(project / "src"))
        timeseries = importlib.import_module("demo_project.datamodules.timeseries")
        forecasting = importlib.import_module("demo_project.tasks.forecasting")

        def build(path: Path):
            """The sample's DataModule and a forecaster configured from it, as the CLI connects them."""
            data = timeseries.PriceDataModule(path=str(path))
            data.setup("fit")
            model = forecasting.PriceForecaster()
            model.configure(data.spec)
            return data, model

        pkg = argparse.Namespace(build=build)
        data_path = importlib.import_module("demo_project.sample_data").write("forecasting", Path(tmp) / "data")
        mase, naive, snaive = trained_mase(pkg, data_path, args.epochs)
        lightning = statistics.median(lightning_epoch_times(pkg, data_path, args.timing_epochs)[1:])
        plain = statistics.median(plain_epoch_times(pkg, data_path, args.timing_epochs)[1:])
    print(
        f"mase_ratio {mase / naive:.3f}  (model MASE {mase:.3f} / naive MASE {naive:.3f}; seasonal naive {snaive:.3f})"
    )
    print(f"epoch_time_ratio {lightning / plain:.3f}  (Lightning {lightning:.3f} / plain PyTorch {plain:.3f} s/epoch)")


if __name__ == "__main__":
    main()
