"""The speech DataModule: utterances split by speaker, checked up front, as length-grouped padded batches."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Literal

import soundfile as sf
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from ..common import BadInputPolicy, DataError, SkipLog, existing_path, split_by_group
from .dataset import Collate, LengthGroupedSampler, SpeechDataset
from .decode import AUDIO_SUFFIXES, wav_truncated
from .features import FeaturePipeline
from .files import READERS, SAMPLE_HINT, Utterance, detect_format
from .text import BLANK, ctc_frames_needed, normalize_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechSpec:
    """What a transcriber needs to know of its data: the characters it may write, how audio becomes features, and
    the most common word of the training transcripts, the trivial prediction its WER is compared with
    (``test/common_wer``: below 1.0, the WER of writing nothing, as the reference contains that word or not).

    Made by ``setup("fit")``, saved in the checkpoint; ``use_spec`` makes test and predict data follow it
    (transcripts encoded with the model's characters, audio resampled and featurized as in training).
    """

    vocab: tuple[str, ...]
    features: dict[str, int] = field(hash=False)  # FeaturePipeline settings: sample_rate, n_mels, ...
    common_word: str = ""  # empty in checkpoints made before it existed (no baseline then)

    def __post_init__(self) -> None:  # a checkpoint or a config may hold a list
        object.__setattr__(self, "vocab", tuple(self.vocab))


class SpeechDataModule(LightningDataModule):
    """Speech + transcripts -> padded, length-grouped batches, split by speaker.

    Args:
        path: a LibriSpeech-style folder, a JSONL manifest (NeMo) or a CSV/TSV (``path``, ``transcript``/``sentence``).
        format: ``auto`` detects it from ``path``.
        sample_rate, n_mels: audio is resampled to ``sample_rate`` and turned into ``n_mels`` log-mel bands.
        features_on: ``datamodule`` computes features in the loader workers; ``model`` yields waveforms and lets
            the model compute them on its device (a GPU does it much faster).
        max_duration: longer utterances (seconds) are dropped, with a logged count.
        time_reduction: the model's frame subsampling, to reject transcripts too long for CTC.
        check_audio: decode every file in ``setup`` so bad audio fails there, not inside a worker.
        cache_audio_gb: keep decoded, resampled audio in memory after the first epoch when a split fits in this.
        predict_path: an audio file or a folder of them to transcribe.
    """

    def __init__(
        self,
        path: str = "data/sample/transcription",
        format: Literal["auto", "librispeech", "jsonl", "csv"] = "auto",
        batch_size: int = 16,
        num_workers: int = 0,
        sample_rate: int = 16000,
        n_mels: int = 80,
        features_on: Literal["datamodule", "model"] = "datamodule",
        spec_augment: bool = True,
        max_duration: float = 30.0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        time_reduction: int = 4,
        check_audio: bool = True,
        cache_audio_gb: float = 2.0,
        predict_path: str | None = None,
        on_bad_input: BadInputPolicy = "error",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec: SpeechSpec | None = None
        self.features = FeaturePipeline(sample_rate, n_mels)
        self.splits: dict[str, list[Utterance]] = {}

    def use_spec(self, spec: SpeechSpec) -> None:
        """Follow a trained model (test, predict): its characters, sample rate and feature settings."""
        self.spec = spec
        self.features = FeaturePipeline(**spec.features)

    @property
    def sample_rate(self) -> int:
        return self.features.settings["sample_rate"]

    def setup(self, stage: str) -> None:
        if stage == "predict":
            self.splits["predict"] = self._checked(self._predict_items(), "audio files", need_text=False)
            return
        if self.splits.get("train") is not None:
            return
        hp = self.hparams
        path = existing_path(hp.path, "data.path", SAMPLE_HINT)
        bad = SkipLog(hp.on_bad_input, "utterances")
        items = READERS[detect_format(path, hp.format)](path, bad)
        bad.report(len(items) + len(bad.reasons))
        for item in items:
            item.text = normalize_text(item.text)
        new_spec = self.spec is None
        if new_spec:
            vocab = (BLANK, *sorted({c for item in items for c in item.text}))
            self.spec = SpeechSpec(vocab, dict(self.features.settings))
        items = self._checked(items, "utterances", need_text=True)
        parts = split_by_group([i.speaker for i in items], self._fractions(), hp.seed)
        for name, indices in zip(("train", "val", "test"), parts, strict=True):
            self.splits[name] = [items[i] for i in indices]
        if not self.splits["train"]:
            raise DataError(f"{path}: no training utterances left after the split; add data or lower the fractions")
        if new_spec:  # the training speakers' most common word: the baseline sees no test data
            common = Counter(w for i in self.splits["train"] for w in i.text.split()).most_common(1)[0][0]
            self.spec = replace(self.spec, common_word=common)
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        log.info("%s: %s utterances from %d speakers", path, sizes, len({i.speaker for i in items}))

    def _fractions(self) -> list[float]:
        val, test = self.hparams.val_fraction, self.hparams.test_fraction
        return [1 - val - test, val, test]

    def _predict_items(self) -> list[Utterance]:
        if not self.hparams.predict_path:
            raise DataError("set data.predict_path (make predict INPUT=...) to an audio file or a folder of them")
        path = existing_path(self.hparams.predict_path, "data.predict_path")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise DataError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) under {path}")
        return [Utterance(f, "", f.stem, str(f)) for f in files]

    def _checked(self, items: list[Utterance], what: str, need_text: bool) -> list[Utterance]:
        """Drop or reject bad items here, in the main process, so workers never meet them."""
        bad = SkipLog(self.hparams.on_bad_input, what)
        index = {c: i for i, c in enumerate(self.spec.vocab if self.spec else ())}
        kept, too_long = [], []
        for item in items:
            where = f"{item.source}: {item.file}"
            if not item.file.is_file():
                bad.bad(f"{where}: audio file does not exist")
                continue
            if need_text and not item.text:
                bad.bad(f"{item.source}: zero-length transcript for {item.file}")
                continue
            try:
                info = sf.info(str(item.file))
                frames = info.frames
                if self.hparams.check_audio and frames > 0:
                    if wav_truncated(item.file):
                        raise ValueError("the file is shorter than its header says (truncated)")
                    frames = len(sf.read(str(item.file), dtype="float32", always_2d=True)[0])
            except (RuntimeError, ValueError, OSError) as error:
                bad.bad(f"{where}: unreadable or truncated audio ({str(error).strip()})")
                continue
            if frames == 0:
                bad.bad(f"{where}: empty audio (0 samples)")
                continue
            seconds = frames / info.samplerate
            if seconds > self.hparams.max_duration:
                too_long.append(item)
                continue
            samples = math.ceil(seconds * self.sample_rate)
            available = math.ceil(self.features.frames(samples) / self.hparams.time_reduction)
            needed = ctc_frames_needed([index.get(c, -1) for c in item.text]) if need_text else 0
            if needed > available:
                bad.bad(
                    f"{where}: transcript of {len(item.text)} characters is too long for {seconds:.2f} s of audio "
                    f"({available} frames after {self.hparams.time_reduction}x subsampling, CTC needs {needed})"
                )
                continue
            item.duration = seconds
            kept.append(item)
        if too_long:
            log.warning(
                "dropped %d of %d %s longer than max_duration=%ss (first: %s)",
                len(too_long), len(items), what, self.hparams.max_duration, too_long[0].file,
            )  # fmt: skip
        bad.report(len(items))
        if not kept:
            raise DataError(f"no usable {what} left (all were too long for max_duration or bad)")
        return kept

    def _loader(self, split: str, train: bool) -> DataLoader:
        items = self.splits.get(split)
        if items is None:
            raise DataError(f"setup() has not prepared the {split} split")
        hp = self.hparams
        features = self.features if hp.features_on == "datamodule" else None
        gigabytes = sum(i.duration for i in items) * self.sample_rate * 4 / 1e9
        cache = split != "predict" and gigabytes <= hp.cache_audio_gb
        dataset = SpeechDataset(items, self.sample_rate, features, train and hp.spec_augment, cache)
        sampler = LengthGroupedSampler([i.duration for i in items], hp.batch_size, train, hp.seed)
        vocab = list(self.spec.vocab) if split != "predict" else None
        return DataLoader(
            dataset, batch_size=hp.batch_size, sampler=sampler, num_workers=hp.num_workers,
            collate_fn=Collate(vocab), persistent_workers=hp.num_workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", train=False)
