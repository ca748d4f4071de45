"""Writes what ``predict_step`` returns (one dict per input: captions, prices, transcripts) to CSV and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .tasks import task_of
from .tasks.base import TaskModule


class PredictionWriter(BasePredictionWriter):
    """Saves predictions as ``<output_dir>/<task>.csv`` and ``.json``.

    A task's ``save_prediction_extras(rows, output_dir, name)`` may add more (e.g. a forecast plot).
    """

    def __init__(self, output_dir: str = "predictions") -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)

    def write_on_epoch_end(self, trainer: Trainer, pl_module: TaskModule, predictions: Any, batch_indices: Any) -> None:
        if predictions and isinstance(predictions[0], list) and predictions[0] and isinstance(predictions[0][0], list):
            predictions = [batch for loader in predictions for batch in loader]  # several dataloaders
        rows = [row for batch in predictions for row in batch]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        name = task_of(type(pl_module)).name
        if trainer.world_size > 1:
            name = f"{name}-rank{trainer.global_rank}"
        csv_path = self.output_dir / f"{name}.csv"
        pd.DataFrame(rows).to_csv(csv_path, index=False)
        (self.output_dir / f"{name}.json").write_text(json.dumps(rows, indent=1, default=str))
        pl_module.save_prediction_extras(rows, self.output_dir, name)
        rank_zero_info(f"Wrote {len(rows)} predictions to {csv_path}")
