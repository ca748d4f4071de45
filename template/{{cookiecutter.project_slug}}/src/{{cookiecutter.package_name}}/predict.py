"""Writes what ``predict_step`` returns (one dict per input: captions, prices, transcripts) to CSV and JSON."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .tasks import task_of
from .tasks.base import TaskModule

log = logging.getLogger(__name__)


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
            batch_indices = None  # each loader's count from 0: their order is kept as it is
        elif batch_indices and len(batch_indices) == 1:  # Lightning keeps the indices per dataloader
            batch_indices = batch_indices[0]
        rows = in_input_order(predictions, batch_indices)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        name = task_of(type(pl_module)).name
        if trainer.world_size > 1:
            name = f"{name}-rank{trainer.global_rank}"
        csv_path = self.output_dir / f"{name}.csv"
        replaced = (
            " (replacing the previous ones: --predictions.output_dir keeps them apart)" if csv_path.exists() else ""
        )
        pd.DataFrame(rows).to_csv(csv_path, index=False)
        (self.output_dir / f"{name}.json").write_text(json.dumps(rows, indent=1, default=str))
        pl_module.save_prediction_extras(rows, self.output_dir, name)
        rank_zero_info(f"Wrote {len(rows)} predictions to {csv_path}{replaced}")
        for key in pl_module.prediction_keys:
            warn_if_uninformative(rows, key)


def in_input_order(predictions: list[list[dict[str, Any]]], batch_indices: list[list[int]] | None) -> list[dict]:
    """The rows of all batches, in the order of the inputs: a loader may batch them otherwise (audio by length).

    Lightning tracks each batch's input indices; batches with one row per input are put back in their order.
    """
    pairs = list(zip(predictions, batch_indices or [], strict=False))
    one_row_each = len(pairs) == len(predictions) and all(i is not None and len(i) == len(b) for b, i in pairs)
    if not one_row_each:
        return [row for batch in predictions for row in batch]
    indexed = [(index, row) for batch, indices in pairs for index, row in zip(indices, batch, strict=True)]
    return [row for _, row in sorted(indexed, key=lambda pair: pair[0])]


def warn_if_uninformative(rows: list[dict[str, Any]], key: str) -> None:
    """Say so when every prediction's ``key`` is empty, or all are the same: the model has not learned its task."""
    values = [row.get(key) for row in rows]
    if not values:
        return
    if all(v is None or v == "" for v in values):
        log.warning("all %d predictions have an empty %s: the model has not learned its task yet (train longer, or "
                    "check its metrics with `make runs`)", len(values), key)  # fmt: skip
    elif len(values) > 1 and len({str(v) for v in values}) == 1:
        log.warning("all %d predictions have the same %s %r: the model ignores its inputs (train longer, or check "
                    "its metrics with `make runs`)", len(values), key, values[0])  # fmt: skip
