"""Captioned images: COCO / CSV / JSONL and image files -> padded batches of images and word ids."""

from .datamodule import CaptionSpec, ImageCaptionDataModule

__all__ = ["CaptionSpec", "ImageCaptionDataModule"]
