"""Pretrained encoders benchmark: python bench/pretrained.py [MINUTES] [--images N] [--utterances N]

Offline, on the bundled sample data (nothing is downloaded: EfficientNet-Lite0's ImageNet weights come from the
`pretrained` extra, wav2vec 2.0 gets random weights, which cost the same time as trained ones). Prints:
- captioning: test BLEU-4 after MINUTES of training each, from scratch (the config's small CNN) and with
  EfficientNet-Lite0 frozen, frozen with cached features, and fine-tuned (frozen for one epoch, then at a tenth
  of the learning rate), each as a ratio to the from-scratch score; and the speed-up of caching frozen features;
- transcription: seconds per training epoch of wav2vec2_base (all 12 layers, and the lower 6) against the
  config's BiLSTM, on the same utterances.
Run with OMP_NUM_THREADS=1 on a shared machine (each variant then gets one core, as in the figures).
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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import PACKAGE, bake  # noqa: E402

TASKS = {"image_captioning": True, "price_forecasting": False, "speech_transcription": True}
LITE0 = {"encoder": "efficientnet_lite0", "pretrained": True, "encoder_image_size": 64}  # the data's 64 px
CAPTIONERS = {
    "from scratch (small CNN)": {},
    "Lite0 frozen": {**LITE0, "freeze_encoder": True},
    "Lite0 frozen, cached features": {**LITE0, "freeze_encoder": True, "cache_features": True},
    "Lite0 fine-tuned (frozen 1 epoch, lr x0.1)": {**LITE0, "freeze_epochs": 1, "encoder_lr_scale": 0.1},
    "Lite0 frozen, cached, at 128 px": {**LITE0, "freeze_encoder": True, "cache_features": True,
                                        "encoder_image_size": 128},
}  # fmt: skip


def init_args(project: Path, task: str) -> tuple[dict, dict]:
    cfg = yaml.safe_load((project / "configs" / f"{task}.yaml").read_text())
    return cfg["model"]["init_args"], cfg["data"]["init_args"]


class EpochTimer:
    """Seconds of each training epoch (a Lightning callback, made lazily so that importing this file is cheap)."""

    def __new__(cls):
        import lightning as L

        class Timer(L.Callback):
            def __init__(self) -> None:
                self.times: list[float] = []

            def on_train_epoch_start(self, trainer, module) -> None:
                self.start = time.perf_counter()

            def on_train_epoch_end(self, trainer, module) -> None:
                self.times.append(time.perf_counter() - self.start)

        return Timer()


def trainer(**kwargs):
    import lightning as L

    defaults = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return L.Trainer(**{**defaults, **kwargs})


def model_for(cls, args: dict, dm):
    model = cls(**args)
    model.configure(dm.spec)
    return model


def caption_epochs(cls, args: dict, dm) -> tuple[float, float]:
    """The first and the fastest later training epoch (the first one computes cached features)."""
    import lightning as L

    L.seed_everything(0)
    timer = EpochTimer()
    trainer(max_epochs=3, limit_val_batches=0, enable_checkpointing=False, callbacks=[timer]).fit(
        model_for(cls, args, dm), datamodule=dm
    )
    return timer.times[0], min(timer.times[1:])


def bleu_after(cls, args: dict, dm, minutes: float, first: float, later: float) -> tuple[float, float, int]:
    """Test BLEU-4 of the best-validated model after about ``minutes``, the baseline's, and the epochs run."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    budget = minutes * 60 / 1.15  # validation costs ~15 %
    epochs = max(1, 1 + math.floor((budget - first) / later))  # so the learning-rate schedule completes
    L.seed_everything(42)
    root = tempfile.mkdtemp()
    best = ModelCheckpoint(monitor="val/bleu4", mode="max", dirpath=root)
    run = trainer(default_root_dir=root, max_epochs=epochs, max_time={"seconds": minutes * 60}, callbacks=[best],
                  num_sanity_val_steps=0)  # fmt: skip
    run.fit(model_for(cls, args, dm), datamodule=dm)
    result = run.test(ckpt_path="best", datamodule=dm, verbose=False)[0]
    return result["test/bleu4"], result["test/common_bleu4"], run.current_epoch


