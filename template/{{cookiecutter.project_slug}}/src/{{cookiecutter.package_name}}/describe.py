"""What a training's MLflow run is called and says about itself, so that the MLflow UI tells its story.

A run is named after its task, the hyper-parameters the task registry names (``name_params``) and its epochs:
``transcription lstm hidden_size=128 num_layers=2 epochs=15``, unless ``--tracking.run_name`` names it. Its
description (MLflow's ``mlflow.note.content`` tag, shown at the top of the run's page) is the command that made it
and which metric to compare with which baseline; its ``data`` tag, the data it trained on.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .run import RunSettings
from .tasks import Task

PACKAGE = __name__.rpartition(".")[0]


def run_name(task: Task, hparams: Mapping[str, Any], max_epochs: int | None) -> str:
    """``<task> <value of a text hyper-parameter> <name>=<value of another> ... epochs=<n>``."""
    parts = [task.name]
    for key in task.name_params:
        if key in hparams:
            value = hparams[key]
            parts.append(value if isinstance(value, str) else f"{key}={value}")
    if max_epochs is not None and max_epochs >= 0:
        parts.append(f"epochs={max_epochs}")
    return " ".join(parts)


def description(task: Task, argv: Sequence[str]) -> str:
    """Markdown: the command, then the headline metric and the baseline it is compared with."""
    command = shlex.join(["python", "-m", PACKAGE, *argv[1:]])
    text = f"`{command}`\n\nHeadline metric: **test/{task.metric}** ({task.better} is better)"
    if task.baseline:
        text += f", next to **test/{task.baseline}**, what a trivial predictor scores on the same test data"
    return text + "."


def data_label(path: Any) -> str | None:
    """The data a run trained on, short and without a home folder: the path as given when it is relative (or under
    the working directory), else its last two parts (``.../prices/2024.csv``)."""
    if not isinstance(path, str | Path) or not str(path):
        return None
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    here = Path.cwd()
    return str(path.relative_to(here)) if path.is_relative_to(here) else str(Path("...", *path.parts[-2:]))


def describe_run(
    settings: RunSettings,
    task: Task,
    hparams: Mapping[str, Any],
    max_epochs: int | None,
    argv: Sequence[str] = (),
    data_path: Any = None,
) -> RunSettings:
    """``settings`` with a readable name (unless one is given), the description tag (unless one is given) and the
    ``data`` tag, so that two trainings on different data are told apart in the UI and in `make runs`."""
    tags = {"mlflow.note.content": description(task, argv or sys.argv), **(settings.tags or {})}
    if data_label(data_path):
        tags.setdefault("data", data_label(data_path))
    return replace(settings, run_name=settings.run_name or run_name(task, hparams, max_epochs), tags=tags)
