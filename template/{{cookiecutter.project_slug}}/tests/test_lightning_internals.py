"""The private Lightning names this project relies on still exist; checkpoints.py is the one module that uses them.

If this fails after upgrading Lightning, a name moved: find what replaced it, update checkpoints.py, and rerun
the SLURM tests of the template repository.
"""

from __future__ import annotations

import pytest
from lightning.pytorch import Trainer

from {{ cookiecutter.package_name }}.checkpoints import lightning_hpc_resume_path


def test_trainer_still_tells_which_hpc_checkpoint_it_resumes(tmp_path) -> None:
    trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    try:
        path = lightning_hpc_resume_path(trainer)
    except AttributeError as error:
        pytest.fail(
            f"Lightning no longer tells which hpc_ckpt file it resumes from ({error}): "
            "checkpoints.lightning_hpc_resume_path reads it to refuse another SLURM job's preemption checkpoint"
        )
    assert path is None  # no hpc_ckpt_*.ckpt in a fresh folder
