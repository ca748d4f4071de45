"""The CLI of a baked project run in this process (``main(args)``, as ``python -m <package>`` runs it), on small
sample data with a few-step budget: a config check or a refusal costs a fraction of a second, not a new process.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import sqlite3
from pathlib import Path

import pytest

# A training of a few steps: what a config mistake must not reach, and what a valid value runs through.
FAST = {
    "trainer.max_epochs": "1", "trainer.max_steps": "2", "trainer.limit_train_batches": "2",
    "trainer.limit_val_batches": "1", "trainer.limit_test_batches": "1", "test_after_fit": "false",
    "trainer.enable_progress_bar": "false", "trainer.enable_model_summary": "false",
    "tracking.system_metrics": "false", "tracking.log_checkpoints": "false",
}  # fmt: skip
SMALL_DATA = {  # task -> (sample writer, its arguments, the config keys that point at the data)
    "forecasting": (
        "datamodules.timeseries.sample",
        {"days": 120},
        {"data.init_args.lookback": "20", "data.init_args.horizon": "5"},
    ),  # noqa: E501
    "captioning": ("datamodules.images.sample", {"num_images": 24}, {"data.init_args.image_size": "32"}),
    "transcription": ("datamodules.audio.sample", {"speakers": 6, "utterances": 3}, {}),
}


class Project:
    """A baked project whose CLI runs in this process against a fresh SQLite store."""

    def __init__(self, root: Path, package, store: Path) -> None:
        self.root, self.package, self.store = root, package, store
        self.cli = importlib.import_module(f"{package.__name__}.cli")
        self.data: dict[str, dict[str, str]] = {}  # task -> the settings that point it at its small data

    def data_args(self, task: str, skip: str = "") -> list[str]:
        """``--data.init_args.path <small data>`` and the like, less the key ``skip`` a test sets itself."""
        return [x for k, v in self.data[task].items() if k != skip for x in (f"--{k}", v)]

    def runs(self) -> int:
        if not self.store.exists():
            return 0
        with sqlite3.connect(self.store) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0

    def fit(self, task: str, *args: str, fast: dict[str, str] | None = None) -> tuple[int, str, str, int]:
        """(exit code, the ERROR line or "", what was printed, runs added) of ``fit --config configs/<task>.yaml``."""
        given = {a.lstrip("-") for a in args[::2]}
        budget = [x for k, v in (fast if fast is not None else FAST).items() if k not in given for x in (f"--{k}", v)]
        before, printed = self.runs(), io.StringIO()
        code, line = 0, ""
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
                self.cli.main(["fit", "--config", f"configs/{task}.yaml", *budget, *args])
        except SystemExit as done:
            code, line = (1, str(done.code)) if isinstance(done.code, str) else (done.code or 0, "")
        finally:
            logging.disable(logging.NOTSET)
        return code, line, printed.getvalue(), self.runs() - before


def prepare(project: Path, package, folder: Path) -> Project:
    """``project`` with small sample data of each task under ``folder`` and its own SQLite store there."""
    baked = Project(project, package, folder / "mlflow.db")
    for task, (writer, options, settings) in SMALL_DATA.items():
        path = importlib.import_module(f"{package.__name__}.{writer}").write_sample(folder / task, seed=1, **options)
        baked.data[task] = {**settings, "data.init_args.path": str(path)}
    return baked


def enter(baked: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """Run the CLI from the project folder against its store, as ``make train`` does."""
    monkeypatch.chdir(baked.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{baked.store}")
    return baked
