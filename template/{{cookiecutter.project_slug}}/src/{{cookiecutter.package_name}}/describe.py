"""What a training's MLflow run is called and says about itself, so that the MLflow UI tells its story.

A run is named after its task, the hyper-parameters the task registry names (``name_params``) and its epochs:
``transcription lstm hidden_size=128 num_layers=2 epochs=15``, unless ``--tracking.run_name`` names it. Its
description (MLflow's ``mlflow.note.content`` tag, shown at the top of the run's page) is the command that made it
and which metric to compare with which baseline.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
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


def describe_run(
    settings: RunSettings, task: Task, hparams: Mapping[str, Any], max_epochs: int | None, argv: Sequence[str] = ()
) -> RunSettings:
    """``settings`` with a readable name (unless one is given) and the description tag (unless one is given)."""
    tags = {"mlflow.note.content": description(task, argv or sys.argv), **(settings.tags or {})}
    return replace(settings, run_name=settings.run_name or run_name(task, hparams, max_epochs), tags=tags)
