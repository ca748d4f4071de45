"""Finding, reading, writing and guarding checkpoints.

* ``resolve`` turns what a user passes as ``--ckpt_path`` (``best``, ``last``, a run id, a file, ``runs:/<run id>``,
  ``models:/<name>/<version>``) into a checkpoint file, and refuses one that is truncated or holds code: every
  checkpoint is read with ``torch.load(weights_only=True)`` first, so nothing from a file or the tracking store
  runs code. A run's checkpoint artifact is what ``runs:/`` and ``models:/`` mean (``checkpoint_download``); a
  pickled MLflow model is never loaded.
* ``AtomicCheckpointIO`` writes a checkpoint beside its final name, syncs it to disk and renames it, so that a
  process killed while saving leaves the previous ``last.ckpt`` whole.
* Under SLURM each job keeps its preemption checkpoints in a folder of its own (``job_root``).

This is the one module of the project that uses Lightning's private names, each commented where it is used with
the public API that is missing; ``tests/test_lightning_internals.py`` fails with a clear message if an upgrade of
Lightning removes one. Today there is one: ``Trainer._checkpoint_connector._hpc_resume_path``.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .errors import first_line

RUNS_DIR = "runs"
HPC_CHECKPOINT = re.compile(r"hpc_ckpt_(\d+)\.ckpt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be found or read; reported as one ERROR line."""


def check_readable(path: str | Path) -> Path:
    """``path`` if it is a whole checkpoint of plain tensors and values (no code to unpickle), else a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass --ckpt_path best, last or a .ckpt file")
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # truncated, not a checkpoint, or pickled objects that would run code
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint ({first_line(error)[:200]}). It may be truncated (a training "
            "killed while saving it) or not come from this project: pass another one, e.g. --ckpt_path last"
        ) from None
    return path


def entry(path: str | Path, key: str) -> Any:
    """One top-level entry of a checkpoint (memory-mapped: the weights are not read)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(key)


def run_id(path: str | Path) -> str | None:
    """The MLflow run a checkpoint belongs to (``TrackedRun`` writes it into every checkpoint)."""
    return (entry(path, "mlflow") or {}).get("run_id")


def check_task(path: Path, task: str) -> Path:
    """``path`` if its model is ``task``'s: Lightning would otherwise load another task's model and hand it this
    task's data, which fails deep inside. Only the registry's model classes are accepted, by their exact class
    path, and nothing the checkpoint names is imported: the model is built from the config's class."""
    from .tasks import PACKAGE, TASKS

    hparams = entry(path, "hyper_parameters") or {}
    saved = hparams.get("_class_path") if isinstance(hparams, dict) else None
    if not isinstance(saved, str):
        return path  # written by a plain Trainer: the config names the model, and its spec is checked when connected
    found = next((t for t in TASKS.values() if saved == f"{PACKAGE}.{t.model}"), None)
    if found is None:
        raise CheckpointError(
            f"{str(path)!r} holds a {saved[:200]} model, which no task of this project has ("
            f"{', '.join(f'{PACKAGE}.{t.model}' for t in TASKS.values())}): pass a checkpoint this project trained"
        )
    if found.name != task:
        raise CheckpointError(
            f"{str(path)!r} is a checkpoint of task {found.name!r} ({found.model.rpartition('.')[2]}), not of "
            f"{task!r}: pass a {task} checkpoint, or use --config configs/{found.name}.yaml"
        )
    return path


def model_arguments(path: str | Path, model: type) -> dict[str, Any]:
    """The init arguments a checkpoint's model was made with (its spec included): those of ``model``'s own
    signature only, so a test or predict rebuilds the trained model whatever the config says.

    A trained model has a spec, and a model with a spec reads no weights file and downloads nothing (its weights
    are the checkpoint's): a checkpoint without one, whose ``pretrained``/``weights_path`` would be acted on, is
    refused."""
    saved = entry(path, "hyper_parameters") or {}
    if not isinstance(saved, dict) or not isinstance(saved.get("spec"), dict):
        raise CheckpointError(
            f"{str(path)!r} holds no trained model (its hyper-parameters have no spec of the data): pass a "
            "checkpoint of a training of this project, e.g. --ckpt_path last"
        )
    accepted = inspect.signature(model.__init__).parameters
    return {k: _listed(v) for k, v in saved.items() if k in accepted and k != "self"}


def _listed(value: Any) -> Any:
    """``value`` with tuples as lists, as a YAML config holds them: the run's config.yaml then reads back the same."""
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    return [_listed(v) for v in value] if isinstance(value, tuple | list) else value


def resolve(value: str, task: str, runs_dir: str | Path, uri: str) -> Path:
    """The checkpoint file that ``value`` names, checked with ``check_readable``.

    ``best``/``last``: the newest such checkpoint of ``task``; a run id: that run's ``last.ckpt``; ``runs:/<run id>``
    or ``models:/<name>/<version or alias>``: the run's checkpoint artifact in the tracking store; else a file.
    ``uri`` is the tracking store's. A checkpoint of another task is refused.
    """
    return check_task(_resolve(value, task, runs_dir, uri), task)


