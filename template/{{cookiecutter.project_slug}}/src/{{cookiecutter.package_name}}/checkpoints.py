"""Finding, reading and guarding checkpoints.

This is the one module of the project that uses Lightning's private names, each commented where it is used with
the public API that is missing; ``tests/test_lightning_internals.py`` fails with a clear message if an upgrade of
Lightning removes one. Today there is one: ``Trainer._checkpoint_connector._hpc_resume_path``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

RUNS_DIR = "runs"


def newest(task: str, kind: str, runs_dir: str | Path = RUNS_DIR) -> Path:
    """The most recent ``best.ckpt`` or ``last.ckpt`` written for ``task``."""
    found = sorted(Path(runs_dir).glob(f"{task}/*/checkpoints/{kind}.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(
            f"ERROR: no {kind}.ckpt for task {task!r} under {Path(runs_dir).resolve()}/{task}/. "
            f"Train first (make train TASK={task}) or pass a checkpoint file: --ckpt_path path/to/file.ckpt"
        )
    return found[-1]


def entry(path: str | Path, key: str) -> Any:
    """One top-level entry of a checkpoint (memory-mapped: the weights are not read)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(key)


def run_id(path: str | Path) -> str | None:
    """The MLflow run a checkpoint belongs to (``TrackedRun`` writes it into every checkpoint)."""
    return (entry(path, "mlflow") or {}).get("run_id")


def check_checkpoint(path: str | Path, task: str) -> None:
    """Refuse, by name, a checkpoint that is missing, is not a checkpoint, or holds a model of another task.

    Lightning would otherwise load another task's model and hand it this task's data, which fails deep inside.
    """
    from .tasks import TASKS, task_of

    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"ERROR: checkpoint {str(path)!r} does not exist; pass --ckpt_path best, last or a .ckpt file")
    try:
        hparams = entry(file, "hyper_parameters") or {}
    except Exception as error:  # not a zip archive, not torch's format, a truncated file: all "not a checkpoint"
        raise SystemExit(
            f"ERROR: {str(path)!r} is not a readable checkpoint ({type(error).__name__}); pass a .ckpt file written "
            "by training (runs/<task>/<run id>/checkpoints/)"
        ) from None
    saved = hparams.get("_class_path") if isinstance(hparams, dict) else None
    if not isinstance(saved, str):
        return  # written by a plain Trainer: the config names the model, and its spec is checked when connected
    found = next((t for t in TASKS.values() if saved.endswith(f".{t.model}")), None)
    if found is None:
        try:
            module, _, name = saved.rpartition(".")
            found = task_of(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError, LookupError, ValueError):
            raise SystemExit(
                f"ERROR: {str(path)!r} holds a {saved} model, which no task of this project has ({', '.join(TASKS)})"
            ) from None
    if found.name != task:
        raise SystemExit(
            f"ERROR: {str(path)!r} is a checkpoint of task {found.name!r} ({found.model.rpartition('.')[2]}), not of "
            f"{task!r}: pass a {task} checkpoint, or use --config configs/{found.name}.yaml"
        )


def from_model_uri(uri: str, out_dir: Path) -> Path:
    """Turn an MLflow model (``runs:/<id>/model``, ``models:/name/1``) into a checkpoint ``predict`` can use."""
    import lightning
    import mlflow.pytorch

    from .store import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    module = mlflow.pytorch.load_model(uri, map_location="cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (uri.replace(":/", "-").replace("/", "-") + ".ckpt")
    hparams = dict(module.hparams)
    hparams["_class_path"] = f"{type(module).__module__}.{type(module).__qualname__}"
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": hparams}
    checkpoint["pytorch-lightning_version"] = lightning.__version__
    torch.save(checkpoint, path)
    return path


def own_hpc_checkpoint(trainer: Trainer) -> str | None:
    """The ``hpc_ckpt_*.ckpt`` that Lightning will resume from when fit has no ``ckpt_path`` under SLURM.

    Lightning takes any such file in the root folder; one that another job wrote (a cancelled one, say) is
    refused with a message rather than continued.
    """
    if not SLURMEnvironment.detect():
        return None
    # Private: Lightning picks the hpc_ckpt_<n>.ckpt it resumes from by its own rules, and no public API tells
    # which; reading its choice keeps this guard and Lightning in agreement.
    path = trainer._checkpoint_connector._hpc_resume_path
    if path is None:
        return None
    job = os.environ.get("SLURM_JOB_ID")
    try:
        owner = entry(path, "slurm_job_id")
    except Exception:  # unreadable: not this job's either
        owner = None
    if owner is None or owner != job:
        raise SystemExit(
            f"ERROR: {path} is a preemption checkpoint of SLURM job {owner or '(unknown)'}, not of this job ({job}),"
            f" and Lightning would resume from it. To continue that training pass --ckpt_path {path}; to start a "
            "new one, move or delete the file."
        )
    return path


class CheckpointKeeper(Callback):
    """Marks checkpoints with their SLURM job (so a job tells its preemption checkpoints from other jobs'), and
    saves ``last.ckpt`` when SIGTERM stops a training, so that ``make resume`` loses little work."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if "SLURM_JOB_ID" in os.environ:
            checkpoint["slurm_job_id"] = os.environ["SLURM_JOB_ID"]

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        callback = trainer.checkpoint_callback
        if isinstance(exception, SIGTERMException) and callback is not None and callback.dirpath:
            path = Path(callback.dirpath) / "last.ckpt"
            trainer.save_checkpoint(path)
            rank_zero_info(f"Saved {path} before stopping; `make resume` continues")
