"""Sample predictions, figures and files for the MLflow run of a training: what tasks log each validation epoch.

Without an MLflow logger (``--trainer.logger false``) the files are kept under ``<default_root_dir>/artifacts``.
"""

from __future__ import annotations

import csv
import html
import os
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .tracking import find_tracker


@rank_zero_only
def log_artifact(trainer: Trainer, local_path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file to the trainer's MLflow run; without one, keep it under ``<root>/artifacts``."""
    tracker = find_tracker(trainer)
    if tracker is not None:
        tracker.experiment.log_artifact(tracker.run_id, str(local_path), artifact_path)
        return
    target = Path(trainer.default_root_dir) / "artifacts" / (artifact_path or "")
    target.mkdir(parents=True, exist_ok=True)
    (target / Path(local_path).name).write_bytes(Path(local_path).read_bytes())


@rank_zero_only
def log_table(trainer: Trainer, rows: list[dict[str, Any]], name: str, images: dict[int, str] | None = None) -> None:
    """Log sample predictions as ``<name>.csv`` and ``<name>.html``, readable in the MLflow UI.

    ``images`` maps a row index to the artifact-relative path of an image shown in that row's HTML.
    """
    if not rows:
        return
    folder, stem = os.path.split(name)
    with tempfile.TemporaryDirectory() as tmp:
        columns = list(rows[0])
        with open(Path(tmp) / f"{stem}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = []
        for i, row in enumerate(rows):
            cells = "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in columns)
            if images and i in images:
                cells = f'<td><img src="{html.escape(images[i])}" height="64"></td>' + cells
            body.append(f"<tr>{cells}</tr>")
        if images:
            head = "<th>image</th>" + head
        page = f"<table border=1 cellpadding=4><tr>{head}</tr>{''.join(body)}</table>"
        (Path(tmp) / f"{stem}.html").write_text(f"<html><body><h3>{html.escape(name)}</h3>{page}</body></html>")
        for file in (f"{stem}.csv", f"{stem}.html"):
            log_artifact(trainer, Path(tmp) / file, folder or None)


@rank_zero_only
def log_figure(trainer: Trainer, figure: Any, name: str) -> None:
    """Log a matplotlib figure as a PNG artifact ``name`` (e.g. ``samples/forecast_epoch003.png``)."""
    folder, file = os.path.split(name)
    with tempfile.TemporaryDirectory() as tmp:
        figure.savefig(Path(tmp) / file, dpi=100, bbox_inches="tight")
        log_artifact(trainer, Path(tmp) / file, folder or None)