def ratio(score: float, baseline: float) -> str:
    return f"{score / baseline:.2f}" if baseline > 0 else "n/a (0 from scratch: give it more time or images)"


def captioning(project: Path, tmp: Path, minutes: float, num_images: int) -> None:
    images = importlib.import_module(f"{PACKAGE}.datamodules.images")
    cls = importlib.import_module(f"{PACKAGE}.tasks.captioning").ImageCaptioner
    path = importlib.import_module(f"{PACKAGE}.datamodules.images.sample").write_sample(tmp / "images", 0, num_images)
    model_args, data_args = init_args(project, "captioning")
    dm = images.ImageCaptionDataModule(**{**data_args, "path": str(path)})
    dm.setup("fit")
    scores, later_s = {}, {}
    for name, extra in CAPTIONERS.items():
        args = {**model_args, **extra}
        first, later = caption_epochs(cls, args, dm)
        score, baseline, epochs = bleu_after(cls, args, dm, minutes, first, later)
        scores[name], later_s[name] = score, later
        print(
            f"captioning, {name}: test BLEU-4 {score:.3f} after {minutes:g} min ({epochs} epochs of "
            f"{later:.1f} s, the first {first:.1f} s) vs baseline {baseline:.3f}; "
            f"ratio to from scratch {ratio(score, scores['from scratch (small CNN)'])}",
            flush=True,
        )
    frozen, cached = later_s["Lite0 frozen"], later_s["Lite0 frozen, cached features"]
    print(f"captioning, cached frozen features: {cached:.2f} s/epoch vs {frozen:.2f} (speed-up {frozen / cached:.1f}x)")


def transcription(project: Path, tmp: Path, utterances: int) -> None:
    import torchaudio

    audio = importlib.import_module(f"{PACKAGE}.datamodules.audio")
    cls = importlib.import_module(f"{PACKAGE}.tasks.transcription").SpeechTranscriber
    sample = importlib.import_module(f"{PACKAGE}.datamodules.audio.sample")
    path = sample.write_sample(tmp / "speech", seed=0, speakers=max(4, utterances // 4), utterances=4)
    weights = tmp / "wav2vec2_base.pt"
    torch.save(torchaudio.models.wav2vec2_base().state_dict(), weights)
    model_args, data_args = init_args(project, "transcription")
    data_args = {**data_args, "path": str(path), "val_fraction": 0.2, "test_fraction": 0.2}
    variants = {
        "BiLSTM (config)": (model_args, "datamodule"),
        "wav2vec2_base, 12 layers": ({**model_args, "encoder": "wav2vec2_base", "weights_path": str(weights)}, "model"),
        "wav2vec2_base, lower 6 layers": (
            {**model_args, "encoder": "wav2vec2_base", "weights_path": str(weights), "encoder_layers": 6},
            "model",
        ),
    }
    seconds = {}
    for name, (args, features_on) in variants.items():
        dm = audio.SpeechDataModule(**{**data_args, "features_on": features_on})
        dm.setup("fit")
        timer = EpochTimer()
        trainer(max_epochs=2, limit_val_batches=0, enable_checkpointing=False, callbacks=[timer]).fit(
            model_for(cls, args, dm), datamodule=dm
        )
        seconds[name] = min(timer.times)
        ratio = seconds[name] / seconds["BiLSTM (config)"]
        print(
            f"transcription, {name}: {seconds[name]:.1f} s per epoch of {len(dm.splits['train'])} utterances "
            f"(ratio to the BiLSTM {ratio:.1f})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minutes", type=float, nargs="?", default=1.0, help="training budget per captioner")
    parser.add_argument("--images", type=int, default=1000, help="captioning sample size (the bundled: 1000)")
    parser.add_argument("--utterances", type=int, default=40, help="speech sample size for the epoch times")
    args = parser.parse_args()
    print(f"threads: {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        project = bake(tmp, **TASKS)
        sys.path.insert(0, str(project / "src"))
        importlib.import_module(f"{PACKAGE}.quiet").quiet_terminal()
        captioning(project, tmp, args.minutes, args.images)
        transcription(project, tmp, args.utterances)


if __name__ == "__main__":
    main()
