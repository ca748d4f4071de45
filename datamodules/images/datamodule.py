"""The captioning DataModule: captioned images split by image (no leaks), a vocabulary, padded batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from ..common import BadInputPolicy, DataError, SkipLog, existing_path, split_by_group
from .dataset import CaptionDataset, collate
from .files import IMAGE_SUFFIXES, READERS, check_image, detect_format, image_root
from .text import build_vocab, most_common, words

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CaptionSpec:
    """What a captioner needs to know of its data: the words it may say, the image size it sees, and the most
    common training caption, the trivial prediction its BLEU is compared with (``test/common_bleu4``).

    Made by ``setup("fit")`` from the training captions, saved in the checkpoint; ``use_spec`` makes test and
    predict data follow it (references encoded with the model's words, images resized as in training).
    """

    vocab: tuple[str, ...]
    image_size: int
    common_caption: str = ""  # normalized words; empty in checkpoints made before it existed (no baseline then)

    def __post_init__(self) -> None:  # a checkpoint or a config may hold a list
        object.__setattr__(self, "vocab", tuple(self.vocab))


class ImageCaptionDataModule(LightningDataModule):
    """Reads captioned images, splits them by image (no leaks), builds the vocabulary and makes padded batches.

    Args:
        path: COCO captions JSON, CSV with ``image,caption`` columns, or a folder / file ``metadata.jsonl``
            with ``file_name,text``.
        image_root: folder the image names are relative to (default: ``images/`` next to ``path`` if present,
            else the folder of ``path``).
        format: ``auto`` detects it from ``path``.
        image_size: images are resized to a square of this size.
        min_freq: words seen fewer times in the training captions become ``<unk>``.
        max_caption_length: longest training caption in words (longer ones are cut).
        augment: small random shifts in training only; no flips, rescaling or colour changes, since
            captions mention left and right, sizes and colours.
        cache_images: keep decoded, resized images in memory (each loader worker keeps its own copy) instead
            of decoding them every epoch; ``None`` caches when all of them fit in 1 GB.
        predict_path: an image file or a folder of images to caption.
        on_bad_input: ``error`` stops at the first bad entry; ``skip`` drops it and logs how many were dropped.
    """

    def __init__(
        self,
        path: str = "data/sample/captioning/annotations.json",
        image_root: str | None = None,
        format: Literal["auto", "coco", "csv", "jsonl"] = "auto",
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        min_freq: int = 1,
        max_caption_length: int = 32,
        augment: bool = True,
        cache_images: bool | None = None,
        predict_path: str | None = None,
        on_bad_input: BadInputPolicy = "error",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec: CaptionSpec | None = None
        self.splits: dict[str, list[tuple[Path, list[str]]]] = {}
        self.predict_files: list[Path] = []
        self._cache: dict[Path, torch.Tensor] | None = None

    def use_spec(self, spec: CaptionSpec) -> None:
        """Follow a trained model (test, predict): encode captions with its words, resize images as it saw them."""
        self.spec = spec

    @property
    def image_size(self) -> int:
        return self.spec.image_size if self.spec is not None else self.hparams.image_size

    def _transform(self, train: bool) -> v2.Compose:
        steps = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        if train and self.hparams.augment:  # shifts by up to 1/16 of the side; cheap (a crop), unlike an affine warp
            size = self.image_size
            steps.insert(0, v2.RandomCrop(size, padding=max(1, size // 16), padding_mode="edge"))
        return v2.Compose(steps)

    def _read(self) -> list[tuple[Path, list[str]]]:
        """Every captioned image, checked: (image file, its captions), sorted by file name."""
        path = existing_path(self.hparams.path, "caption data", "Run `make sample-data` or set data.path.")
        fmt = detect_format(path, self.hparams.format)
        root = image_root(path, fmt, self.hparams.image_root)
        skips = SkipLog(self.hparams.on_bad_input, "captions")
        entries = READERS[fmt](path, skips)
        by_image: dict[str, list[str]] = {}
        checked: dict[str, str | None] = {}
        for name, caption, where in entries:
            if not words(caption):
                skips.bad(f"{where}: caption for {name!r} is empty")
                continue
            if name not in checked:
                checked[name] = check_image(root / name)
            if checked[name]:
                skips.bad(f"{where}: image {str(root / name)!r} {checked[name]}")
                continue
            by_image.setdefault(name, []).append(caption)
        skips.report(len(entries))
        if not by_image:
            raise DataError(f"{path} has no captioned images")
        return [(root / name, captions) for name, captions in sorted(by_image.items())]

    def setup(self, stage: str) -> None:
        """Parse and validate the data (or the images to caption), split by image, build the vocabulary."""
        if stage == "predict":
            self._setup_predict()
            return
        if self.splits:
            return
        items = self._read()
        hp = self.hparams
        fractions = [1 - hp.val_fraction - hp.test_fraction, hp.val_fraction, hp.test_fraction]
        parts = split_by_group([str(p) for p, _ in items], fractions, seed=hp.seed)
        named = zip(("train", "val", "test"), parts, strict=True)
        self.splits = {name: [items[i] for i in part] for name, part in named}
        for name in ("train", "val"):
            if not self.splits[name]:
                raise DataError(
                    f"{hp.path}: the {name} split is empty ({len(items)} images); "
                    "add images or change val_fraction/test_fraction"
                )
        cache = hp.cache_images
        if cache is None:
            cache = len(items) * 3 * self.image_size**2 <= 2**30
        self._cache = {} if cache else None
        if self.spec is None:
            captions = [c for _, caps in self.splits["train"] for c in caps]
            self.spec = CaptionSpec(tuple(build_vocab(captions, hp.min_freq)), hp.image_size, most_common(captions))

    def _setup_predict(self) -> None:
        if not self.hparams.predict_path:
            raise DataError("nothing to predict: set data.predict_path (make predict INPUT=<image file or folder>)")
        path = existing_path(self.hparams.predict_path, "predict input")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
        skips = SkipLog(self.hparams.on_bad_input, "images")
        self.predict_files = []
        for file in files:
            problem = check_image(file)
            if problem:
                skips.bad(f"image {str(file)!r} {problem}")
            else:
                self.predict_files.append(file)
        if not files:
            raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(path)!r}")
        skips.report(len(files))

    def _loader(self, split: str, train: bool) -> DataLoader:
        if not self.splits[split]:
            raise DataError(f"{self.hparams.path}: the {split} split is empty; set data.{split}_fraction > 0")
        dataset = CaptionDataset(
            self.splits[split],
            list(self.spec.vocab),
            self.image_size,
            self._transform(train),
            self.hparams.max_caption_length,
            random_caption=train,
            cache=self._cache,
        )
        return self._wrap(dataset, shuffle=train)

    def _wrap(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=collate,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        items = [(file, []) for file in self.predict_files]
        dataset = CaptionDataset(items, [], self.image_size, self._transform(False), 0, random_caption=False)
        return self._wrap(dataset, shuffle=False)
