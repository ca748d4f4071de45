"""The TrainLoss callback logs what `self.log("train/loss")` would: the same steps and values, read in batches."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers.logger import Logger
from torch.utils.data import DataLoader, TensorDataset

STEPS_PER_EPOCH, EPOCHS, LOG_EVERY = 7, 3, 3


class Recorder(Logger):
    """Keeps every logged (step, name, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, str, float]] = []

    name = "recorder"
    version = "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows += [(step, k, float(v)) for k, v in metrics.items() if k != "epoch"]

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(step, value) for step, key, value in self.rows if key == name]


class Regression(LightningModule):
    def __init__(self, self_log: bool) -> None:
        super().__init__()
        self.net, self.self_log = torch.nn.Linear(4, 1), self_log

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        if self.self_log:
            self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def train(self_log: bool, callbacks: list, accumulate: int) -> Recorder:
    seed_everything(0)
    data = TensorDataset(torch.randn(STEPS_PER_EPOCH * 8, 4), torch.randn(STEPS_PER_EPOCH * 8, 1))
    recorder = Recorder()
    trainer = Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        log_every_n_steps=LOG_EVERY,
        accumulate_grad_batches=accumulate,
        logger=recorder,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Regression(self_log), DataLoader(data, batch_size=8))
    return recorder


@pytest.mark.parametrize(
    ("batched", "accumulate"),
    [(False, 1), (True, 1), (False, 2)],
    ids=["cpu-reads-each-logged-step", "accelerator-reads-in-batches", "gradient-accumulation"],
)
def test_train_loss_matches_self_log(package, batched: bool, accumulate: int) -> None:
    from demo_project.train_loss import TrainLoss

    reads = []

    class Counted(TrainLoss):
        def _read(self, trainer: Trainer) -> float | None:
            reads.append(len(self._kept))
            return super()._read(trainer)

    callback = Counted(read_every_n_steps=10)
    if batched:  # as on a GPU: losses stay on the device until read_every_n_steps
        callback._free_to_read = lambda loss: False
    ours = train(self_log=False, callbacks=[callback], accumulate=accumulate)
    reference = train(self_log=True, callbacks=[], accumulate=accumulate)

    expected = reference.series("train/loss_step")
    optimizer_steps = EPOCHS * -(-STEPS_PER_EPOCH // accumulate)
    assert [s for s, _ in expected] == list(range(LOG_EVERY - 1, optimizer_steps, LOG_EVERY))  # as Lightning logs
    logged = ours.series("train/loss")
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    epoch_means = [v for _, v in reference.series("train/loss_epoch")]
    assert [v for _, v in ours.series("train/loss_epoch")] == pytest.approx(epoch_means, rel=1e-5)
    assert len(epoch_means) == EPOCHS
    if batched:
        assert max(reads) > 1, f"kept losses must be read together, reads were {reads}"
    else:
        assert max(reads) == 1


def test_a_task_that_logs_its_loss_itself_is_left_alone(package) -> None:
    """No unwritten rule: self.log("train/loss") in a task gives Lightning's own logging, nothing twice."""
    from demo_project.train_loss import TrainLoss

    ours = train(self_log=True, callbacks=[TrainLoss(read_every_n_steps=10)], accumulate=1)
    reference = train(self_log=True, callbacks=[], accumulate=1)
    assert ours.rows == reference.rows
    assert [s for s, _ in ours.series("train/loss_step")] == list(range(LOG_EVERY - 1, EPOCHS * STEPS_PER_EPOCH, 3))
