"""Transcripts as characters: the normalization the vocabulary is built on, and what CTC needs of them."""

from __future__ import annotations

import itertools

from ..common import word_characters

BLANK = "<blank>"


def normalize_text(text: str) -> str:
    """Lower case, letters/marks/digits of any script and apostrophes, single spaces: what the character vocabulary
    is built on. Combining marks are kept: without them Hindi, Thai or Vietnamese words change."""
    return " ".join(word_characters(text).split())


def ctc_frames_needed(ids: list[int]) -> int:
    """CTC needs one frame per label plus a blank between repeated labels."""
    return len(ids) + sum(a == b for a, b in itertools.pairwise(ids))
