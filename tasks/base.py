"""The task base: what every task module shares with the CLI, written down as methods instead of conventions.

A task is a ``LightningModule`` whose layers partly depend on its data (a vocabulary, window sizes, a sample rate).
The data's spec reaches it one way: ``configure(spec)`` for a new training (from the DataModule), or the ``spec``
hyper-parameter of a checkpoint (test, predict, resume), which ``__init__`` hands to ``configure`` as well.
A task implements ``build`` (those layers) and ``shared_step`` (the loss and the decoded outputs); the rest has
defaults here, so the CLI and the callbacks call them without asking whether they exist.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule

from ..examples import Examples


class TaskModule(LightningModule):
    """The base of every task's model: the spec handshake, one shared step, no-op optional hooks.

    Subclasses set ``spec_type`` (their DataModule's spec class), call ``self.save_hyperparameters(ignore=["spec"])``
    in ``__init__``, build what does not depend on the data, then call ``self.restore(spec)`` last.
    """

    spec_type: ClassVar[type]
    # the columns of predict_step's rows that hold what the model says: `make predict` warns when they are all
    # empty or all the same (a model that learned nothing writes empty transcripts without a word otherwise)
    prediction_keys: ClassVar[tuple[str, ...]] = ()
    spec: Any = None  # an instance of spec_type once configured

    def restore(self, spec: dict[str, Any] | None) -> None:
        """Configure from a checkpoint's saved spec (``None``: a new model, configured later from the data)."""
        if spec is not None:
            self.configure(self.spec_type(**spec))

    def configure(self, spec: Any) -> None:
        """Build the layers that depend on the data, once; the spec goes into the checkpoint's hyper-parameters."""
        self.build(spec)  # first: it may refuse the spec (a model setting that does not fit the data)
        self.spec = spec
        self.hparams["spec"] = asdict(spec)

    def build(self, spec: Any) -> None:
        """Make the data-dependent layers; raise ``ValueError`` naming the setting when the spec does not fit."""
        raise NotImplementedError

    def shared_step(self, batch: Any, stage: str) -> tuple[torch.Tensor, Any]:
        """The loss of ``batch`` and, outside training, what the task decodes (captions, prices, transcripts)."""
        raise NotImplementedError

    # train/loss: the CLI's TrainLoss callback logs what training_step returns (no self.log call per step)
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")[0]

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self.shared_step(batch, "val")[1]

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return self.shared_step(batch, "test")[1]

    # ---- optional hooks: a task overrides those it has a use for -------------------------------------------------
    def example_predictions(self, batch: Any, outputs: Any) -> Examples | None:
        """What to show in MLflow of a validation or test batch (``examples.py`` decides when); None: nothing."""
        return None

    def save_prediction_extras(self, rows: list[dict[str, Any]], output_dir: Path, name: str) -> None:
        """Files to write beside ``predictions/<name>.csv`` (a plot, say)."""

    def example_input(self) -> torch.Tensor | None:
        """An input batch for the signature of the opt-in MLflow model; None: logged without one."""
        return None

    def log_text_scores(
        self, stage: str, loss: torch.Tensor, predicted: list[str], references: list[Any], common: str, name: str
    ) -> None:
        """Log the loss and ``self.metrics[stage]`` of generated text, and the baseline ``<stage>/<name>``: the
        score of always predicting ``common`` (the most common training caption or word), in ``self.baseline``."""
        size = len(references)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.metrics[stage].update(predicted, references)
        self.log_dict(self.metrics[stage], batch_size=size, prog_bar=stage == "val")
        if common:
            self.baseline[stage].update([common] * size, references)
            self.log(f"{stage}/{name}", self.baseline[stage], batch_size=size)
