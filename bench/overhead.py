"""Trainer overhead benchmark: python bench/overhead.py [--epochs N] [--repeats R]

Seconds per training epoch of a baked project's PriceForecaster + PriceDataModule on its sample data:
  ours      the generated project's Lightning Trainer with its TrackedRun, MLflowLogger and TrainLoss callback
            logging train/loss every step (log_every_n_steps=1);
  nolog     the same Trainer with logger=False (TrainLoss still reads the losses);
  stock     Lightning's own MLFlowLogger (synchronous) with self.log("train/loss") in training_step every step;
  plain     a PyTorch loop on its own copy of the model: forward, loss, backward, gradient clipping, AdamW step.
This machine's speed drifts by 10-20% from minute to minute (a shared VM), more than the effect measured, so the
plain loop runs interleaved with the Lightning trainer, a batch each in turn, in the same process (see
paired_epochs). Ratios are printed two ways: of the median epochs, and the median over epochs of Lightning epoch /
the plain epoch interleaved with it. The first epoch of each run is warm-up. Times are wall and CPU time of the
process (it includes the logger's threads).
Prints one line per figure: ours/plain (goal <= 1.05), ours/nolog (goal <= 1.05) and ours/stock.
``--profile`` instead trains "ours" (with the progress bar `make train` shows) under cProfile and prints, per
owner (this project's modules, Lightning, torch, the rest), the share of the time a step spends outside the
model's own forward/backward/optimizer work, and the project's functions that cost most: shares, not seconds, so
a busy machine changes them little.
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
from lightning.pytorch.loggers import MLFlowLogger

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import bake  # noqa: E402

TASKS = {"image_captioning": False, "price_forecasting": True, "speech_transcription": False}
PACKAGE = "bench_project"
CLIP = 1.0  # configs/forecasting.yaml: trainer.gradient_clip_val


def bake_project(out: Path) -> Path:
    project = bake(out, **TASKS, project_name="Bench Project", package_name=PACKAGE)
    sys.path.insert(0, str(project / "src"))
    return project


def build(package: str, project: Path, self_log: bool = False) -> tuple[Any, Any]:
    """A fresh model and the datamodule, seeded alike for every variant; ``self_log``: the model logs its loss."""
    sample_data = importlib.import_module(f"{package}.sample_data")
    timeseries = importlib.import_module(f"{package}.datamodules.timeseries")
    forecasting = importlib.import_module(f"{package}.tasks.forecasting")

    class SelfLogging(forecasting.PriceForecaster):
        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["past"]))
            return loss

    path = sample_data.write("forecasting", project / "data" / "sample")
    data = timeseries.PriceDataModule(path=str(path))
    data.setup("fit")
    torch.manual_seed(0)
    model = (SelfLogging if self_log else forecasting.PriceForecaster)()
    model.configure(data.spec)
    return model, data


def clocks() -> tuple[float, float]:
    """Wall time, and CPU time of this process (all its threads: the metric sender's work counts too)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def plain_step(model: Any, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> None:
    """A hand-written training step doing the same work as Lightning's."""
    loss = model._loss(model(batch["past"]), batch["target"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    optimizer.step()


def paired_epochs(
    package: str, project: Path, epochs: int, logger: Any, stock: bool = False
) -> list[tuple[float, ...]]:
    """Per epoch: (wall, cpu) of the Lightning trainer's epoch, then (wall, cpu) of the plain loop's epoch.

    The two run interleaved, a batch each in turn, so that both meet the same machine: after each Lightning
    step a callback fetches the plain loop's next batch from its own DataLoader and runs its step; that time
    is the plain loop's, and it is subtracted from the Lightning epoch's.
    """
    from lightning.pytorch import Callback, Trainer

    model, data = build(package, project, self_log=stock)
    twin, _ = build(package, project)  # same seed: the same initial weights
    optimizer = twin.configure_optimizers()

    class Paired(Callback):
        def __init__(self) -> None:
            self.times: list[tuple[float, ...]] = []

        def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
            twin.train()
            self.plain = (0.0, 0.0)
            self.start = clocks()
            self.batches = iter(data.train_dataloader())  # its own shuffled order, as a separate loop would have

        def on_train_batch_end(self, trainer: Trainer, pl_module: Any, *args: Any) -> None:
            start = clocks()
            plain_step(twin, optimizer, next(self.batches))
            spent = since(start)
            self.plain = (self.plain[0] + spent[0], self.plain[1] + spent[1])

        def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
            total = since(self.start)
            lightning = (total[0] - self.plain[0], total[1] - self.plain[1])
            self.times.append((*lightning, *self.plain))
            assert next(self.batches, None) is None, "both loops see every batch once per epoch"

    paired = Paired()
    callbacks: list[Any] = [paired]
    if not stock:  # logs train/loss, as in `make train`
        callbacks.append(importlib.import_module(f"{package}.train_loss").TrainLoss())
    if isinstance(logger, importlib.import_module(f"{package}.mlflow_logger").MLflowLogger):
        callbacks.append(logger.run)  # the run owner sees the training too
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=CLIP,
        log_every_n_steps=1,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tempfile.mkdtemp(prefix="bench-runs-"),
    )
    trainer.fit(model, datamodule=data)
    return paired.times[1:]


def profile(project: Path, store: str, epochs: int) -> None:
    """Where the time of "ours" goes, by owner of the code, from cProfile's own-time (tottime) per function."""
    import cProfile
    import pstats

    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import RichProgressBar

    run_module = importlib.import_module(f"{PACKAGE}.run")
    logger = importlib.import_module(f"{PACKAGE}.mlflow_logger")
    model, data = build(PACKAGE, project)
    run = run_module.TrackedRun(run_module.RunSettings(system_metrics=False), store, "profile", project / "runs", "")
    callbacks = [importlib.import_module(f"{PACKAGE}.train_loss").TrainLoss(), run, RichProgressBar(leave=True)]
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, limit_val_batches=0, num_sanity_val_steps=0,
        gradient_clip_val=CLIP, log_every_n_steps=1, logger=logger.MLflowLogger(run), callbacks=callbacks,
        enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(project / "runs"),
    )  # fmt: skip
    profiler = cProfile.Profile()
    with run.started("fit"):
        profiler.runcall(trainer.fit, model, datamodule=data)
    stats = pstats.Stats(profiler).stats
    steps = trainer.global_step
    owners: dict[str, float] = {}
    ours: dict[str, float] = {}
    for (file, line, name), (_, _, own, _, _) in stats.items():
        model_or_data = any(f"/{PACKAGE}/{part}/" in file for part in ("tasks", "datamodules"))
        owner = (
            "the task's model and data (the plain loop runs them too)" if model_or_data
            else "this project's training code" if f"/{PACKAGE}/" in file
            else "lightning" if "/lightning/" in file or "lightning_utilities" in file
            else "rich (progress bar)" if "/rich/" in file
            else "torch" if "/torch" in file or file == "~" and ("torch" in name or "_C." in name or "Tensor" in name)
            else "python and other libraries"
        )  # fmt: skip
        owners[owner] = owners.get(owner, 0.0) + own
        if owner == "this project's training code":
            ours[f"{Path(file).name}:{line} {name}"] = own
    total = sum(owners.values())
    print(f"profile of {steps} steps, {total / steps * 1000:.2f} ms of own time per step")
    for owner, own in sorted(owners.items(), key=lambda kv: -kv[1]):
        print(f"  {own / total:6.1%}  {own / steps * 1000:6.3f} ms/step  {owner}")
    print("  this project's costliest training-code functions (own time per step):")
    for where, own in sorted(ours.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {own / steps * 1000:7.4f} ms  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (the first is warm-up)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant, alternated")
    parser.add_argument("--profile", action="store_true", help="where the time of a step goes, by owner")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what each DDP rank gets on a small machine; and less noise from other processes
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            project = bake_project(Path(tmp))
            store = f"sqlite:///{Path(tmp) / 'bench.db'}"
            importlib.import_module(f"{PACKAGE}.store").prepare_store(store)
            profile(project, store, args.epochs)
        return

    with tempfile.TemporaryDirectory() as tmp:
        project = bake_project(Path(tmp))
        store = f"sqlite:///{Path(tmp) / 'bench.db'}"
        importlib.import_module(f"{PACKAGE}.store").prepare_store(store)
        run_module = importlib.import_module(f"{PACKAGE}.run")
        logger_module = importlib.import_module(f"{PACKAGE}.mlflow_logger")
        pairs: dict[str, list[tuple[float, ...]]] = {"nolog": [], "ours": [], "stock": []}
        steps = len(build(PACKAGE, project)[1].train_dataloader())
        for _ in range(args.repeats):
            pairs["nolog"] += paired_epochs(PACKAGE, project, args.epochs, logger=False)
            settings = run_module.RunSettings(log_model=False, system_metrics=False)
            run = run_module.TrackedRun(settings, store, "bench", Path(tmp) / "runs", config="")
            with run.started("fit"):
                pairs["ours"] += paired_epochs(PACKAGE, project, args.epochs, logger=logger_module.MLflowLogger(run))
            logged = run.client.get_metric_history(run.id, "train/loss")
            assert len(logged) == steps * args.epochs, f"MLflow has {len(logged)} train/loss values"
            stock = MLFlowLogger(experiment_name="bench-stock", tracking_uri=store)
            pairs["stock"] += paired_epochs(PACKAGE, project, args.epochs, logger=stock, stock=True)
            logged = stock.experiment.get_metric_history(stock.run_id, "train/loss_step")
            assert len(logged) == steps * args.epochs, f"MLflow has {len(logged)} train/loss_step values (stock)"

    print(f"forecasting: {steps} steps/epoch, {args.repeats} x {args.epochs - 1} timed epoch pairs per variant")
    for clock, index in (("wall", 0), ("cpu", 1)):
        for name, values in pairs.items():
            lightning = statistics.median(t[index] for t in values)
            plain = statistics.median(t[index + 2] for t in values)
            per_step = (lightning - plain) / steps * 1000
            print(f"{clock} s/epoch {name:<6} {lightning:.3f}, plain beside it {plain:.3f} ({per_step:+.2f} ms/step)")
        medians = {
            n: statistics.median(t[index] for t in v) / statistics.median(t[index + 2] for t in v)
            for n, v in pairs.items()
        }
        paired = {name: statistics.median(t[index] / t[index + 2] for t in v) for name, v in pairs.items()}
        for label, ratio in (("of medians", medians), ("paired", paired)):
            print(
                f"{clock} {label}: ours / plain pytorch {ratio['ours']:.3f} (goal <= 1.05), "
                f"ours / no logger {ratio['ours'] / ratio['nolog']:.3f} (goal <= 1.05), "
                f"ours / stock lightning+mlflow {ratio['ours'] / ratio['stock']:.3f}, "
                f"stock / plain pytorch {ratio['stock']:.3f}"
            )


if __name__ == "__main__":
    main()