def _resolve(value: str, task: str, runs_dir: str | Path, uri: str) -> Path:
    runs = Path(runs_dir) / task
    if value in ("best", "last"):
        found = sorted(runs.glob(f"*/checkpoints/{value}.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise CheckpointError(
                f"no {value}.ckpt for task {task!r} under {runs.resolve()}/. Train first (make train TASK={task}) or "
                "pass a checkpoint file: --ckpt_path path/to/file.ckpt"
            )
        return check_readable(found[-1])
    if value.startswith(("runs:/", "models:/")):
        from .checkpoint_download import from_store  # MLflow's client, only for a checkpoint in the store

        return check_readable(from_store(value, uri, Path(runs_dir) / "downloaded"))
    if not Path(value).exists() and re.fullmatch(r"[0-9a-f]{32}", value):  # an MLflow run id
        found = runs / value / "checkpoints" / "last.ckpt"
        if not found.is_file():
            known = sorted(p.parent.parent.name for p in runs.glob("*/checkpoints/last.ckpt"))
            raise CheckpointError(
                f"no last.ckpt of run {value} under {runs}/; runs with one: {', '.join(known) or 'none'}"
            )
        return check_readable(found)
    return check_readable(value)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves a checkpoint to a temporary file in its own folder, syncs it, then renames it over the old one.

    A rename within a folder is atomic, so a process killed at any moment of a save leaves either the previous
    checkpoint or the new one whole. Lightning's default writes through a temporary file in ``$TMPDIR``, which on a
    cluster is often another file system: the final move is then a copy, and a kill during it truncates the file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a power cut
        finally:
            os.close(folder)


def untracked_checkpoints(trainer: Trainer, root: str | Path, task: str, resumed: str | None = None) -> None:
    """Give a training without a logger (``--trainer.logger false``) a checkpoint folder of its own, as tracked
    trainings have: ``<runs>/<task>/untracked-<date>-<time>-<pid>/checkpoints``, where ``--ckpt_path best|last``
    finds it. Lightning would otherwise put every task's checkpoints in one ``<runs>/checkpoints/``, numbered
    ``-v1``, ``-v2``. A resumed untracked training continues in the folder of its checkpoint.
    """
    name = f"untracked-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder = Path(root) / task / name / "checkpoints"
    for n in range(2, 1000):  # a second training of this process in the same second
        if not folder.parent.exists():
            break
        folder = Path(root) / task / f"{name}-{n}" / "checkpoints"
    parts = Path(resumed).parts if resumed else ()
    if len(parts) >= 3 and parts[-2] == "checkpoints" and parts[-3].startswith("untracked-"):
        folder = Path(resumed).parent
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "dirpath", None) is None:  # a dirpath the user set stays; rank 0's is broadcast
            callback.dirpath = str(folder)


def job_root(root: str | Path) -> Path:
    """Where a training keeps what is not a run's (preemption checkpoints): its SLURM job's own folder, or ``root``.

    Lightning resumes from the newest ``hpc_ckpt_<n>.ckpt`` of the trainer's root folder; a folder per job means
    a requeued job finds its own, and two jobs in one project never take or delete each other's.
    """
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job and SLURMEnvironment.detect():
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return Path(root) / "slurm" / (f"{job}_{task}" if task else job)
    return Path(root)


def lightning_hpc_resume_path(trainer: Trainer) -> str | None:
    """The ``hpc_ckpt_<n>.ckpt`` Lightning picks to resume from under SLURM, or None.

    Private: Lightning picks it by its own rules, and no public API tells which; reading its choice keeps
    ``own_hpc_checkpoint`` and Lightning in agreement. ``tests/test_lightning_internals.py`` calls this on a fresh
    Trainer, so an upgrade of Lightning that moves the name fails there, by name, rather than in a SLURM job.
    """
    return trainer._checkpoint_connector._hpc_resume_path


def own_hpc_checkpoint(trainer: Trainer) -> str | None:
    """The ``hpc_ckpt_*.ckpt`` that Lightning will resume from when fit has no ``ckpt_path`` under SLURM.

    It is in this job's folder (``job_root``); one that another job wrote (copied there by hand, say) is refused
    with a message rather than continued.
    """
    if not SLURMEnvironment.detect():
        return None
    path = lightning_hpc_resume_path(trainer)
    if path is None:
        return None
    check_readable(path)
    job = os.environ.get("SLURM_JOB_ID")
    owner = entry(path, "slurm_job_id")
    if owner != job:
        raise CheckpointError(
            f"{path} is a preemption checkpoint of SLURM job {owner or '(unknown)'}, not of this job ({job}), and "
            f"Lightning would resume from it. To continue that training pass --ckpt_path {path}; to start a new "
            "one, move or delete the file."
        )
    return path


class PreemptionCheckpoints(Callback):
    """What a stopped or requeued job needs to go on: a checkpoint saved when SIGTERM stops a training (a cancelled
    or requeued job, a `kill`): ``last.ckpt``, so that ``make resume`` loses little work, and under SLURM a
    preemption checkpoint in the job's folder, so that the requeued job continues by itself; and the SLURM job
    written into every checkpoint, so that a job resumes only its own (``own_hpc_checkpoint``)."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if "SLURM_JOB_ID" in os.environ:
            checkpoint["slurm_job_id"] = os.environ["SLURM_JOB_ID"]

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        callback = trainer.checkpoint_callback
        if not isinstance(exception, SIGTERMException) or callback is None or not callback.dirpath:
            return
        path = Path(callback.dirpath) / "last.ckpt"
        trainer.save_checkpoint(path)
        rank_zero_info(f"Saved {path} before stopping; `make resume` continues")
        if SLURMEnvironment.detect():
            root = Path(trainer.default_root_dir)
            numbers = [int(m.group(1)) for p in root.glob("hpc_ckpt_*.ckpt") if (m := HPC_CHECKPOINT.fullmatch(p.name))]
            trainer.save_checkpoint(root / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt")
