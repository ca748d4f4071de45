"""Trainer overhead benchmark: python bench/overhead.py [--epochs N] [--repeats R]

Seconds per training epoch of a baked project's PriceForecaster + PriceDataModule on its sample data, three ways,
on the same model, batches and optimizer, in this process:
  plain     a PyTorch loop: forward, loss, backward, gradient clipping, AdamW step;
  nolog     the generated project's Lightning Trainer with logger=False;
  mlflow    the same Trainer with the project's MLflowTracker logging train/loss every step (log_every_n_steps=1).
Each variant runs ``epochs`` epochs per repeat (the first one is warm-up and not counted); the variants are
interleaved across repeats so that load from other processes hits them alike, and medians are compared, in wall
time and in CPU time of the process (steadier on a busy machine; it includes the logger's background threads).
Prints one line per figure; the goal is <= 1.05 for both mlflow/plain and mlflow/nolog.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import bake  # noqa: E402

TASKS = {"image_captioning": False, "price_forecasting": True, "speech_transcription": False}
PACKAGE = "bench_project"
CLIP = 1.0  # configs/forecasting.yaml: trainer.gradient_clip_val


def bake_project(out: Path) -> Path:
    project = bake(out, **TASKS, project_name="Bench Project", package_name=PACKAGE)
    sys.path.insert(0, str(project / "src"))
    return project


def build(package: str, project: Path) -> tuple[Any, Any]:
    """A fresh model and the datamodule, seeded alike for every variant."""
    sample_data = importlib.import_module(f"{package}.sample_data")
    timeseries = importlib.import_module(f"{package}.datamodules.timeseries")
    forecasting = importlib.import_module(f"{package}.tasks.forecasting")
    path = sample_data.write("forecasting", project / "data" / "sample")
    data = timeseries.PriceDataModule(path=str(path))
    data.setup("fit")
    torch.manual_seed(0)
    hp = data.hparams
    model = forecasting.PriceForecaster(
        horizon=hp.horizon, lookback=hp.lookback, num_features=data.num_features, target_scale=data.target_scale
    )
    return model, data


def clocks() -> tuple[float, float]:
    """Wall time, and CPU time of this process (all its threads: the metric sender's work counts too)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def plain_epochs(model: Any, data: Any, epochs: int) -> list[tuple[float, float]]:
    """Seconds per epoch of a hand-written loop doing the same work as Lightning's training step."""
    optimizer = model.configure_optimizers()
    loader = data.train_dataloader()
    model.train()
    times = []
    for _ in range(epochs):
        start = clocks()
        for batch in loader:
            loss = model._loss(model(batch["past"]), batch["target"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
        times.append(since(start))
    return times


def lightning_epochs(model: Any, data: Any, epochs: int, logger: Any) -> list[tuple[float, float]]:
    """Seconds per epoch of the Lightning Trainer, timed from the start to the end of each training epoch."""
    from lightning.pytorch import Callback, Trainer

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.times: list[tuple[float, float]] = []

        def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
            self.start = clocks()

        def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
            self.times.append(since(self.start))

    timer = EpochTimer()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=CLIP,
        log_every_n_steps=1,
        logger=logger,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tempfile.mkdtemp(prefix="bench-runs-"),
    )
    trainer.fit(model, datamodule=data)
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant and repeat (first is warm-up)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # what each DDP rank gets on a small machine; and less noise from other processes

    with tempfile.TemporaryDirectory() as tmp:
        project = bake_project(Path(tmp))
        tracking = importlib.import_module(f"{PACKAGE}.tracking")
        store = f"sqlite:///{Path(tmp) / 'bench.db'}"
        tracking.prepare_store(store)
        times: dict[str, list[tuple[float, float]]] = {"plain": [], "nolog": [], "mlflow": []}
        steps = 0
        for _ in range(args.repeats):
            model, data = build(PACKAGE, project)
            steps = len(data.train_dataloader())
            times["plain"] += plain_epochs(model, data, args.epochs)[1:]
            model, data = build(PACKAGE, project)
            times["nolog"] += lightning_epochs(model, data, args.epochs, logger=False)[1:]
            model, data = build(PACKAGE, project)
            tracker = tracking.MLflowTracker(experiment_name="bench", tracking_uri=store)
            times["mlflow"] += lightning_epochs(model, data, args.epochs, logger=tracker)[1:]
            logged = tracker.experiment.get_metric_history(tracker.run_id, "train/loss")
            assert len(logged) == steps * args.epochs, f"MLflow has {len(logged)} train/loss values"

    print(f"forecasting: {steps} steps/epoch, {args.repeats} x {args.epochs - 1} timed epochs per variant")
    for clock, index in (("wall", 0), ("cpu", 1)):
        median = {name: statistics.median(t[index] for t in values) for name, values in times.items()}
        for name, values in times.items():
            low, high = min(t[index] for t in values), max(t[index] for t in values)
            print(f"{clock} s/epoch {name:<6} {median[name]:.3f} (min {low:.3f}, max {high:.3f})")
        mlflow, nolog, plain = median["mlflow"], median["nolog"], median["plain"]
        print(f"{clock} ratio lightning+mlflow / plain pytorch: {mlflow / plain:.3f} (goal <= 1.05)")
        print(f"{clock} ratio lightning+mlflow / lightning no logger: {mlflow / nolog:.3f} (goal <= 1.05)")
        print(f"{clock} ratio lightning no logger / plain pytorch: {nolog / plain:.3f}")


if __name__ == "__main__":
    main()
