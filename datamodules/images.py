"""Images with captions (COCO JSON, Flickr-style CSV, or a folder with metadata.jsonl) as batches for captioning."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from .common import BadInputPolicy, DataError, SkipLog, existing_path, split_by_group

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def words(caption: str) -> list[str]:
    """Lower-cased words without punctuation, so 'A dog.' and 'a dog' are the same caption."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", caption.lower())


def build_vocab(captions: list[str], min_freq: int = 1) -> list[str]:
    """Special tokens, then words seen at least ``min_freq`` times, most frequent first (ties alphabetical)."""
    counts = Counter(w for c in captions for w in words(c))
    kept = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
    return [*SPECIALS, *kept]


def read_image(path: Path, size: int) -> torch.Tensor:
    """Decode any image (grayscale, RGBA, palette, 16-bit) to a ``size`` x ``size`` uint8 RGB tensor."""
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as error:
        try:  # formats torchvision does not decode (BMP, TIFF) go through PIL
            with Image.open(path) as pil:
                image = v2.functional.pil_to_tensor(pil.convert("RGB"))
        except (OSError, ValueError):
            raise DataError(f"image {str(path)!r} cannot be decoded ({error}); replace or remove it") from None
    if image.ndim == 4:  # animated GIF: the first frame
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNGs
        image = (image.float() / 257).round().to(torch.uint8)
    if image.shape[-2:] == (size, size):
        return image
    return v2.functional.resize(image, [size, size], antialias=True)


def check_image(path: Path) -> str | None:
    """Why ``path`` is not a usable image (cheap: reads the header and checks the file), or None."""
    if not path.is_file():
        return "does not exist"
    try:
        with Image.open(path) as image:
            image.verify()
    except Image.DecompressionBombError:
        return None  # very large but valid; torchvision decodes it
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"is not a readable image ({type(error).__name__}: {error})"
    return None


