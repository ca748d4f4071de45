"""What every pretrained encoder shares: a weights file loaded strictly or refused by name, freezing, and the
optimizer's parameter groups with a lower learning rate for the encoder.

Weights are read only when a model is new (its ``spec`` is not given yet): a model rebuilt from a checkpoint gets
them from the checkpoint's state dict, so ``test`` and ``predict`` need neither the original file nor a download.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

SHOWN_KEYS = 3  # names a refusal quotes of each kind; the count says how many more there are


def read_state_dict(path: str, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (``torch.save`` of a state dict, legacy or zip format), without running code."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"weights_path {path!r}: no such file; give the {what} weights file or weights_path: null")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, damaged, or a pickled object rather than a state dict
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot load {what} weights from {path!r}: {message}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint rather than bare weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"cannot load {what} weights from {path!r}: it does not hold a state dict of tensors")
    return state


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: str, what: str) -> None:
    """Load ``state`` into ``module`` or refuse, in one line, naming the tensors that do not fit."""
    ours = module.state_dict()
    missing, unexpected = set(ours) - set(state), set(state) - set(ours)
    shapes = [k for k in set(ours) & set(state) if ours[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        shaped = (f"{k} {tuple(state[k].shape)} vs {tuple(ours[k].shape)}" for k in shapes)
        parts = [
            f"missing {_names(missing)}" if missing else "",
            f"unexpected {_names(unexpected)}" if unexpected else "",
            f"other shapes for {_names(shaped)}" if shapes else "",
        ]
        raise ValueError(
            f"weights_path {path!r} does not hold {what} weights: {'; '.join(p for p in parts if p)}. "
            f"Give a state dict saved from {what}, or weights_path: null"
        )
    module.load_state_dict(state)


def set_trainable(module: nn.Module, trainable: bool, training: bool) -> None:
    """Freeze or unfreeze; a frozen module stays in eval mode (its batch-norm statistics and dropout as loaded),
    an unfrozen one follows the model's mode (``training``)."""
    module.requires_grad_(trainable)
    module.train(trainable and training)


def frozen_now(always: bool, freeze_epochs: int, epoch: int) -> bool:
    """Whether the encoder is frozen in ``epoch``: always, or for the first ``freeze_epochs`` epochs."""
    return always or epoch < freeze_epochs


def check_finetuning(freeze_epochs: int, encoder_lr_scale: float) -> None:
    if freeze_epochs < 0:
        raise ValueError(f"freeze_epochs must be 0 or more, not {freeze_epochs}")
    if encoder_lr_scale <= 0:
        raise ValueError(f"encoder_lr_scale must be more than 0 (e.g. 0.1), not {encoder_lr_scale}: to keep the "
                         "encoder as loaded, set freeze_encoder: true")  # fmt: skip


def param_groups(
    model: nn.Module, encoder_groups: list[dict[str, Any]], lr: float, include: Callable[[nn.Parameter], bool]
) -> list[dict[str, Any]]:
    """The encoder's groups (each with its own ``lr``) and one group at ``lr`` for every other parameter that
    ``include`` accepts; empty groups are left out (AdamW refuses them)."""
    in_encoder = {id(p) for group in encoder_groups for p in group["params"]}
    rest = [p for p in model.parameters() if id(p) not in in_encoder and include(p)]
    groups = [{"params": rest, "lr": lr}, *encoder_groups]
    return [g for g in groups if g["params"]]
