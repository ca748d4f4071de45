"""Speech data: LibriSpeech folders, JSONL manifests or CSV/TSV files -> batches of log-mel features + characters."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import logging
import math
import re
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import soundfile as sf
import torch
import torchaudio
from lightning.pytorch import LightningDataModule
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .common import BadInputPolicy, DataError, SkipLog, existing_path, split_by_group

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus"}
BLANK = "<blank>"
SAMPLE_HINT = "Generate the sample with `make sample-data TASK=transcription`, or set data.path to your data."


def normalize_text(text: str) -> str:
    """Lower-case, letters/digits/apostrophes only, single spaces: what the character vocabulary is built on."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    return " ".join(re.sub(r"[^\w']|_", " ", text).split())


def ctc_frames_needed(ids: list[int]) -> int:
    """CTC needs one frame per label plus a blank between repeated labels."""
    return len(ids) + sum(a == b for a, b in itertools.pairwise(ids))


@dataclass
class Utterance:
    file: Path
    text: str  # normalized
    speaker: str
    source: str  # where it came from, for error messages: "manifest.jsonl line 3"
    duration: float = 0.0


class FeaturePipeline(nn.Module):
    """Log-mel features with per-utterance normalization and SpecAugment; runs in the DataModule or on the GPU."""

    def __init__(
        self, sample_rate: int = 16000, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160,
        freq_mask: int | None = None, time_mask: int = 10, n_masks: int = 2,
    ) -> None:  # fmt: skip
        super().__init__()
        freq_mask = n_mels // 8 if freq_mask is None else freq_mask  # up to 1/8 of the bands per mask
        self.settings = {"sample_rate": sample_rate, "n_mels": n_mels, "n_fft": n_fft, "hop_length": hop_length,
                         "freq_mask": freq_mask, "time_mask": time_mask, "n_masks": n_masks}  # fmt: skip
        self.hop_length, self.n_masks = hop_length, n_masks
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        self.freq_masking = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)
        self.time_masking = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True, p=0.2)

    def frames(self, samples: torch.Tensor | int) -> torch.Tensor | int:
        return samples // self.hop_length + 1  # centred STFT

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, augment: bool = False) -> tuple[torch.Tensor, ...]:
        """(B, S) waveforms + lengths -> (B, T, n_mels) features + frame lengths."""
        feats = torch.log(self.mel(audio.float()) + 1e-6)  # (B, n_mels, T)
        frames = self.frames(lengths)
        mask = (torch.arange(feats.shape[-1], device=feats.device)[None] < frames[:, None])[:, None]  # (B, 1, T)
        count = frames[:, None, None].clamp(min=1)
        mean = (feats * mask).sum(-1, keepdim=True) / count
        std = (((feats - mean) * mask) ** 2).sum(-1, keepdim=True).div(count).sqrt().clamp(min=1e-3)
        feats = ((feats - mean) / std) * mask  # speaker/channel normalization; padding stays 0
        if augment:
            for _ in range(self.n_masks):
                feats = self.time_masking(self.freq_masking(feats.unsqueeze(1))).squeeze(1)
        return feats.transpose(1, 2), frames


def wav_truncated(path: Path) -> bool:
    """libsndfile silently shortens a truncated WAV; compare the data chunk's declared size with the file."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        while chunk := f.read(8):
            if len(chunk) < 8:
                return True
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                return _remaining(f) < size
            f.seek(size + (size & 1), 1)
    return False


def _remaining(f: Any) -> int:
    here = f.tell()
    end = f.seek(0, 2)
    f.seek(here)
    return end - here


@functools.lru_cache(maxsize=16)
def resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """torchaudio's resample with its sinc kernel computed once per rate pair (computing it costs ~5x the filtering)."""
    return torchaudio.transforms.Resample(orig, new)


