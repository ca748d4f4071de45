"""Captioned images as tensors: the image, one caption as word ids for teacher forcing, all captions for BLEU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from .decode import MAX_PIXELS, read_image
from .text import BOS, EOS, PAD, UNK, words


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
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.items, self.size, self.transform, self.cache = items, size, transform, cache
        self.max_pixels = max_pixels
        self.index = {w: i for i, w in enumerate(vocab)}
        self.max_tokens, self.random_caption = max_tokens, random_caption

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, path: Path) -> torch.Tensor:
        if self.cache is None:
            return read_image(path, self.size, self.max_pixels)
        if path not in self.cache:
            self.cache[path] = read_image(path, self.size, self.max_pixels)
        return self.cache[path]

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, captions = self.items[i]
        return self.item(self._image(path), captions, str(path))

    def item(self, image: torch.Tensor, captions: list[str], file: str) -> dict[str, Any]:
        """One image (uint8, resized) and its captions as the model's input."""
        if not captions:
            return {"image": self.transform(image), "file": file}
        # a different reference each epoch in training; the first one for a stable validation loss
        pick = int(torch.randint(len(captions), ())) if self.random_caption else 0
        ids = [self.index.get(w, UNK) for w in words(captions[pick])][: self.max_tokens - 2]
        return {
            "image": self.transform(image),
            "tokens": torch.tensor([BOS, *ids, EOS]),
            "captions": [" ".join(words(c)) for c in captions],
            "file": file,
        }


class PreparedImage:
    """``make prepare-data``: a captioned image -> its record, the image decoded once (upright, resized, uint8)."""

    def __init__(self, size: int, max_pixels: int) -> None:
        self.size, self.max_pixels = size, max_pixels

    def __call__(self, item: tuple[str, tuple[str, ...]]) -> dict[str, Any]:
        path, captions = item
        image = read_image(Path(path), self.size, self.max_pixels)
        # text as JSON: LitData stores a string that names an existing image file as that file's pixels
        return {"image": image.contiguous(), "meta": json.dumps({"file": path, "captions": list(captions)})}


class CaptionRecord:
    """A prepared record -> the item ``CaptionDataset`` makes from the files (picklable for loader workers)."""

    def __init__(self, vocab: list[str], transform: Any, max_tokens: int, random_caption: bool) -> None:
        self.dataset = CaptionDataset([], vocab, 0, transform, max_tokens, random_caption)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        meta = json.loads(record["meta"])
        return self.dataset.item(record["image"], meta["captions"], meta["file"])


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; pad token sequences with <pad> and keep their lengths."""
    # torch's collate stacks straight into shared memory in a loader worker: the batch is not copied there again
    out: dict[str, Any] = {"image": default_collate([b["image"] for b in batch]), "file": [b["file"] for b in batch]}
    if "tokens" in batch[0]:
        lengths = torch.tensor([len(b["tokens"]) for b in batch])
        tokens = torch.full((len(batch), int(lengths.max())), PAD, dtype=torch.long)
        for row, b in enumerate(batch):
            tokens[row, : len(b["tokens"])] = b["tokens"]
        out.update(tokens=tokens, token_lengths=lengths, captions=[b["captions"] for b in batch])
    return out
