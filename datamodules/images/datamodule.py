"""The captioning DataModule: captioned images split by image (no leaks), a vocabulary, padded batches."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from ..common import (
    BadInputPolicy,
    DataError,
    SkipLog,
    SpecDataModule,
    check_fractions,
    check_policy,
    check_positive,
    data_file_in,
    existing_path,
    list_inputs,
    split_by_group,
)
from ..prepared import open_prepared, split_loader
from ..workers import loader_settings, loader_workers
from .augment import RandomShift
from .dataset import CaptionDataset, CaptionRecord, PreparedImage, collate
from .decode import IMAGE_SUFFIXES, MAX_PIXELS, OTHER_IMAGE_SUFFIXES, check_image
from .files import CAPTION_FILES, READERS, detect_format, image_root, inside
from .pixels import normalize
from .text import build_vocab, most_common, words

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionSpec:
    """What a captioner needs to know of its data: the words it may say, the image size it sees, and the most
    common training caption, the trivial prediction its BLEU is compared with (``test/common_bleu4``).

    Made by ``setup("fit")`` from the training captions, saved in the checkpoint; ``use_spec`` makes test and
    predict data follow it (references encoded with the model's words, images resized as in training).
    """

    vocab: tuple[str, ...]
    image_size: int
    common_caption: str  # normalized words

    def __post_init__(self) -> None:  # a checkpoint or a config may hold a list
        object.__setattr__(self, "vocab", tuple(self.vocab))


class ImageCaptionDataModule(SpecDataModule):
    """Reads captioned images, splits them by image (no leaks), builds the vocabulary and makes padded batches.

    Args:
        path: COCO captions JSON, CSV with ``image,caption`` columns, or a folder / file ``metadata.jsonl``
            with ``file_name,text``.
        image_root: folder the image names are relative to (default: the folder of ``path`` or ``images/`` in
            it, whichever holds the named images; the log says which).
        format: ``auto`` detects it from ``path``.
        image_size: images are resized to a square of this size.
        min_freq: words seen fewer times in the training captions become ``<unk>``.
        max_caption_length: longest training caption in words (longer ones are cut).
        augment: small random shifts in training only; no flips, rescaling or colour changes, since
            captions mention left and right, sizes and colours.
        cache_images: keep decoded, resized images in memory (each loader worker keeps its own copy) instead
            of decoding them every epoch; ``None`` caches when all of them fit in 1 GB.
        max_image_pixels: larger images (width x height) are refused before they are decoded.
        check_images: decode every image in ``setup`` (in threads) so a damaged one is found there, not in a
            loader worker; ``false`` for very large sets, where a damaged image then stops training by name.
        allow_outside_root: follow image names that leave ``image_root`` (``../x.png``, absolute paths).
        predict_path: an image file or a folder of images to caption.
        prepared: a folder or object-store URI (``s3://...``) written by ``make prepare-data``: train, validate
            and test on its decoded, resized images, streamed, instead of reading ``path``.
        num_workers: loader processes; ``auto``: the cores per device minus one.
        on_bad_input: ``error`` stops at the first bad entry; ``skip`` drops it, and the log and the run's
            ``skipped_inputs.txt`` list every one.
    """

    def __init__(
        self,
        path: str = "data/sample/captioning/annotations.json",
        image_root: str | None = None,
        format: Literal["auto", "coco", "csv", "jsonl"] = "auto",
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int | Literal["auto"] = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        min_freq: int = 1,
        max_caption_length: int = 32,
        augment: bool = True,
        cache_images: bool | None = None,
        predict_path: str | None = None,
        max_image_pixels: int = MAX_PIXELS,
        check_images: bool = True,
        allow_outside_root: bool = False,
        on_bad_input: BadInputPolicy = "error",
        seed: int = 0,
        prepared: str | None = None,
    ) -> None:
        super().__init__()
        check_positive(
            image_size=image_size,
            batch_size=batch_size,
            min_freq=min_freq,
            max_image_pixels=max_image_pixels,
            max_caption_length=max_caption_length,
        )
        loader_workers(num_workers)  # "auto", or a number of processes the machine can hold
        check_fractions(val_fraction, test_fraction)
        check_policy(on_bad_input)
        self.save_hyperparameters()
        self.spec: CaptionSpec | None = None
        self.splits: dict[str, list[tuple[Path, list[str]]]] = {}
        self.predict_files: list[Path] = []
        self._cache: dict[Path, torch.Tensor] | None = None
        self._prepared: dict[str, Any] | None = None  # the manifest of data.prepared

    def use_spec(self, spec: CaptionSpec) -> None:
        """Follow a trained model (test, predict): encode captions with its words, resize images as it saw them."""
        if self.hparams.image_size != spec.image_size:
            log.warning(
                "data.image_size %d -> %d: the data follows the trained model (its checkpoint)",
                self.hparams.image_size, spec.image_size,
            )  # fmt: skip
        super().use_spec(spec)

    @property
    def image_size(self) -> int:
        return self.spec.image_size if self.spec is not None else self.hparams.image_size

    def _transform(self, train: bool) -> torch.nn.Module:
        """What the loader does to a uint8 image: only the augmentation (``pixels.py``: normalized on the device)."""
        if train and self.hparams.augment:  # shifts by up to 1/16 of the side: two copies, unlike a warp
            return RandomShift(max(1, self.image_size // 16))
        return torch.nn.Identity()

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """uint8 images -> normalized float on the device the batch was moved to (Lightning calls it there)."""
        image = batch.get("image")
        if image is not None and image.dtype == torch.uint8:
            batch["image"] = normalize(image)
        return batch

    def _read(self) -> list[tuple[Path, list[str]]]:
        """Every captioned image, checked: (image file, its captions), sorted by file name."""
        path = existing_path(self.hparams.path, "caption data", "Run `make sample-data` or set data.path.")
        if path.is_dir() and self.hparams.format == "auto" and not (path / "metadata.jsonl").exists():
            path = data_file_in(path, CAPTION_FILES, "a folder with metadata.jsonl")  # captions.json, captions.csv
        fmt = detect_format(path, self.hparams.format)
        if path.is_dir() and fmt != "jsonl":
            raise DataError(f"data.path {str(path)!r} is a folder; format {fmt} needs the captions file")
        skips = SkipLog(self.hparams.on_bad_input, "captions")
        entries = READERS[fmt](path, skips)
        root = image_root(path, fmt, self.hparams.image_root, (name for name, _, _ in entries))
        total = len(entries) + len(skips.reasons)
        problems = self._check_images(root, {name for name, _, _ in entries})
        by_image: dict[str, list[str]] = {}
        for name, caption, where in entries:
            if not name.strip():
                skips.bad(f"{where}: the image name is empty")
            elif not words(caption):
                skips.bad(f"{where}: caption for {name!r} is empty")
            elif problems[name]:
                skips.bad(f"{where}: image {str(root / name)!r} {problems[name]}")
            else:
                by_image.setdefault(name, []).append(caption)
        self.skipped += skips.reasons
        skips.report(total)
        if not by_image:
            raise DataError(f"{path} has no captioned images")
        return [(root / name, captions) for name, captions in sorted(by_image.items())]

    def _check_images(self, root: Path, names: set[str]) -> dict[str, str | None]:
        """Why each named image cannot be used (or None), decoding them in threads (PIL decodes without the GIL)."""
        hp = self.hparams
        outside = {n for n in names if not hp.allow_outside_root and not inside(root, n)}
        problems: dict[str, str | None] = {
            n: f"leaves the image folder {str(root)!r}; set data.allow_outside_root: true to allow it" for n in outside
        }
        rest = sorted(names - outside)
        if hp.check_images:
            with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
                found = pool.map(lambda n: check_image(root / n, hp.max_image_pixels), rest)
                problems.update(zip(rest, found, strict=True))
        else:  # a file that is missing costs nothing to find; damaged ones are named when a loader meets them
            problems.update({n: None if (root / n).is_file() else "does not exist" for n in rest})
        return problems

    def read_splits(self) -> None:
        """Parse and validate the captioned images, split them by image, build the vocabulary."""
        hp = self.hparams
        if hp.prepared:  # decoded and split by `make prepare-data`; its spec, unless a trained model's is in use
            self._prepared = open_prepared(self, hp.prepared)
            self.spec = self.spec or CaptionSpec(**self._prepared["spec"])
            return
        items = self._read()
        fractions = [1 - hp.val_fraction - hp.test_fraction, hp.val_fraction, hp.test_fraction]
        parts = split_by_group([str(p) for p, _ in items], fractions, seed=hp.seed)
        named = zip(("train", "val", "test"), parts, strict=True)
        splits = {name: [items[i] for i in part] for name, part in named}
        for name in ("train", "val", "test"):
            if not splits[name] and (name != "test" or hp.test_fraction > 0):
                raise DataError(
                    f"{hp.path}: the {name} split is empty ({len(items)} usable images"
                    + (f", {len(self.skipped)} entries skipped" if self.skipped else "")
                    + "); add images or change data.val_fraction / data.test_fraction"
                )
        self.splits = splits
        cache = hp.cache_images
        if cache is None:
            cache = len(items) * 3 * self.image_size**2 <= 2**30
        self._cache = {} if cache else None
        if self.spec is None:
            captions = [c for _, caps in self.splits["train"] for c in caps]
            self.spec = CaptionSpec(tuple(build_vocab(captions, hp.min_freq)), hp.image_size, most_common(captions))

    def read_predict(self) -> None:
        """The images of ``predict_path`` (a file or a folder), each checked."""
        hp = self.hparams
        if not hp.predict_path:
            raise DataError("nothing to predict: set data.predict_path (make predict INPUT=<image file or folder>)")
        files = list_inputs(
            existing_path(hp.predict_path, "predict input"), IMAGE_SUFFIXES | OTHER_IMAGE_SUFFIXES, "images"
        )
        skips = SkipLog(hp.on_bad_input, "images")
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            problems = list(pool.map(lambda f: check_image(f, hp.max_image_pixels), files))
        kept = []
        for file, problem in zip(files, problems, strict=True):
            if problem:
                skips.bad(f"image {str(file)!r} {problem}")
            else:
                kept.append(file)
        self.skipped += skips.reasons
        skips.report(len(files))
        self.predict_files = kept

    # ---- prepared data (datamodules/prepared.py) ---------------------------------------------------------------------
    def prepared_inputs(self) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
        return {name: [(str(p), tuple(c)) for p, c in items] for name, items in self.splits.items()}

    def prepared_file(self, item: tuple[str, tuple[str, ...]]) -> str:
        return item[0]

    def prepared_writer(self) -> PreparedImage:
        return PreparedImage(self.image_size, self.hparams.max_image_pixels)

    def prepared_settings(self) -> dict[str, Any]:
        """What shapes the prepared images and the spec: a training with other values needs another preparation."""
        hp = self.hparams
        names = ("min_freq", "val_fraction", "test_fraction", "seed")
        return {"image_size": self.image_size, **{name: hp[name] for name in names}}

    def _streamed(self, split: str, train: bool) -> Any:
        item = CaptionRecord(list(self.spec.vocab), self._transform(train), self.hparams.max_caption_length, train)
        return split_loader(self, self._prepared, split, item, collate, train)

    def _loader(self, split: str, train: bool) -> DataLoader:
        if self._prepared is not None:
            return self._streamed(split, train)
        if not self.splits[split]:
            raise DataError(f"{self.hparams.path}: the {split} split is empty; set data.{split}_fraction > 0")
        hp = self.hparams
        dataset = CaptionDataset(
            self.splits[split], list(self.spec.vocab), self.image_size, self._transform(train), hp.max_caption_length,
            random_caption=train, cache=self._cache, max_pixels=hp.max_image_pixels,
        )  # fmt: skip
        return self._wrap(dataset, shuffle=train)

    def _wrap(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        settings = loader_settings(self.hparams.num_workers)
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle, collate_fn=collate, **settings)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        items = [(file, []) for file in self.predict_files]
        dataset = CaptionDataset(
            items, [], self.image_size, self._transform(False), 0, False, max_pixels=self.hparams.max_image_pixels
        )
        return self._wrap(dataset, shuffle=False)
