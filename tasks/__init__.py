"""The task registry: one entry per task of this project, which everything else reads.

`make train TASK=<name>` checks the name here, `make sample-data` finds the sample writer here, `make runs` shows
each run's headline metric next to its baseline from here, and the CLI names a training's MLflow experiment,
checkpoint folder and prediction file after the entry of its model, and its run after the hyper-parameters named
here. Paths are relative to this package.

Adding a task (CONTRIBUTING.md): its LightningModule in ``tasks/``, its DataModule and sample writer in
``datamodules/``, ``configs/<name>.yaml``, and one entry below. Nothing else needs editing.

This file imports nothing but the standard library: the template's post-generation hook reads it too.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

PACKAGE = __name__.rpartition(".")[0]  # the project's package, e.g. "my_project"


@dataclass(frozen=True)
class Task:
    """Where a task's parts live, and which test metric tells whether its model learned anything."""

    name: str  # the MLflow experiment, configs/<name>.yaml, runs/<name>/, predictions/<name>.csv
    model: str  # the LightningModule
    data: str  # the LightningDataModule
    sample: str  # function(out_dir: Path, seed: int) -> Path: writes offline sample data, returns its data.path
    metric: str  # the headline metric, logged as test/<metric>
    baseline: str | None = None  # what a trivial predictor scores on the same test data, logged as test/<baseline>
    better: Literal["lower", "higher"] = "lower"
    name_params: tuple[str, ...] = ()  # the model's hyper-parameters a run is named after (``lstm hidden_size=64``)

    def modules(self) -> set[str]:
        """The modules or packages of this package that hold the task's code (``datamodules.images``)."""
        return {".".join(path.split(".")[:2]) for path in (self.model, self.data, self.sample)}

    def beats_baseline(self, metrics: Mapping[str, Any], stage: str = "test") -> bool | None:
        """Whether ``<stage>/<metric>`` is better than ``<stage>/<baseline>``; None when either is missing."""
        score, baseline = metrics.get(f"{stage}/{self.metric}"), metrics.get(f"{stage}/{self.baseline}")
        if score is None or baseline is None:
            return None
        return bool(score > baseline if self.better == "higher" else score < baseline)


TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        Task(
            "captioning",
            model="tasks.captioning.ImageCaptioner",
            data="datamodules.images.ImageCaptionDataModule",
            sample="datamodules.images.sample.write_sample",
            metric="bleu4",
            baseline="common_bleu4",
            better="higher",
            name_params=("encoder", "d_model", "num_layers"),
        ),
        Task(
            "forecasting",
            model="tasks.forecasting.PriceForecaster",
            data="datamodules.timeseries.PriceDataModule",
            sample="datamodules.timeseries.sample.write_sample",
            metric="mase",
            baseline="naive_mase",
            name_params=("backbone", "hidden_size", "loss"),
        ),
        Task(
            "transcription",
            model="tasks.transcription.SpeechTranscriber",
            data="datamodules.audio.SpeechDataModule",
            sample="datamodules.audio.sample.write_sample",
            metric="wer",
            baseline="common_wer",
            name_params=("encoder", "hidden_size", "num_layers"),
        ),
    ]
}


def load(path: str) -> Any:
    """The object a registry path names: ``load(TASKS["forecasting"].model)`` is the ``PriceForecaster`` class."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(f"{PACKAGE}.{module}"), name)


def task_of(model: type) -> Task:
    """The task whose model ``model`` is (or subclasses), by import path: no task module is imported."""
    for cls in model.__mro__:
        path = f"{cls.__module__}.{cls.__qualname__}"
        for task in TASKS.values():
            if path == f"{PACKAGE}.{task.model}":
                return task
    raise LookupError(
        f"{model.__module__}.{model.__qualname__} is not the model of any task in {__name__}: "
        f"add an entry for it to TASKS ({', '.join(TASKS)} are there)"
    )
