"""Example predictions in the MLflow run: what a task shows of its first validation batch each epoch, and of its
first test batch, as a table (CSV and HTML), images and a figure.

A task says *what* to show with ``example_predictions(batch, outputs) -> Examples`` (``outputs``: what its
``validation_step``/``test_step`` returned; at most its ``examples_to_log`` rows); this callback decides *when*,
renders the files and hands them to the run. Without a tracked run (``--trainer.logger false``) the files go to
``<runs>/<task>/examples/``. (The bundled sample *data* is another thing: ``sample_data.py``.)
"""

from __future__ import annotations

import csv
import html
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer

if TYPE_CHECKING:
    from .tasks.base import TaskModule


@dataclass
class Examples:
    """A task's example predictions: one row per example, and optionally an image per row and a figure."""

    rows: list[dict[str, Any]]
    images: list[np.ndarray] | None = None  # (height, width, 3) uint8, shown in the row's HTML
    figure: Any = None  # a matplotlib Figure

    def save(self, folder: Path) -> None:
        """Write ``predictions.csv``, ``predictions.html``, ``<row>.png`` per image and ``figure.png``."""
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        columns = list(self.rows[0]) if self.rows else []
        with open(folder / "predictions.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        head = ("<th>image</th>" if self.images else "") + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = []
        for i, row in enumerate(self.rows):
            cells = "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in columns)
            if self.images:
                Image.fromarray(self.images[i]).save(folder / f"{i}.png")
                cells = f'<td><img src="{i}.png" height="64"></td>' + cells
            body.append(f"<tr>{cells}</tr>")
        table = f"<table border=1 cellpadding=4><tr>{head}</tr>{''.join(body)}</table>"
        (folder / "predictions.html").write_text(
            f"<html><body><h3>{html.escape(folder.name)}</h3>{table}</body></html>"
        )
        if self.figure is not None:
            self.figure.savefig(folder / "figure.png", dpi=100, bbox_inches="tight")


class ExamplePredictions(Callback):
    """Asks the task for examples of its first validation batch each epoch (``examples/val_epoch<N>``) and of its
    first test batch (``examples/test``), on global rank 0, and hands the files to ``upload(folder, name)``, which
    takes the folder over (the run uploads it in the background, then deletes it)."""

    def __init__(self, upload: Callable[[Path, str], None]) -> None:
        self.upload = upload

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            self._log(trainer, pl_module, batch, outputs, f"examples/val_epoch{trainer.current_epoch:03d}")

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if batch_idx == 0:
            self._log(trainer, pl_module, batch, outputs, "examples/test")

    def _log(self, trainer: Trainer, pl_module: TaskModule, batch: Any, outputs: Any, name: str) -> None:
        if not trainer.is_global_zero or outputs is None:
            return
        examples = pl_module.example_predictions(batch, outputs)
        if examples is None:
            return
        folder = Path(tempfile.mkdtemp(prefix="examples-"))
        examples.save(folder)
        self.upload(folder, name)
