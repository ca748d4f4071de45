"""The private Lightning names this project relies on still exist; all of them are used in checkpoints.py.

If this fails after upgrading Lightning, a name moved: find what replaced it, update checkpoints.py, and rerun
the SLURM tests of the template repository.
"""

from __future__ import annotations

from lightning.pytorch import Trainer


def test_trainer_still_tells_which_hpc_checkpoint_it_resumes() -> None:
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    connector = getattr(trainer, "_checkpoint_connector", None)
    assert connector is not None and hasattr(type(connector), "_hpc_resume_path"), (
        "Lightning no longer has Trainer._checkpoint_connector._hpc_resume_path, which "
        "checkpoints.own_hpc_checkpoint reads to refuse another SLURM job's preemption checkpoint"
    )
