"""A quiet terminal: the noise other libraries print is turned off here, at its source, in one place.

What stays: the model summary, the progress bar, the metric tables, Lightning's own status lines, every warning and
error of this project, and any third-party warning not named below, each once. ``VERBOSE=1`` turns all of this off
(everything is printed, MLflow's INFO lines included). Each entry names the exact message it silences, so that a new
warning from a new version of a library is still shown.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

from .credentials import guard_output

PACKAGE = __name__.rpartition(".")[0]
# Lightning advertises its cloud products ("💡 Tip: ... try installing [litlogger]") as INFO at every Trainer.
ADVERTISEMENT = "💡 Tip:"
# Loggers that emit Lightning's rank-zero INFO lines: lightning's own, and pytorch_lightning's once mlflow.pytorch
# (logging the model) has imported that second copy of Lightning.
RANK_ZERO_LOGGERS = (
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
)
# With --tracking.log_model true, run.py saves the model with serialization_format="pickle" on purpose (for
# `mlflow models serve`; predict reads checkpoints with weights_only=True instead).
MLFLOW_PICKLE = "Saving pytorch model by Pickle or CloudPickle format requires exercising caution"

# Lightning's hints that do not apply to this project's commands:
LIGHTNING_HINTS = (
    # on every command where `srun` is installed; under SLURM the project's sbatch script runs srun itself
    r"The `srun` command is available on your system but is not used",
    # predict/test restore the training's ModelCheckpoint state into a trainer whose checkpoints go elsewhere
    r"The dirpath has changed from",
    # a resumed training writes into its own run's checkpoint folder on purpose
    r"Checkpoint directory .* exists and is not empty",
)


def verbose() -> bool:
    """True when the user asked for everything (``VERBOSE=1``, ``make train VERBOSE=1``)."""
    return os.environ.get("VERBOSE", "").strip().lower() not in ("", "0", "false", "no")


def quiet_terminal() -> None:
    """Silence the known noise of Lightning, PyTorch and MLflow for this process and the processes it starts, and
    show this project's own log lines (what the data modules say: skipped entries, formats) in one form; nothing
    printed carries a secret (``credentials.py``)."""
    guard_output()
    _one_log_format()
    logging.getLogger(PACKAGE).setLevel(logging.INFO)
    # MLflow prints a link to each run when it ends, with the tracking URI as given: a password in it too.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if verbose():
        return
    for name in RANK_ZERO_LOGGERS:
        logging.getLogger(name).addFilter(DropMessages(ADVERTISEMENT))
    # Lightning 2.6 still builds torch's LeafSpec, deprecated in torch 2.11: a FutureWarning at every fit and test.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    # MLflow's own INFO lines (system metrics monitor started/stopped, database tables created): its documented
    # switch, inherited by DDP workers; an explicit MLFLOW_LOGGING_LEVEL wins.
    level = os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING").upper()
    logging.getLogger("mlflow").setLevel(level)  # in case MLflow was imported already
    logging.getLogger("mlflow.pytorch").addFilter(DropMessages(MLFLOW_PICKLE))
    for message in LIGHTNING_HINTS:
        warnings.filterwarnings("ignore", message=message)
    warnings.showwarning = ShowOnce(warnings.showwarning)


def _one_log_format() -> None:
    """Give the root logger a handler before a library calls ``logging.basicConfig``.

    ``mlflow.pytorch`` calls ``basicConfig`` when it is imported (at the end of ``fit``), after which Lightning's
    messages came out as ``INFO:pytorch_lightning.utilities.rank_zero:Restoring states ...``. With a root handler
    there first, ``basicConfig`` does nothing and every message keeps the plain form Lightning prints; Lightning,
    imported before, keeps its own handlers, so no message is printed twice.
    """
    import lightning.pytorch  # noqa: F401  (first: it gives its loggers handlers of their own only while root has none)

    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LevelPrefix())
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose() else logging.WARNING)


class DropMessages(logging.Filter):
    """Drops the records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


class ShowOnce:
    """Shows a warning from a given line once per process, as Python's default action means to.

    Python forgets which warnings it has shown whenever any code changes the warning filters, and pandas, NumPy and
    Lightning do so all the time; Lightning's hint that ``srun`` is not used then came twice per training.
    """

    def __init__(self, show: Callable[..., None]) -> None:
        self.show, self.shown = show, set()

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int, *args) -> None:
        key = (str(message), category, filename, lineno)
        if key not in self.shown:
            self.shown.add(key)
            self.show(message, category, filename, lineno, *args)


class LevelPrefix(logging.Formatter):
    """``message`` for INFO, as Lightning prints it; ``WARNING: message`` and ``ERROR: message`` otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname}: {text}"
