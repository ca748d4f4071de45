"""The last line of a training or test: the headline metric, its baseline, and whether the model beats it.

A metrics table alone hides a model that learned nothing; this line says it in words, at the end of every
``fit`` (with its test), ``validate`` and ``test``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .tasks import Task


def verdict(task: Task, metrics: Mapping[str, Any]) -> str | None:
    """``Result: test/mase 0.75 beats the baseline test/naive_mase 1.21 (lower is better)``, from the test
    metrics when there are any, else the validation ones; None without the headline metric."""
    for stage in ("test", "val"):
        score = metrics.get(f"{stage}/{task.metric}")
        if score is None:
            continue
        line = f"Result: {stage}/{task.metric} {float(score):.4g}"
        baseline = metrics.get(f"{stage}/{task.baseline}") if task.baseline else None
        if baseline is None:
            return f"{line} ({task.better} is better)"
        if task.beats_baseline(metrics, stage):
            return f"{line} beats the baseline {stage}/{task.baseline} {float(baseline):.4g} ({task.better} is better)"
        return (
            f"{line} does NOT beat the baseline {stage}/{task.baseline} {float(baseline):.4g} ({task.better} is "
            "better): the model has not learned more than a trivial predictor; train longer (--trainer.max_epochs) "
            "or check the data"
        )
    return None


@rank_zero_only
def print_verdict(task: Task, metrics: Mapping[str, Any]) -> None:
    """Print ``verdict``, if there is one (global rank 0)."""
    line = verdict(task, metrics)
    if line:
        print(line, flush=True)
