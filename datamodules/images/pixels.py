"""Images as the encoders see them: uint8 RGB in the loader, ImageNet-normalized floats on the device.

The loaders hand over uint8 (a quarter of the bytes of float32 to copy to the GPU); the DataModule's
``on_after_batch_transfer`` calls ``normalize`` where the batch has arrived.
"""

from __future__ import annotations

import torch

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (B, 3, H, W) as the encoders expect them: floats in [0, 1], ImageNet-normalized."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=images.device)[:, None, None]
    return (images.float().div_(255) - mean) / std
