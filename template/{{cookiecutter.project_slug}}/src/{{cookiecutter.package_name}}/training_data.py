"""The data settings a checkpoint was trained with, for the commands that continue from it.

A training's DataModule arguments (column names, formats, sample rate, image root, ...) are in its checkpoint
(``datamodule_hyper_parameters``, from ``save_hyperparameters``). ``predict``, ``test``, ``validate`` and a resumed
``fit`` read the data as the training did, unless the command line sets a value itself (``--data.<key> value``):
a user who trained with ``ARGS="--data.target Close"`` does not have to repeat it to predict or resume.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .checkpoints import entry

PER_COMMAND = frozenset({"predict_path"})  # what each command says for itself: the training's is never taken
GIVEN = re.compile(r"--data\.(?:init_args\.)?([A-Za-z_]\w*)")


def given_on_command_line(argv: Sequence[str]) -> set[str]:
    """The data settings ``argv`` sets itself (``--data.target Close``, ``--data.init_args.target=Close``)."""
    return {m.group(1) for arg in argv if (m := GIVEN.match(arg))}


def training_settings(checkpoint: str | Path, data_class: type) -> dict[str, Any]:
    """The init arguments of ``data_class`` the checkpoint's training used (empty for a checkpoint without them)."""
    saved = entry(checkpoint, "datamodule_hyper_parameters")
    if not isinstance(saved, Mapping):
        return {}
    accepted = set(inspect.signature(data_class.__init__).parameters) - {"self"} - PER_COMMAND
    return {k: v for k, v in saved.items() if k in accepted}


def as_trained(data: Any, trained: Mapping[str, Any], argv: Sequence[str]) -> dict[str, Any]:
    """The config's ``data`` section (``class_path``, ``init_args``) with the training's settings in place of those
    ``argv`` does not set; says which were taken, and which values given differ from the training's."""
    config, given = data.init_args.as_dict(), given_on_command_line(argv)
    taken = {k: v for k, v in trained.items() if k not in given and _same(config.get(k)) != _same(v)}
    overridden = {k: v for k, v in trained.items() if k in given and _same(config.get(k)) != _same(v)}
    if taken:
        listed = ", ".join(f"data.{k}={_short(v)} (config: {_short(config.get(k))})" for k, v in taken.items())
        rank_zero_info(f"From the training's checkpoint: {listed}. Pass --data.<key> to use another value.")
    if overridden:
        listed = ", ".join(f"data.{k}={_short(config.get(k))} (training: {_short(v)})" for k, v in overridden.items())
        rank_zero_info(f"As given on the command line, not as trained: {listed}")
    return {"class_path": data.class_path, "init_args": {**config, **taken}}


def spec_mismatch(data_spec: Any, model_spec: Any, settings: Mapping[str, Any], trained: Mapping[str, Any]) -> str:
    """Why resuming is refused: each field of the spec that differs (the checkpoint's value, this data's), and the
    data settings of this command that differ from the training's."""
    ours, saved = asdict(data_spec), asdict(model_spec)
    fields = [f"{k} {_short(saved[k])} in the checkpoint, {_short(ours[k])} now" for k in saved if ours[k] != saved[k]]
    changed = [
        f"data.{k}={_short(settings.get(k))} (training: {_short(v)})"
        for k, v in trained.items()
        if _same(settings.get(k)) != _same(v)
    ]
    cause = f"; the settings that differ from the training's: {', '.join(changed)}" if changed else ""
    return (
        f"the data differs from what the checkpoint was trained on ({'; '.join(fields)}){cause}. Resume with the "
        "training's data and settings (drop those --data options), or start a new training without --ckpt_path"
    )


def _same(value: Any) -> Any:
    """Lists and tuples alike (a checkpoint keeps tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
