"""A sweep's Optuna study: its journal file storage, its sampler and its pruner, as the space file names them.

The journal file (not SQLite) because a cluster's shared file system is where studies of SLURM arrays live; its
open-file lock, because a kill -9 can leave the lock behind.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

STALE_LOCK_S = 10  # the journal's lock is held for a write of a few lines: one older than this was left by kill -9


def open_storage(journal: str | Path) -> optuna.storages.JournalStorage:
    """The study's journal file storage, with Optuna's open-file lock (NFSv3 and later)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    lock = JournalFileOpenLock(str(journal), grace_period=STALE_LOCK_S)
    return optuna.storages.JournalStorage(JournalFileBackend(str(journal), lock_obj=lock))


def pruner_of(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    """An Optuna pruner from ``{"class": "MedianPruner", <its arguments>}``."""
    import optuna

    return getattr(optuna.pruners, spec["class"])(**{k: v for k, v in spec.items() if k != "class"})


def sampler_of(spec: dict[str, Any], worker: int) -> optuna.samplers.BaseSampler:
    """An Optuna sampler; a seed is offset per worker, or parallel workers would sample the same values."""
    import optuna

    kwargs = {k: v for k, v in spec.items() if k != "class"}
    if kwargs.get("seed") is not None:
        kwargs["seed"] += worker
    return getattr(optuna.samplers, spec["class"])(**kwargs)


def stale_lock_removed(journal: Path) -> bool:
    """Remove the journal's lock file when a killed process left it (optuna #5921: waiting on it forever)."""
    lock = Path(f"{journal}.lock")
    with contextlib.suppress(FileNotFoundError):
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink()
            return True
    return False
