"""Utterances as tensors: audio or features per item, padded batches, batches of similar length."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler, default_collate, get_worker_info

from ..common import DataError
from .decode import load_audio
from .features import FeaturePipeline
from .files import Utterance


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
        return self.item(audio, item.text, str(item.file))

    def item(self, audio: torch.Tensor, text: str, file: str) -> dict[str, Any]:
        """One decoded, resampled utterance as the model's input: its audio, or its features."""
        out: dict[str, Any] = {"audio": audio, "text": text, "file": file}
        if self.features is not None:
            with torch.no_grad():
                feats, _ = self.features(audio[None], torch.tensor([audio.numel()]), augment=self.augment)
            out["features"] = feats[0]
        return out


class PreparedAudio:
    """``make prepare-data``: an utterance -> its record, the audio decoded once (mono, at the task's rate)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate

    def __call__(self, item: Utterance) -> dict[str, Any]:
        audio = load_audio(item.file, self.sample_rate)
        # text as JSON: LitData stores a string that names an existing file as that file's bytes
        return {"audio": audio.contiguous(), "meta": json.dumps({"file": str(item.file), "text": item.text})}


class SpeechRecord:
    """A prepared record -> the item ``SpeechDataset`` makes from the files (picklable for loader workers)."""

    def __init__(self, features: FeaturePipeline | None, augment: bool) -> None:
        self.dataset = SpeechDataset([], 0, features, augment, cache=False)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in SpeechDataset: per-utterance ops are tiny
        try:
            meta = json.loads(record["meta"])
            return self.dataset.item(record["audio"], meta["text"], meta["file"])
        finally:
            torch.set_num_threads(threads)


class Collate:
    """Pads features (or audio) and character targets; a class so workers can pickle it.

    Waveform batches say whether the model may apply SpecAugment to their features (``data.spec_augment`` in
    training): the model computes those features, so it is told what the loader would have done.
    """

    def __init__(self, vocab: list[str] | None, augment: bool = False) -> None:
        self.index = {c: i for i, c in enumerate(vocab or [])}
        self.augment = augment

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        key = "features" if "features" in rows[0] else "audio"
        seqs = [r[key] for r in rows]
        batch: dict[str, Any] = {
            key: pad_stack(seqs),
            "feature_lengths" if key == "features" else "audio_lengths": torch.tensor([len(s) for s in seqs]),
            "text": [r["text"] for r in rows],
            "file": [r["file"] for r in rows],
        }
        if key == "audio":
            batch["spec_augment"] = self.augment
        if self.index:
            ids = [torch.tensor([self.index[c] for c in r["text"] if c in self.index], dtype=torch.long) for r in rows]
            batch["targets"] = nn.utils.rnn.pad_sequence(ids, batch_first=True) if ids else torch.zeros(0, 0)
            batch["target_lengths"] = torch.tensor([len(i) for i in ids])
        return batch


def pad_stack(seqs: list[torch.Tensor]) -> torch.Tensor:
    """``pad_sequence(seqs, batch_first=True)``, stacked by torch's ``default_collate``: in a loader worker straight
    into shared memory, so the batch is not copied there again on its way out (only the shorter items are copied
    once more, to pad them), as torch's own collate does with images. Copied there on the way out (a second thread
    of each worker), a batch of 8 prepared 10 s clips cost the workers 40-43 ms of CPU; padded there, 36-38 ms,
    and 2 workers on 2 cores gave 1.9x one worker's clips/s instead of 1.7x (measured)."""
    longest = max(len(s) for s in seqs)
    return default_collate([s if len(s) == longest else pad_end(s, longest - len(s)) for s in seqs])


def pad_end(seq: torch.Tensor, steps: int) -> torch.Tensor:
    """``seq`` with ``steps`` zeros (rows of zeros) after its end."""
    return nn.functional.pad(seq, [0, 0] * (seq.dim() - 1) + [0, steps])


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
