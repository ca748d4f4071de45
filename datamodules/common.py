"""Helpers every DataModule shares: clear errors about bad input, skip policies and leak-free splits."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

BadInputPolicy = Literal["error", "skip"]


class DataError(ValueError):
    """Bad input data, with a message that names the file, row or field and says what to do."""


def existing_path(path: str | Path, what: str, hint: str = "") -> Path:
    """Return ``path`` as a Path, or explain which file is missing and how to get it."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"{what} {str(path)!r} does not exist (looked in {resolved.resolve()}). {hint}".strip())
    return resolved


class SkipLog:
    """Collects bad items under the ``skip`` policy, or raises at the first one under ``error``.

    Skipping is never silent: ``report()`` logs how many items were dropped and the first few reasons.
    """

    def __init__(self, policy: BadInputPolicy, what: str) -> None:
        if policy not in ("error", "skip"):
            raise DataError(f"on_bad_input must be 'error' or 'skip', not {policy!r}")
        self.policy = policy
        self.what = what
        self.reasons: list[str] = []

    def bad(self, reason: str) -> None:
        if self.policy == "error":
            raise DataError(f"{reason}. Fix or remove it, or set on_bad_input: skip to drop such {self.what}.")
        self.reasons.append(reason)

    def report(self, total: int) -> None:
        if not self.reasons:
            return
        shown = "; ".join(self.reasons[:5]) + (" ..." if len(self.reasons) > 5 else "")
        log.warning("skipped %d of %d %s: %s", len(self.reasons), total, self.what, shown)
        if len(self.reasons) == total:
            raise DataError(f"all {total} {self.what} were bad and skipped: {shown}")


def split_by_group(groups: Sequence[Hashable], fractions: Sequence[float], seed: int = 0) -> list[list[int]]:
    """Split item indices into parts so that all items of one group land in the same part.

    The assignment hashes each group with the seed, so it is deterministic across runs, processes and
    machines (unlike ``random``), and adding data moves few existing groups between parts.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions {list(fractions)} must add up to 1")
    unique = sorted({str(g) for g in groups})
    ranked = sorted(unique, key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
    bounds, acc = [], 0.0
    for fraction in fractions:
        acc += fraction
        bounds.append(round(acc * len(ranked)))
    part_of: dict[str, int] = {}
    start = 0
    for part, end in enumerate(bounds):
        for g in ranked[start:end]:
            part_of[g] = part
        start = end
    parts: list[list[int]] = [[] for _ in fractions]
    for index, group in enumerate(groups):
        parts[part_of[str(group)]].append(index)
    return parts