class CaptionDataset(Dataset):
    """One item per image: the image, one caption for teacher forcing, and all captions as BLEU references.

    Images to caption (prediction) have no captions: their items hold the image and its file name only.
    """

    def __init__(
        self,
        items: list[tuple[Path, list[str]]],
        vocab: list[str],
        size: int,
        transform: Any,
        max_tokens: int,
        random_caption: bool,
        cache: dict[Path, torch.Tensor] | None = None,
    ) -> None:
        self.items, self.size, self.transform, self.cache = items, size, transform, cache
        self.index = {w: i for i, w in enumerate(vocab)}
        self.max_tokens, self.random_caption = max_tokens, random_caption

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, path: Path) -> torch.Tensor:
        if self.cache is None:
            return read_image(path, self.size)
        if path not in self.cache:
            self.cache[path] = read_image(path, self.size)
        return self.cache[path]

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, captions = self.items[i]
        if not captions:
            return {"image": self.transform(self._image(path)), "file": str(path)}
        # a different reference each epoch in training; the first one for a stable validation loss
        pick = int(torch.randint(len(captions), ())) if self.random_caption else 0
        ids = [self.index.get(w, UNK) for w in words(captions[pick])][: self.max_tokens - 2]
        return {
            "image": self.transform(self._image(path)),
            "tokens": torch.tensor([BOS, *ids, EOS]),
            "captions": [" ".join(words(c)) for c in captions],
            "file": str(path),
        }


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; pad token sequences with <pad> and keep their lengths."""
    out: dict[str, Any] = {"image": torch.stack([b["image"] for b in batch]), "file": [b["file"] for b in batch]}
    if "tokens" in batch[0]:
        lengths = torch.tensor([len(b["tokens"]) for b in batch])
        tokens = torch.full((len(batch), int(lengths.max())), PAD, dtype=torch.long)
        for row, b in enumerate(batch):
            tokens[row, : len(b["tokens"])] = b["tokens"]
        out.update(tokens=tokens, token_lengths=lengths, captions=[b["captions"] for b in batch])
    return out


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
        self.vocab: list[str] | None = None
        self.splits: dict[str, list[tuple[Path, list[str]]]] = {}
        self.predict_files: list[Path] = []
        self._cache: dict[Path, torch.Tensor] | None = None
        normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.eval_transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), normalize])
        self.train_transform = self.eval_transform
        if augment:  # shifts by up to 1/16 of the side; cheap (a crop), unlike an affine warp
            shift = v2.RandomCrop(image_size, padding=max(1, image_size // 16), padding_mode="edge")
            self.train_transform = v2.Compose([shift, *self.eval_transform.transforms])

    # ---- parsing -------------------------------------------------------------------------------------
    def _format(self, path: Path) -> str:
        if self.hparams.format != "auto":
            return self.hparams.format
        if path.is_dir() or path.name == "metadata.jsonl" or path.suffix == ".jsonl":
            return "jsonl"
        if path.suffix.lower() in (".json", ".csv"):
            return path.suffix.lower()[1:].replace("json", "coco")
        raise DataError(
            f"cannot tell the format of {str(path)!r}: use a .json (COCO), .csv or metadata.jsonl, "
            "or set data.format to coco, csv or jsonl"
        )

    def _root(self, path: Path, fmt: str) -> Path:
        if self.hparams.image_root:
            return existing_path(self.hparams.image_root, "image root", "Set data.image_root to the image folder.")
        base = path if path.is_dir() else path.parent
        return base / "images" if fmt != "jsonl" and (base / "images").is_dir() else base

    def _entries(self, path: Path, fmt: str, skips: SkipLog) -> list[tuple[str, str, str]]:
        """(image name, caption, where it came from) for every caption in the annotation file."""
        if fmt == "coco":
            try:
                data = json.loads(path.read_text())
                names = {im["id"]: im["file_name"] for im in data["images"]}
                annotations = data["annotations"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise DataError(
                    f"{path} is not a COCO captions file ({type(error).__name__}: {error}); it needs "
                    "'images' [{id, file_name}] and 'annotations' [{image_id, caption}]"
                ) from None
            out = []
            for i, ann in enumerate(annotations):
                where = f"{path.name} annotations[{i}]"
                if not isinstance(ann, dict):
                    skips.bad(f"{where}: not an object with image_id and caption")
                elif ann.get("image_id") not in names:
                    skips.bad(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
                else:
                    out.append((names[ann["image_id"]], str(ann.get("caption") or ""), where))
            return out
        if fmt == "csv":
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if not {"image", "caption"} <= set(reader.fieldnames or []):
                    raise DataError(f"{path} needs the columns 'image,caption'; it has {reader.fieldnames}")
                rows = enumerate(reader, start=2)  # row 1 is the header
                return [(r["image"] or "", r["caption"] or "", f"{path.name} row {i}") for i, r in rows]
        meta = path / "metadata.jsonl" if path.is_dir() else path
        existing_path(meta, "metadata file", "A jsonl folder needs metadata.jsonl with file_name and text.")
        out = []
        for i, line in enumerate(meta.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append((str(row["file_name"]), str(row.get("text") or ""), f"{meta.name} line {i + 1}"))
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                skips.bad(f"{meta.name} line {i + 1}: not a JSON object with file_name and text ({error})")
        return out

    def _read(self) -> list[tuple[Path, list[str]]]:
        path = existing_path(self.hparams.path, "caption data", "Run `make sample-data` or set data.path.")
        fmt = self._format(path)
        root = self._root(path, fmt)
        if not root.is_dir():
            raise DataError(f"image root {str(root)!r} does not exist; set data.image_root to the image folder")
        skips = SkipLog(self.hparams.on_bad_input, "captions")
        entries = self._entries(path, fmt, skips)
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

    def setup(self, stage: str | None = None) -> None:
        """Parse and validate the data (and the images to caption), split by image, build the vocabulary."""
        if stage == "predict":
            self._setup_predict()
            return
        if self.splits:
            return
        items = self._read()
        fractions = [
            1 - self.hparams.val_fraction - self.hparams.test_fraction,
            self.hparams.val_fraction,
            self.hparams.test_fraction,
        ]
        parts = split_by_group([str(p) for p, _ in items], fractions, seed=self.hparams.seed)
        named = zip(("train", "val", "test"), parts, strict=True)
        self.splits = {name: [items[i] for i in part] for name, part in named}
        for name in ("train", "val"):
            if not self.splits[name]:
                raise DataError(
                    f"{self.hparams.path}: the {name} split is empty ({len(items)} images); "
                    "add images or change val_fraction/test_fraction"
                )
        cache = self.hparams.cache_images
        if cache is None:
            cache = len(items) * 3 * self.hparams.image_size**2 <= 2**30
        self._cache: dict[Path, torch.Tensor] | None = {} if cache else None
        if self.vocab is None:
            self.vocab = build_vocab([c for _, caps in self.splits["train"] for c in caps], self.hparams.min_freq)

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

    def use_vocab(self, vocab: list[str]) -> None:
        """Encode captions with a trained model's vocabulary (fine-tuning or testing a checkpoint)."""
        self.vocab = list(vocab)

    # ---- loaders -------------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.splits:
            self.setup("fit")
        if not self.splits[split]:
            raise DataError(f"{self.hparams.path}: the {split} split is empty; set data.{split}_fraction > 0")
        dataset = CaptionDataset(
            self.splits[split],
            self.vocab,
            self.hparams.image_size,
            self.train_transform if train else self.eval_transform,
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
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        if not self.predict_files:
            self._setup_predict()
        items = [(file, []) for file in self.predict_files]
        dataset = CaptionDataset(items, [], self.hparams.image_size, self.eval_transform, 0, random_caption=False)
        return self._wrap(dataset, shuffle=False)
