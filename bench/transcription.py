"""Speech transcription benchmark: python bench/transcription.py [MINUTES]

Prints one line per figure: WER on the held-out speakers of the sample data after at most MINUTES of
training with configs/transcription.yaml (against always writing the most common training word, a little below
1.0), audio-seconds/s of the DataModule against a plain read-resample-melspec loop over the same files, and the
real-time factor of predict.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch
import torchaudio
import yaml
from lightning.pytorch import Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import PACKAGE, bake  # noqa: E402

TASKS = {"image_captioning": False, "price_forecasting": False, "speech_transcription": True}


def config(project: Path) -> tuple[dict, dict, dict]:
    cfg = yaml.safe_load((project / "configs" / "transcription.yaml").read_text())
    return cfg["model"]["init_args"], cfg["data"]["init_args"], cfg["trainer"]


def throughput(audio, data_args: dict, path: Path) -> tuple[float, float, float]:
    """Audio-seconds/s through the first and a later (cached) training epoch, and through a plain loop."""
    dm = audio.SpeechDataModule(**{**data_args, "path": str(path)})
    dm.setup("fit")
    items = dm.splits["train"]
    seconds = sum(i.duration for i in items)
    loader, rates = dm.train_dataloader(), []
    for _ in range(2):
        start = time.perf_counter()
        for _ in loader:
            pass
        rates.append(seconds / (time.perf_counter() - start))
    rate, n_mels = data_args["sample_rate"], data_args["n_mels"]
    mel = torchaudio.transforms.MelSpectrogram(rate, n_fft=400, hop_length=160, n_mels=n_mels)
    start = time.perf_counter()
    for item in items:
        data, sr = sf.read(str(item.file), dtype="float32", always_2d=True)
        wave = torchaudio.functional.resample(torch.from_numpy(data).mean(1), sr, rate)
        _ = torch.log(mel(wave) + 1e-6)
    return rates[0], rates[1], seconds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minutes", type=float, nargs="?", default=5.0, help="training time limit")
    parser.add_argument("--epochs", type=int, default=None, help="default: trainer.max_epochs of the config")
    args = parser.parse_args()
    torch.set_num_threads(1)  # per-op work is small; on 2 busy cores more threads spin-wait
    with tempfile.TemporaryDirectory() as tmp:
        project = bake(Path(tmp), **TASKS)
        sys.path.insert(0, str(project / "src"))
        package = PACKAGE
        audio = importlib.import_module(f"{package}.datamodules.audio")
        speech = importlib.import_module(f"{package}.datamodules.audio.sample")
        task = importlib.import_module(f"{package}.tasks.transcription")
        model_args, data_args, trainer_args = config(project)
        start = time.perf_counter()
        path = speech.write_sample(Path(tmp) / "speech")
        print(f"sample data: {time.perf_counter() - start:.1f} s to synthesize", flush=True)

        first, cached, plain = throughput(audio, data_args, path)
        print(
            f"DataModule first epoch: {first:.0f} audio-s/s vs plain read-resample-melspec loop {plain:.0f} "
            f"audio-s/s (ratio {first / plain:.2f}; the DataModule also augments, normalizes and pads)",
            flush=True,
        )
        print(f"DataModule later epochs (audio cached): {cached:.0f} audio-s/s (ratio {cached / plain:.2f})")

        seed_everything(42)
        dm = audio.SpeechDataModule(**{**data_args, "path": str(path)})
        dm.setup("fit")
        model = task.SpeechTranscriber(**model_args)
        model.configure(dm.spec)  # as the CLI connects data and model
        epochs = args.epochs or trainer_args.get("max_epochs", 30)
        clip = trainer_args.get("gradient_clip_val")
        trainer = Trainer(max_epochs=epochs, max_time={"minutes": args.minutes}, logger=False, gradient_clip_val=clip,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          accelerator="cpu", devices=1)  # fmt: skip
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        minutes = (time.perf_counter() - start) / 60
        result = trainer.test(model, datamodule=dm, verbose=False)[0]
        speakers = len({i.speaker for i in dm.splits["test"]})
        print(f"WER after {minutes:.1f} min ({trainer.current_epoch} epochs) on {len(dm.splits['test'])} utterances "
              f"of {speakers} held-out speakers: {result['test/wer']:.3f} (CER {result['test/cer']:.3f}); "
              f"most-common-word baseline {result['test/common_wer']:.3f} "
              f"(ratio {result['test/wer'] / result['test/common_wer']:.3f})", flush=True)  # fmt: skip

        dm.hparams.predict_path = str(path)
        seconds = sum(sf.info(str(f)).duration for f in Path(path).rglob("*.flac"))
        start = time.perf_counter()
        rows = [r for batch in trainer.predict(model, datamodule=dm) for r in batch]
        elapsed = time.perf_counter() - start
        print(f"predict: {len(rows)} files, {seconds:.0f} s of audio in {elapsed:.1f} s: real-time factor "
              f"{elapsed / seconds:.3f} (1 CPU thread)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
