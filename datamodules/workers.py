"""Loader workers: how many, and how they hand batches to the training process.

Every DataLoader of the DataModules (from files and from prepared data) takes ``loader_settings``: the number of
workers (``auto``: the cores of this process's device, minus one), kept between epochs, batches pinned where a GPU
takes them, and each worker sending its batches by the name of their shared memory (``send_by_name``), small
tensors inside the message itself.
"""

from __future__ import annotations

import os
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch
from torch.multiprocessing.reductions import reduce_tensor

from .common import DataError


def check_workers(num_workers: int) -> None:
    """Loader processes: 0 (load in the training process) up to 4 per CPU; more only fork until the machine stalls."""
    most = 4 * (os.cpu_count() or 1)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or not 0 <= num_workers <= most:
        raise DataError(f"data.num_workers is {num_workers!r}; it must be a whole number from 0 to {most} (4 per CPU)")


def loader_workers(value: int | str) -> int:
    """``num_workers`` as a number: ``auto`` is the cores of this process's device (all usable cores divided among
    the GPUs of the node, or all of them without one) minus one for the training loop itself."""
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(0, cores // max(1, torch.cuda.device_count()) - 1)
    check_workers(value)
    return int(value)


def pin_memory() -> bool:
    """Page-locked batches where there is a GPU to copy them to (asynchronous copies); nothing to gain without."""
    return torch.cuda.is_available()


def loader_settings(num_workers: int | str) -> dict[str, Any]:
    """The DataLoader arguments every loader here shares (``DataLoader(dataset, **loader_settings(n), ...)``)."""
    workers = loader_workers(num_workers)
    return {
        "num_workers": workers,
        "persistent_workers": workers > 0,  # a worker's start (its imports, its first chunk) once, not every epoch
        "pin_memory": pin_memory(),
        "worker_init_fn": send_by_name if workers else None,
    }


def send_by_name(worker_id: int) -> None:
    """In a loader worker: send tensors to the training process by the name of their shared memory.

    By default torch hands each tensor of a batch over as a file descriptor, through a connection the training
    process opens to the worker for that one tensor (with an authentication handshake on both sides): three per
    captioning batch, about half of what the training process spent receiving prepared batches, and what held 2
    workers to ~1.5x one on 2 cores (~1.8x by name). By name, the training process maps the memory itself; torch's
    ``torch_shm_manager`` removes what a killed process leaves behind. Small tensors travel by value
    (``reduce_small_by_value``). Set in the worker only: the training process, its other children and DDP keep
    torch's default.
    """
    torch.multiprocessing.set_sharing_strategy("file_system")
    ForkingPickler.register(torch.Tensor, reduce_small_by_value)


SMALL_TENSOR_BYTES = 64 * 1024
# what numpy holds as torch does
BY_VALUE_DTYPES = {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
                   torch.float32, torch.float64}  # fmt: skip


def reduce_small_by_value(tensor: torch.Tensor) -> tuple[Any, tuple[Any, ...]]:
    """How a loader worker pickles a tensor: a small one (lengths, token ids, targets) by value, inside the message,
    the others in shared memory, by name.

    Each tensor in shared memory is a segment the worker creates and the training process maps: 0.2 ms of the
    training process's time per tensor, measured, whatever its size. A speech batch has four tensors, three of them
    a few bytes: by value, the training process spent 0.5-0.6 ms per batch receiving it instead of 0.7-1.0 ms
    (ready batches, nothing loaded), and 0.9-1.2 ms instead of 1.05-1.35 ms from prepared data.
    """
    if (
        type(tensor) is torch.Tensor
        and tensor.device.type == "cpu"
        and tensor.layout == torch.strided
        and not tensor.requires_grad
        and tensor.dtype in BY_VALUE_DTYPES
        and tensor.untyped_storage().nbytes() <= SMALL_TENSOR_BYTES
    ):
        try:
            return torch.from_numpy, (tensor.numpy(),)
        except (RuntimeError, TypeError):  # a tensor numpy cannot view (named, conjugated): as torch sends it
            pass
    return reduce_tensor(tensor)
