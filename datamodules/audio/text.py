"""Transcripts as characters: the normalization the vocabulary is built on, and what CTC needs of them."""

from __future__ import annotations

import itertools
import re
import unicodedata

BLANK = "<blank>"


def normalize_text(text: str) -> str:
    """Lower-case, letters/digits/apostrophes only, single spaces: what the character vocabulary is built on."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    return " ".join(re.sub(r"[^\w']|_", " ", text).split())


def ctc_frames_needed(ids: list[int]) -> int:
    """CTC needs one frame per label plus a blank between repeated labels."""
    return len(ids) + sum(a == b for a, b in itertools.pairwise(ids))
