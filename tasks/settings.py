"""Checks of a model's settings, made in its ``__init__``: a value no model can use is refused by its key before
any data is read or a run is started (torch would fail later, or build for hours, or ask for terabytes)."""

from __future__ import annotations

import math
from collections.abc import Mapping

MAX_SIZE = 2**16  # widths, depths, heads, lengths: far above what a model of this project trains on one machine


def check_model_settings(
    sizes: Mapping[str, int] = {},  # noqa: B006 - read only
    rates: Mapping[str, float] = {},  # noqa: B006
    fractions: Mapping[str, float] = {},  # noqa: B006
    non_negative: Mapping[str, float] = {},  # noqa: B006
) -> None:
    """Refuse, by key: ``sizes`` not whole numbers in 1..MAX_SIZE, ``rates`` not positive and finite, ``fractions``
    outside [0, 1), ``non_negative`` below 0 or not finite."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
            raise ValueError(f"model.init_args.{name} is {value!r}; it must be a whole number from 1 to {MAX_SIZE}")
    for name, value in rates.items():
        if not _number(value) or not 0 < value < math.inf:
            raise ValueError(f"model.init_args.{name} is {value!r}; it must be a positive number, e.g. 0.001")
    for name, value in fractions.items():
        if not _number(value) or not 0 <= value < 1:
            raise ValueError(f"model.init_args.{name} is {value!r}; it must be at least 0 and below 1, e.g. 0.1")
    for name, value in non_negative.items():
        if not _number(value) or not 0 <= value < math.inf:
            raise ValueError(f"model.init_args.{name} is {value!r}; it must be 0 or a positive number")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