def load_audio(path: Path, sample_rate: int) -> torch.Tensor:
    """Decode with soundfile, mix to mono, resample: a float32 tensor (S,)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = torch.from_numpy(data).mean(dim=1)
    return resampler(rate, sample_rate)(audio) if rate != sample_rate else audio


class SpeechDataset(Dataset):
    """Utterances -> dicts with audio or features, already validated in setup."""

    def __init__(
        self, items: list[Utterance], sample_rate: int, features: FeaturePipeline | None, augment: bool, cache: bool
    ) -> None:
        self.items, self.sample_rate, self.features, self.augment = items, sample_rate, features, augment
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None  # decoded audio, kept across epochs

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if get_worker_info() is not None:  # workers already run one thread each
            return self._load(index)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # per-utterance ops are tiny: more threads only add synchronization
        try:
            return self._load(index)
        finally:
            torch.set_num_threads(threads)

    def _load(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        audio = self.cache.get(index) if self.cache is not None else None
        if audio is None:
            try:
                audio = load_audio(item.file, self.sample_rate)
            except (RuntimeError, ValueError, OSError) as error:  # the file changed after setup checked it
                raise DataError(f"{item.source}: cannot read audio {item.file} ({error})") from None
            if self.cache is not None:
                self.cache[index] = audio
        out: dict[str, Any] = {"audio": audio, "text": item.text, "file": str(item.file)}
        if self.features is not None:
            with torch.no_grad():
                feats, _ = self.features(audio[None], torch.tensor([audio.numel()]), augment=self.augment)
            out["features"] = feats[0]
        return out


class Collate:
    """Pads features (or audio) and character targets; a class so workers can pickle it."""

    def __init__(self, vocab: list[str] | None) -> None:
        self.index = {c: i for i, c in enumerate(vocab or [])}

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        key = "features" if "features" in rows[0] else "audio"
        seqs = [r[key] for r in rows]
        batch: dict[str, Any] = {
            key: nn.utils.rnn.pad_sequence(seqs, batch_first=True),
            "feature_lengths" if key == "features" else "audio_lengths": torch.tensor([len(s) for s in seqs]),
            "text": [r["text"] for r in rows],
            "file": [r["file"] for r in rows],
        }
        if self.index:
            ids = [torch.tensor([self.index[c] for c in r["text"] if c in self.index], dtype=torch.long) for r in rows]
            batch["targets"] = nn.utils.rnn.pad_sequence(ids, batch_first=True) if ids else torch.zeros(0, 0)
            batch["target_lengths"] = torch.tensor([len(i) for i in ids])
        return batch


class LengthGroupedSampler(Sampler[int]):
    """Yields indices so that each run of ``batch_size`` has similar lengths (little padding), batches shuffled.

    A plain index sampler: under DDP Lightning wraps it in a DistributedSamplerWrapper that deals consecutive
    indices to ranks, so each rank's batches stay length-grouped.
    """

    def __init__(self, lengths: list[float], batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.lengths, self.batch_size, self.shuffle, self.seed, self.epoch = lengths, batch_size, shuffle, seed, 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        noise = (torch.rand(len(self.lengths), generator=g) * 0.2 + 0.9).tolist() if self.shuffle else None
        order = sorted(range(len(self.lengths)), key=lambda i: self.lengths[i] * (noise[i] if noise else 1.0))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return (i for batch in batches for i in batch)


def read_librispeech(root: Path, bad: SkipLog) -> list[Utterance]:
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise DataError(f"no *.trans.txt files under {root}: not a LibriSpeech-style folder. {SAMPLE_HINT}")
    items = []
    for trans in transcripts:
        for number, line in enumerate(trans.read_text().splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{utt_id}.flac"
            if not audio.exists() and audio.with_suffix(".wav").exists():
                audio = audio.with_suffix(".wav")
            items.append(Utterance(audio, text, utt_id.split("-")[0], f"{trans} line {number}"))
    return items


def read_jsonl(path: Path, bad: SkipLog) -> list[Utterance]:
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            bad.bad(f"{where}: not valid JSON ({error.msg})")
            continue
        missing = [k for k in ("audio_filepath", "text") if not isinstance(entry, dict) or k not in entry]
        if missing:
            bad.bad(f"{where}: no field {missing[0]!r} (a manifest line needs 'audio_filepath' and 'text')")
            continue
        audio = path.parent / str(entry["audio_filepath"])
        speaker = entry.get("speaker", entry.get("speaker_id", audio.stem))
        items.append(Utterance(audio, str(entry["text"]), str(speaker), where))
    return items


def read_csv(path: Path, bad: SkipLog) -> list[Utterance]:
    with open(path, newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if path.suffix == ".tsv" or "\t" in sample.splitlines()[0] else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames or []
        text_col = next((c for c in ("transcript", "sentence", "text") if c in columns), None)
        if "path" not in columns or text_col is None:
            raise DataError(f"{path}: columns {columns} need 'path' and 'transcript' (or Common Voice's 'sentence')")
        items = []
        for number, row in enumerate(reader, 2):
            audio = path.parent / row["path"]
            if not audio.exists() and (path.parent / "clips" / row["path"]).exists():
                audio = path.parent / "clips" / row["path"]  # Common Voice keeps clips/ next to the TSV
            speaker = row.get("client_id") or row.get("speaker") or audio.stem
            items.append(Utterance(audio, row[text_col] or "", speaker, f"{path} row {number}"))
    return items


READERS = {"librispeech": read_librispeech, "jsonl": read_jsonl, "csv": read_csv}


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
        self.features = FeaturePipeline(sample_rate, n_mels)
        self.vocab: list[str] | None = None
        self.splits: dict[str, list[Utterance]] = {}

    @property
    def feature_settings(self) -> dict[str, Any]:
        return dict(self.features.settings)

    def use_settings(self, vocab: list[str] | None, features: dict[str, Any] | None) -> None:
        """Adopt a trained model's vocabulary and feature settings (test/predict from a checkpoint)."""
        if vocab:
            self.vocab = list(vocab)
        if features and features != self.features.settings:
            self.features = FeaturePipeline(**features)

    def detect_format(self, path: Path) -> str:
        if self.hparams.format != "auto":
            return self.hparams.format
        if path.is_dir():
            return "librispeech"
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return "jsonl"
        if suffix in (".csv", ".tsv"):
            return "csv"
        raise DataError(f"cannot tell the format of {path}: use a folder, .jsonl, .csv or .tsv, or set data.format")

    def setup(self, stage: str) -> None:
        if stage == "predict":
            self.splits["predict"] = self._checked(self._predict_items(), "audio files", need_text=False)
            return
        if self.splits.get("train") is not None:
            return
        path = existing_path(self.hparams.path, "data.path", SAMPLE_HINT)
        bad = SkipLog(self.hparams.on_bad_input, "utterances")
        items = READERS[self.detect_format(path)](path, bad)
        bad.report(len(items) + len(bad.reasons))
        for item in items:
            item.text = normalize_text(item.text)
        self.vocab = [BLANK] + sorted({c for item in items for c in item.text})
        items = self._checked(items, "utterances", need_text=True)
        val, test = self.hparams.val_fraction, self.hparams.test_fraction
        parts = split_by_group([i.speaker for i in items], [1 - val - test, val, test], self.hparams.seed)
        for name, indices in zip(("train", "val", "test"), parts, strict=True):
            self.splits[name] = [items[i] for i in indices]
        if not self.splits["train"]:
            raise DataError(f"{path}: no training utterances left after the split; add data or lower the fractions")
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        log.info("%s: %s utterances from %d speakers", path, sizes, len({i.speaker for i in items}))

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
        index = {c: i for i, c in enumerate(self.vocab or [])}
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
            samples = math.ceil(seconds * self.hparams.sample_rate)
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
        features = self.features if self.hparams.features_on == "datamodule" else None
        gigabytes = sum(i.duration for i in items) * self.hparams.sample_rate * 4 / 1e9
        cache = split != "predict" and gigabytes <= self.hparams.cache_audio_gb
        dataset = SpeechDataset(items, self.hparams.sample_rate, features, train and self.hparams.spec_augment, cache)
        sampler = LengthGroupedSampler([i.duration for i in items], self.hparams.batch_size, train, self.hparams.seed)
        workers = self.hparams.num_workers
        return DataLoader(
            dataset, batch_size=self.hparams.batch_size, sampler=sampler, num_workers=workers,
            collate_fn=Collate(self.vocab if split != "predict" else None), persistent_workers=workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", train=False)
