"""Faults injected into trainings under test, as Lightning callbacks named on the command line.

Used as ``--trainer.callbacks+=faults.<Name>`` with this folder on PYTHONPATH; settings come from the
environment so that the same command line works for every process of a DDP job.
"""

from __future__ import annotations

import os
import signal
import time

from lightning.pytorch import Callback


class RaiseOnRank1(Callback):
    """Rank 1 fails at step 3, as a bug or a bad batch on one GPU would."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_rank == 1 and trainer.global_step == 3:
            raise RuntimeError("injected failure on rank 1")


class SignalAtStep(Callback):
    """Sends $FAULT_SIGNAL to this process at step $FAULT_STEP after $FAULT_DELAY s (a preemption, an OOM kill)."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == int(os.environ["FAULT_STEP"]):
            time.sleep(float(os.environ.get("FAULT_DELAY", "0")))
            os.kill(os.getpid(), signal.Signals[os.environ["FAULT_SIGNAL"]])


class BreakArtifactUploads(Callback):
    """Every artifact upload fails, as on a full disk or a read-only artifact folder; metrics still go through.

    Broken from the moment the callback is made (the config is parsed), before the run starts and uploads its config.
    """

    def __init__(self) -> None:
        from mlflow import MlflowClient

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        for name in ("log_artifact", "log_artifacts", "log_text"):
            setattr(MlflowClient, name, full)


class LogRejectedMetric(Callback):
    """Logs a metric whose name MLflow rejects (`val/acc@1`) at every validation, beside the task's own."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            for logger in trainer.loggers:
                logger.log_metrics({"val/acc@1": 0.5, "val/fine": 1.0}, trainer.global_step)


class KillWhileSaving(Callback):
    """SIGKILL at the worst moment of the checkpoint save at step $FAULT_STEP or later, whatever the saving method:
    halfway through copying bytes into a checkpoint file, or just before renaming a finished file into place."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step < int(os.environ["FAULT_STEP"]):
            return
        import shutil

        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        def copy_half(src, dst, *args, **kwargs):
            with open(src, "rb") as f:
                data = f.read()
            with open(dst, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            die()

        def move(src, dst, *args, **kwargs):  # a rename within a file system, else a copy
            same = os.stat(src).st_dev == os.stat(os.path.dirname(os.path.abspath(dst))).st_dev
            die() if same else copy_half(src, dst)

        shutil.copyfile, shutil.move = copy_half, move
        os.replace = os.rename = die


class TouchAtStart(Callback):
    """Makes $FAULT_TOUCH the newest file of its kind when the trainer is built (before Lightning starts other
    ranks): a checkpoint that `--ckpt_path last` would pick if anything resolved it again."""

    def __init__(self) -> None:
        if os.environ.get("LOCAL_RANK", "0") == "0" and "FAULT_TOUCH" in os.environ:
            os.utime(os.environ["FAULT_TOUCH"])


class RecordCheckpointPath(Callback):
    """Each rank writes the checkpoint it resumed from to $FAULT_RECORD.<rank>."""

    def on_train_start(self, trainer, pl_module) -> None:
        with open(f"{os.environ['FAULT_RECORD']}.{trainer.global_rank}", "w") as f:
            f.write(str(trainer.ckpt_path))


class TouchAtStep(Callback):
    """Creates $FAULT_FILE at step $FAULT_STEP (a test waiting for it then breaks something outside), and writes the
    time testing ended to $FAULT_END. $FAULT_STEP_DELAY s per step keeps a training logging while the fault lasts."""

    def on_train_batch_end(self, trainer, *args) -> None:
        time.sleep(float(os.environ.get("FAULT_STEP_DELAY", "0")))
        if trainer.global_step == int(os.environ["FAULT_STEP"]):
            with open(os.environ["FAULT_FILE"], "w") as f:
                f.write(str(time.time()))

    def on_test_end(self, trainer, pl_module) -> None:
        with open(os.environ["FAULT_END"], "w") as f:
            f.write(str(time.time()))


class RaiseInTrial(Callback):
    """The sweep trial numbered $FAULT_TRIAL ($SWEEP_TRIAL, set by the sweep) fails at step 2, as a bug would."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if os.environ.get("SWEEP_TRIAL") == os.environ["FAULT_TRIAL"] and trainer.global_step == 2:
            raise RuntimeError(f"injected failure in trial {os.environ['SWEEP_TRIAL']}")


class HoldTrial(Callback):
    """The sweep trial numbered $FAULT_TRIAL creates $FAULT_FILE after its first validation, then waits to be killed:
    a test that kills the sweep then kills it in the middle of that trial, however loaded the machine is."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if os.environ.get("SWEEP_TRIAL") != os.environ["FAULT_TRIAL"] or trainer.sanity_checking:
            return
        with open(os.environ["FAULT_FILE"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(600)


class RecordTrainedValues(Callback):
    """Each rank writes what it trained with and for how long to $FAULT_RECORD.<trial>.<rank> (JSON)."""

    def on_train_end(self, trainer, pl_module) -> None:
        import json

        record = {"hparams": {k: v for k, v in pl_module.hparams.items() if k != "spec"}}
        record.update(epochs=trainer.current_epoch, world_size=trainer.world_size)
        path = f"{os.environ['FAULT_RECORD']}.{os.environ.get('SWEEP_TRIAL')}.{trainer.global_rank}"
        with open(path, "w") as f:
            json.dump(record, f)
