"""Image captioning benchmark: python bench/captioning.py [MINUTES]

Prints one line per figure: BLEU-4 on the held-out sample split after MINUTES of training (against the
most-common-caption baseline), images/s of the DataModule against a plain decode-and-transform loop, and
s/epoch of the Lightning loop against a plain PyTorch loop on the same model and batches.
On a machine shared with other jobs, OMP_NUM_THREADS=1 avoids thread oversubscription (it was 2x faster here).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import PACKAGE, bake  # noqa: E402

TASKS = {"image_captioning": True, "price_forecasting": False, "speech_transcription": False}


def config(project: Path) -> tuple[dict, dict]:
    text = (project / "configs" / "captioning.yaml").read_text()
    cfg = yaml.safe_load(text)
    return cfg["model"]["init_args"], cfg["data"]["init_args"]


def captioner(tasks, model_args: dict, dm):
    """A captioner configured from the set-up DataModule, as the CLI connects them."""
    model = tasks.ImageCaptioner(**model_args)
    model.configure(dm.spec)
    return model


def throughput(images, data_args: dict, path: Path, rounds: int = 3) -> tuple[float, float, float]:
    """Images/s of the training DataLoader (first epoch, then the best later one: decoded images are cached) and
    the best of a plain loop that decodes and transforms the same files; interleaved, so that other load on the
    machine hits both alike."""
    dm = images.ImageCaptionDataModule(**{**data_args, "path": str(path)})
    dm.setup("fit")
    files = [p for p, _ in dm.splits["train"]]
    files_module = importlib.import_module(f"{images.__name__}.decode")
    transform = dm._transform(train=True)
    size, batch = data_args["image_size"], data_args["batch_size"]
    loader_rates, plain_rates = [], []
    for _ in range(rounds + 1):
        start = time.perf_counter()
        seen = sum(len(b["file"]) for b in dm.train_dataloader())
        loader_rates.append(seen / (time.perf_counter() - start))
        start = time.perf_counter()
        for first in range(0, len(files), batch):
            torch.stack([transform(files_module.read_image(f, size)) for f in files[first : first + batch]])
        plain_rates.append(len(files) / (time.perf_counter() - start))
    return loader_rates[0], max(loader_rates[1:]), max(plain_rates)


def epoch_times(package: str, images, model_args: dict, data_args: dict, path: Path) -> tuple[float, float]:
    """Seconds of the fastest training epoch after the first: Lightning's loop, then a plain PyTorch loop (same
    model, same loader)."""
    import lightning as L

    tasks = importlib.import_module(f"{package}.tasks.captioning")
    dm = images.ImageCaptionDataModule(**{**data_args, "path": str(path)})
    dm.setup("fit")

    class EpochTimer(L.Callback):
        times: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            self.times.append(time.perf_counter() - self.start)

    L.seed_everything(0)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        accelerator="cpu",
    )
    trainer.fit(captioner(tasks, model_args, dm), datamodule=dm)

    L.seed_everything(0)
    model = captioner(tasks, model_args, dm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=model_args.get("lr", 1e-3))
    loader, plain = dm.train_dataloader(), []
    model.train()
    for _ in range(3):
        start = time.perf_counter()
        for batch in loader:
            batch = dm.on_after_batch_transfer(batch, 0)  # uint8 images normalized, as Lightning has it done
            tokens = batch["tokens"]
            logits = model.decoder(model.encode(batch["image"]), tokens[:, :-1])
            loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], ignore_index=0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        plain.append(time.perf_counter() - start)
    return min(timer.times[1:]), min(plain[1:])


def bleu_after(
    package: str, images, model_args: dict, data_args: dict, path: Path, minutes: float, epoch_s: float
) -> tuple[float, float, int]:
    """Test BLEU-4 of the best-validated model after about ``minutes`` of training, and of the baseline."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    tasks = importlib.import_module(f"{package}.tasks.captioning")
    dm = images.ImageCaptionDataModule(**{**data_args, "path": str(path)})
    dm.setup("fit")
    # as many epochs as fit the budget, so the learning-rate schedule completes (validation costs ~15 %)
    epochs = max(1, math.floor(minutes * 60 / (epoch_s * 1.15)))
    L.seed_everything(42)
    root = tempfile.mkdtemp()  # checkpoints and sample tables (written there without a logger)
    best = ModelCheckpoint(monitor="val/bleu4", mode="max", dirpath=root)
    trainer = L.Trainer(
        default_root_dir=root,
        max_epochs=epochs,
        max_time={"minutes": minutes},
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[best],
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(captioner(tasks, model_args, dm), datamodule=dm)
    result = trainer.test(ckpt_path="best", datamodule=dm, verbose=False)[0]
    return result["test/bleu4"], result["test/common_bleu4"], trainer.current_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minutes", type=float, nargs="?", default=4.0, help="training budget for the BLEU figure")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        project = bake(Path(tmp), **TASKS)
        sys.path.insert(0, str(project / "src"))
        package = PACKAGE
        images = importlib.import_module(f"{package}.datamodules.images")
        sample = importlib.import_module(f"{package}.datamodules.images.sample")
        start = time.perf_counter()
        path = sample.write_sample(Path(tmp) / "sample")
        print(f"sample data: 1000 images written in {time.perf_counter() - start:.1f} s")
        model_args, data_args = config(project)
        cold, warm, plain = throughput(images, data_args, path)
        print(
            f"data: DataModule {cold:.0f} images/s (1st epoch), {warm:.0f} images/s (later, cached) vs plain "
            f"decode+transform loop {plain:.0f} images/s (ratio {cold / plain:.2f} / {warm / plain:.2f})"
        )
        lightning_s, plain_s = epoch_times(package, images, model_args, data_args, path)
        print(
            f"loop: Lightning {lightning_s:.2f} s/epoch vs plain PyTorch {plain_s:.2f} s/epoch "
            f"(ratio {lightning_s / plain_s:.2f})"
        )
        score, baseline, epochs = bleu_after(package, images, model_args, data_args, path, args.minutes, lightning_s)
        print(
            f"quality: test BLEU-4 {score:.3f} after {args.minutes:g} min ({epochs} epochs) vs most-common-caption "
            f"baseline {baseline:.3f} (ratio {score / max(baseline, 1e-9):.1f})"
        )


if __name__ == "__main__":
    main()
