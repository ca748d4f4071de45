"""Optuna pruning inside a sweep trial's training (``sweep.py`` adds it as a callback on the trial's command line).

After each validation, global rank 0 reports the objective to the trial and asks the pruner; the decision is
broadcast so that every rank stops at the same epoch. Optuna's own Lightning callback reads the metric on every
rank, where DDP's other ranks may not have it, and stops ranks one by one: a hang in the next collective.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

GO_ON, PRUNE, DIVERGED = 0, 1, 2


class TrialPruning(Callback):
    """Reports ``monitor`` to Optuna trial ``trial_id`` of study ``study`` in the journal file ``storage``, whose
    ``pruner`` (``{"class": "MedianPruner", ...}``) decides."""

    def __init__(self, storage: str, study: str, trial_id: int, monitor: str, pruner: dict[str, Any]) -> None:
        self.storage, self.study, self.trial_id, self.monitor, self.pruner = storage, study, trial_id, monitor, pruner
        self.trial = None  # global rank 0 only: the only process that talks to the study

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.trial is None:
            import optuna

            from .study import open_storage, pruner_of

            study = optuna.load_study(
                study_name=self.study, storage=open_storage(self.storage), pruner=pruner_of(self.pruner)
            )  # once: each load reads the whole journal
            self.trial = optuna.trial.Trial(study, self.trial_id)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        decision = self._decide(trainer) if trainer.is_global_zero else GO_ON
        if trainer.strategy.broadcast(decision, src=0) != GO_ON:
            trainer.should_stop = True

    def _decide(self, trainer: Trainer) -> int:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise RuntimeError(f"the sweep's objective {self.monitor} is not logged (logged: {logged})")
        value, epoch = float(value), trainer.current_epoch
        if not math.isfinite(value):  # a diverged training: failed, not a value the sampler should learn from
            self.trial.set_user_attr("diverged_at_epoch", epoch)
            return DIVERGED
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", epoch)
            return PRUNE
        return GO_ON
