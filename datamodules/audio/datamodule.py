"""The speech DataModule: utterances split by speaker, checked up front, as length-grouped padded batches."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torch.utils.data import DataLoader

from ..common import (
    BadInputPolicy,
    DataError,
    SkipLog,
    SpecDataModule,
    check_fractions,
    check_non_negative,
    check_policy,
    check_positive,
    data_file_in,
    existing_path,
    list_inputs,
    split_by_group,
)
from ..prepared import open_prepared, split_loader
from ..workers import loader_settings, loader_workers
from .checks import check_utterances
from .dataset import Collate, LengthGroupedSampler, PreparedAudio, SpeechDataset, SpeechRecord
from .decode import AUDIO_SUFFIXES, UNDECODABLE_SUFFIXES
from .features import FeaturePipeline
from .files import MANIFESTS, READERS, SAMPLE_HINT, SPEAKER_FIELDS, Utterance, detect_format
from .text import BLANK, normalize_text

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
    common_word: str = ""  # set once the training split is known (setup("fit"))

    def __post_init__(self) -> None:  # a checkpoint or a config may hold a list
        object.__setattr__(self, "vocab", tuple(self.vocab))


class SpeechDataModule(SpecDataModule):
    """Speech + transcripts -> padded, length-grouped batches, split by speaker.

    Args:
        path: a LibriSpeech-style folder, a JSONL manifest (NeMo) or a CSV/TSV (``path``, ``transcript``/``sentence``).
        format: ``auto`` detects it from ``path``.
        sample_rate, n_mels: audio is resampled to ``sample_rate`` and turned into ``n_mels`` log-mel bands.
        features_on: ``datamodule`` computes features in the loader workers; ``model`` yields waveforms and lets
            the model compute them on its device (a GPU does it much faster); ``auto``: ``model`` where the
            training runs on a GPU (or another accelerator) or the model reads waveforms (wav2vec 2.0 / HuBERT),
            ``datamodule`` on a CPU.
        max_duration: longer training utterances (seconds, read from the file header) are dropped and listed;
            longer files to transcribe are refused by name (or skipped and listed with ``on_bad_input: skip``).
        split_by: ``speaker`` keeps each speaker's utterances in one split (validation on unheard voices);
            ``utterance`` splits one speaker's recordings.
        time_reduction: the model's frame subsampling, to reject transcripts too long for CTC.
        check_audio: decode every file in ``setup`` so bad audio (truncated, NaN samples) fails there, not inside
            a worker.
        cache_audio_gb: keep decoded, resampled audio in memory after the first epoch when a split fits in this.
        predict_path: an audio file or a folder of them to transcribe.
        prepared: a folder or object-store URI (``s3://...``) written by ``make prepare-data``: train, validate
            and test on its decoded, resampled audio, streamed, instead of reading ``path``.
        num_workers: loader processes; ``auto``: the cores per device minus one.
        on_bad_input: ``error`` stops at the first bad entry; ``skip`` drops it, and the log and the run's
            ``skipped_inputs.txt`` list every one.
    """

    def __init__(
        self,
        path: str = "data/sample/transcription",
        format: Literal["auto", "librispeech", "jsonl", "csv"] = "auto",
        batch_size: int = 16,
        num_workers: int | Literal["auto"] = 0,
        sample_rate: int = 16000,
        n_mels: int = 80,
        features_on: Literal["auto", "datamodule", "model"] = "auto",
        spec_augment: bool = True,
        max_duration: float = 30.0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_by: Literal["speaker", "utterance"] = "speaker",
        time_reduction: int = 4,
        check_audio: bool = True,
        cache_audio_gb: float = 2.0,
        predict_path: str | None = None,
        on_bad_input: BadInputPolicy = "error",
        seed: int = 0,
        prepared: str | None = None,
    ) -> None:
        super().__init__()
        check_positive(
            batch_size=batch_size,
            sample_rate=sample_rate,
            n_mels=n_mels,
            max_duration=max_duration,
            time_reduction=time_reduction,
        )
        loader_workers(num_workers)  # "auto", or a number of processes the machine can hold
        check_non_negative(cache_audio_gb=cache_audio_gb)
        check_fractions(val_fraction, test_fraction)
        check_policy(on_bad_input)
        self.save_hyperparameters()
        self.spec: SpeechSpec | None = None
        self.features = FeaturePipeline(sample_rate, n_mels)
        self.splits: dict[str, list[Utterance]] = {}
        self._prepared: dict[str, Any] | None = None  # the manifest of data.prepared

    def use_spec(self, spec: SpeechSpec) -> None:
        """Follow a trained model (test, predict): its characters, sample rate and feature settings; audio is
        resampled to the model's rate whatever data.sample_rate says, and the log says so."""
        ours = {"sample_rate": self.hparams.sample_rate, "n_mels": self.hparams.n_mels}
        differ = [f"{k} {v} -> {spec.features.get(k)}" for k, v in ours.items() if v != spec.features.get(k)]
        if differ:
            log.warning("data.%s: the data follows the trained model (its checkpoint)", ", data.".join(differ))
        super().use_spec(spec)
        self.features = FeaturePipeline(**spec.features)

    @property
    def sample_rate(self) -> int:
        return self.features.settings["sample_rate"]

    def read_predict(self) -> None:
        """The audio files of ``predict_path``, each checked."""
        self.splits["predict"] = self._checked(self._predict_items(), "audio files", predicting=True)

    def read_splits(self) -> None:
        """Read and check the utterances, split them by speaker, make the character set."""
        hp = self.hparams
        if hp.prepared:  # decoded and split by `make prepare-data`; its spec, unless a trained model's is in use
            self._prepared = open_prepared(self, hp.prepared)
            self.spec = self.spec or SpeechSpec(**self._prepared["spec"])
            return
        path = existing_path(hp.path, "data.path", SAMPLE_HINT)
        if path.is_dir() and hp.format == "auto" and next(path.rglob("*.trans.txt"), None) is None:
            path = data_file_in(path, MANIFESTS, "a LibriSpeech-style folder (*.trans.txt)")  # manifest.jsonl
        fmt = detect_format(path, hp.format)
        if path.is_dir() != (fmt == "librispeech"):
            raise DataError(f"data.path {str(path)!r}: format {fmt} needs a {'folder' if path.is_dir() else 'file'}")
        bad = SkipLog(hp.on_bad_input, "utterances")
        items = READERS[fmt](path, bad)
        if not items and not bad.reasons:
            raise DataError(f"{path} has no utterances")
        self.skipped += bad.reasons
        bad.report(len(items) + len(bad.reasons))
        for item in items:
            item.text = normalize_text(item.text)
        new_spec = self.spec is None
        if new_spec:
            vocab = (BLANK, *sorted({c for item in items for c in item.text}))
            self.spec = SpeechSpec(vocab, dict(self.features.settings))
        unknown = sorted({c for item in items for c in item.text} - set(self.spec.vocab))
        if unknown:  # a trained model's alphabet: it cannot write these, so they count as errors
            log.warning("%s: characters the model never saw in training: %s", path, " ".join(map(repr, unknown[:20])))
        items = self._checked(items, "utterances", predicting=False)
        groups = self._groups(items, path)
        parts = split_by_group(groups, self._fractions(), hp.seed)
        splits = {name: [items[i] for i in part] for name, part in zip(("train", "val", "test"), parts, strict=True)}
        empty = [name for name, part in splits.items() if not part and (name != "test" or hp.test_fraction > 0)]
        if empty:
            speakers = len(set(groups))
            fix = (
                f"{speakers} speaker(s) cannot fill train, val and test splits by speaker: add recordings of more "
                "speakers, or set data.split_by: utterance (validation then hears voices it was trained on)"
                if hp.split_by == "speaker"
                else f"{len(items)} utterance(s) are too few: add recordings or change the fractions"
            )
            raise DataError(f"{path}: the {'/'.join(empty)} split would be empty; {fix}")
        self.splits.update(splits)
        if new_spec:  # the training speakers' most common word: the baseline sees no test data
            common = Counter(w for i in self.splits["train"] for w in i.text.split()).most_common(1)[0][0]
            self.spec = replace(self.spec, common_word=common)
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        speakers = {i.speaker for i in items if i.speaker is not None}
        log.info("%s: %s utterances%s", path, sizes, f" from {len(speakers)} speakers" if speakers else "")

    def _groups(self, items: list[Utterance], path: object) -> list[str]:
        """What the split keeps together: each speaker's utterances, or each file (``split_by: utterance``, or
        files whose speaker the data does not name, said once)."""
        if self.hparams.split_by == "utterance":
            return [str(i.file) for i in items]
        unknown = sum(i.speaker is None for i in items)
        if unknown == len(items):
            log.warning(
                "%s names no speakers (no %s field): the split is by utterance, so validation and test may hear "
                "voices of training; add a speaker field to hold speakers out, or set data.split_by: utterance to "
                "say so", path, "/".join(SPEAKER_FIELDS),
            )  # fmt: skip
        elif unknown:
            log.warning("%s: %d of %d utterances name no speaker; each of those is split as its own speaker", path,
                        unknown, len(items))  # fmt: skip
        return [i.speaker if i.speaker is not None else str(i.file) for i in items]

    def _fractions(self) -> list[float]:
        val, test = self.hparams.val_fraction, self.hparams.test_fraction
        return [1 - val - test, val, test]

    def _predict_items(self) -> list[Utterance]:
        if not self.hparams.predict_path:
            raise DataError("set data.predict_path (make predict INPUT=...) to an audio file or a folder of them")
        path = existing_path(self.hparams.predict_path, "data.predict_path")
        files = list_inputs(path, AUDIO_SUFFIXES | UNDECODABLE_SUFFIXES, "audio files")
        return [Utterance(f, "", f.stem, str(f)) for f in files]

    def _checked(self, items: list[Utterance], what: str, predicting: bool) -> list[Utterance]:
        """Drop or reject bad items here, in the main process, so workers never meet them (``checks.py``)."""
        vocab = self.spec.vocab if self.spec else ()
        kept, skipped = check_utterances(items, what, predicting, self.hparams, self.sample_rate, self.features, vocab)
        self.skipped += skipped
        return kept

    # ---- prepared data (datamodules/prepared.py) ---------------------------------------------------------------------
    def prepared_inputs(self) -> dict[str, list[Utterance]]:
        return {name: self.splits[name] for name in ("train", "val", "test")}

    def prepared_file(self, item: Utterance) -> str:
        return str(item.file)

    def waveforms(self) -> bool:
        """Whether batches carry waveforms for the model to turn into features on its device (``features_on``)."""
        if self.hparams.features_on != "auto":
            return self.hparams.features_on == "model"
        trainer = self.trainer
        if trainer is None:  # a loader outside a training (a benchmark, a notebook): the CPU's choice
            return False
        reads_waveforms = getattr(trainer.lightning_module, "reads_waveforms", False)
        return trainer.strategy.root_device.type != "cpu" or bool(reads_waveforms)

    def prepared_writer(self) -> PreparedAudio:
        return PreparedAudio(self.sample_rate)

    def prepared_settings(self) -> dict[str, Any]:
        """What shapes the prepared audio and the spec: a training with other values needs another preparation."""
        hp = self.hparams
        names = ("max_duration", "val_fraction", "test_fraction", "split_by", "time_reduction", "seed")
        return {"sample_rate": self.sample_rate, **{name: hp[name] for name in names}}

    def _item_settings(self, train: bool) -> tuple[FeaturePipeline | None, bool]:
        """What a loader's items get, from files or prepared: the loader's features (None: waveforms for the
        model), and whether SpecAugment applies (training, ``data.spec_augment``), wherever the features are made."""
        return None if self.waveforms() else self.features, train and self.hparams.spec_augment

    def _streamed(self, split: str, train: bool) -> Any:
        features, augment = self._item_settings(train)
        collate = Collate(list(self.spec.vocab), augment)  # SpecAugment on the model's side: it is told too
        return split_loader(self, self._prepared, split, SpeechRecord(features, augment), collate, train)

    def _loader(self, split: str, train: bool) -> DataLoader:
        if self._prepared is not None and split != "predict":
            return self._streamed(split, train)
        items = self.splits.get(split)
        if items is None:
            raise DataError(f"setup() has not prepared the {split} split")
        if not items:
            raise DataError(f"{self.hparams.path}: the {split} split is empty; set data.{split}_fraction > 0")
        hp = self.hparams
        features, augment = self._item_settings(train)
        gigabytes = sum(i.duration for i in items) * self.sample_rate * 4 / 1e9
        cache = split != "predict" and gigabytes <= hp.cache_audio_gb
        dataset = SpeechDataset(items, self.sample_rate, features, augment, cache)
        sampler = LengthGroupedSampler([i.duration for i in items], hp.batch_size, train, hp.seed)
        vocab = list(self.spec.vocab) if split != "predict" else None
        settings = loader_settings(hp.num_workers)
        return DataLoader(
            dataset, batch_size=hp.batch_size, sampler=sampler, collate_fn=Collate(vocab, augment), **settings
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", train=False)
