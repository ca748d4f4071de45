"""Prepared data: a task's data checked once, decoded once and written as LitData chunks, then streamed.

``make prepare-data`` reads the data as training does (the same checks and ``ERROR:`` lines), decodes every image
or recording once (orientation applied, resized or resampled to what the model sees) and writes each split with
LitData's ``optimize`` under ``<out>/<split>/``, with ``prepared.json`` beside them: the DataModule that made them,
the settings that shape the data, the spec, and a fingerprint of the source files. Training with ``data.prepared``
streams the chunks with LitData's ``StreamingDataset`` and ``StreamingDataLoader``: shards are dealt to DDP ranks
and loader workers, and the loader's position is saved in the checkpoint (Lightning keeps the state of a loader
that has ``state_dict``), so a resumed training continues its epoch where it stopped.

A DataModule takes part by offering ``prepared_inputs`` (the checked items of each split), ``prepared_writer``
(a picklable callable: item -> record), ``prepared_settings`` (what must match between preparation and training)
and ``prepared_item`` (a picklable callable: record -> the item its files give).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import DataError, SpecDataModule
from .workers import loader_settings, loader_workers

log = logging.getLogger(__name__)
MANIFEST = "prepared.json"
FORMAT = 2  # of the records; a change makes every older prepared folder "prepared differently"
SPLITS = ("train", "val", "test")
INSTALL = "LitData is not installed: pip install -e '.[prepared]'"
# LitData starts its workers with "spawn" by default: each a fresh Python that imports torch, Lightning and this
# project again (6-7 s of a core each, before its first item). Forked, they start with what this process imported,
# as torch's loader workers do on Linux (each with one torch thread, as theirs: `OneThread`); elsewhere (macOS: fork
# is unsafe with its system libraries) LitData decides.
START_METHOD = "fork" if sys.platform == "linux" else None


def _litdata() -> Any:
    try:
        import litdata
    except ImportError:
        raise DataError(INSTALL) from None
    return litdata


def is_remote(location: str) -> bool:
    return "://" in location


def fingerprint(data: SpecDataModule, inputs: dict[str, list[Any]]) -> str:
    """A hash of the source files (name, size, modification time) and of the items: unchanged data, same hash."""
    digest = hashlib.sha256()
    for split, items in inputs.items():
        for item in items:
            path = Path(str(data.prepared_file(item)))
            stat = path.stat()
            digest.update(f"{split}\0{item!r}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def manifest_of(data: SpecDataModule, inputs: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "data": type(data).__name__,
        "settings": data.prepared_settings(),
        "spec": asdict(data.spec),
        "counts": {split: len(items) for split, items in inputs.items()},
        "fingerprint": fingerprint(data, inputs),
    }


def prepare(data: SpecDataModule, out: str | Path, workers: int | None = None) -> bool:
    """Check ``data`` as training does and write it under ``out``; False when ``out`` already holds it unchanged."""
    if not hasattr(data, "prepared_inputs"):
        raise DataError(f"{type(data).__name__} keeps its data in memory (it is small): there is nothing to prepare")
    data.setup("fit")  # the same checks and errors as training
    inputs = data.prepared_inputs()
    manifest = json.loads(json.dumps(manifest_of(data, inputs)))  # as it reads back (tuples become lists)
    out = Path(out).expanduser().resolve()
    old = out / MANIFEST
    if old.is_file() and json.loads(old.read_text()) == manifest:
        log.info("%s already holds this data, prepared the same way: nothing to do", out)
        return False
    old.unlink(missing_ok=True)  # a preparation stopped half-way must not pass for a finished one
    litdata = _litdata()
    workers = workers or max(1, min(8, (os.cpu_count() or 2) - 1))
    writer = OneThread(data.prepared_writer())
    for split, items in inputs.items():
        if items:
            litdata.optimize(
                fn=writer,
                inputs=items,
                output_dir=str(out / split),
                chunk_bytes="64MB",
                num_workers=min(workers, len(items)),
                mode="overwrite",
                reorder_files=False,  # keep the items' order, so a prepared split reads like the files
                start_method=START_METHOD,
            )
    (out / f"{MANIFEST}.tmp").write_text(json.dumps(manifest, indent=1))
    (out / f"{MANIFEST}.tmp").replace(old)  # last: the folder counts as prepared only once every split is written
    log.info("prepared %s in %s", ", ".join(f"{k} {v}" for k, v in manifest["counts"].items()), out)
    return True


class OneThread:
    """A preparation's writer, run with one torch thread in each worker process, as torch's own loader workers are.

    A worker forked from a process whose torch ran OpenMP threads (the checks of ``setup``) would otherwise wait
    forever on the first parallel operation (GNU OpenMP's threads do not survive a fork); and one thread per worker
    is what a machine of ``workers`` cores has room for."""

    def __init__(self, writer: Any) -> None:
        self.writer, self.process = writer, os.getpid()

    def __call__(self, item: Any) -> Any:
        if self.process != os.getpid():
            import torch

            torch.set_num_threads(1)
            self.process = os.getpid()
        return self.writer(item)


def read_manifest(location: str) -> dict[str, Any]:
    """The ``prepared.json`` of a folder or an object-store URI (read through fsspec, as LitData does)."""
    where = f"{location.rstrip('/')}/{MANIFEST}"
    try:
        if is_remote(location):
            import fsspec

            with fsspec.open(where, "r") as file:
                return json.load(file)
        return json.loads(Path(where).expanduser().read_text())
    except FileNotFoundError:
        raise DataError(
            f"data.prepared {location!r} is not prepared data (no {MANIFEST} in it): run `make prepare-data "
            "TASK=<task> OUT=<folder>` and point data.prepared at that folder"
        ) from None
    except (OSError, ValueError, ImportError) as error:
        raise DataError(f"data.prepared {location!r}: cannot read {MANIFEST} ({error})") from None


def open_prepared(data: SpecDataModule, location: str) -> dict[str, Any]:
    """The manifest of ``location`` when it holds data of this kind, prepared with this config's settings and, when
    a trained model's spec is in use, with that spec; otherwise a DataError that names what differs."""
    manifest = read_manifest(location)
    kind = type(data).__name__
    if manifest.get("data") != kind or manifest.get("format") != FORMAT:
        raise DataError(
            f"data.prepared {location!r} holds data prepared by {manifest.get('data')} (format "
            f"{manifest.get('format')}), not by {kind} (format {FORMAT}): prepare this task's data again"
        )
    ours = data.prepared_settings()
    differ = [f"data.{k} is {v!r} here but {manifest['settings'].get(k)!r} there" for k, v in ours.items()
              if manifest["settings"].get(k) != v]  # fmt: skip
    if differ:
        raise DataError(
            f"data.prepared {location!r} was prepared with other settings ({'; '.join(differ)}): prepare again "
            "with these settings, or use the ones it was prepared with"
        )
    if data.spec is not None:
        saved, wanted = manifest["spec"], json.loads(json.dumps(asdict(data.spec)))  # tuples as JSON has them
        names = [k for k in wanted if saved.get(k) != wanted[k]]
        if names:
            raise DataError(
                f"data.prepared {location!r} is other data than the trained model's ({', '.join(names)} differ): "
                "use the data it was trained on, or train a new model"
            )
    return manifest


def split_loader(
    data: SpecDataModule, prepared: dict[str, Any], split: str, item: Any, collate: Any, train: bool
) -> Any:
    """The loader of one split of ``data.prepared`` with ``data``'s settings: a split the preparation lacks is
    refused by name, evaluation batches fit this job's ranks, and the training loader resumes where it stopped."""
    hp = data.hparams
    count = prepared["counts"].get(split, 0)
    if not count:
        raise DataError(f"data.prepared {hp.prepared!r} has no {split} split")
    ranks = data.trainer.world_size if data.trainer is not None else 1
    workers = loader_workers(hp.num_workers)
    loader = streaming_loader(
        hp.prepared, split, item, collate, hp.batch_size, workers, train, hp.seed, count=count, ranks=ranks
    )
    return data.resumable(loader) if train else loader


def streaming_loader(
    location: str, split: str, item: Any, collate: Any, batch_size: int, workers: int, shuffle: bool, seed: int,
    count: int, ranks: int,
) -> Any:  # fmt: skip
    """LitData's loader over one prepared split: shuffled shards dealt to ranks and workers, resumable.

    LitData deals whole batches to each rank's loader workers, so a validation split smaller than a batch per
    worker would leave a rank with nothing (Lightning then stops): evaluation batches shrink to fit instead.
    """
    if not shuffle:
        batch_size = max(1, min(batch_size, count // (max(1, ranks) * max(1, workers))))
    litdata = _litdata()
    dataset = litdata.StreamingDataset(
        f"{location.rstrip('/')}/{split}", shuffle=shuffle, seed=seed, transform=item, drop_last=shuffle
    )
    return litdata.StreamingDataLoader(dataset, batch_size=batch_size, collate_fn=collate, **loader_settings(workers))
