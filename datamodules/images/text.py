"""Captions as words and word ids: the vocabulary a captioner is trained with."""

from __future__ import annotations

import re
from collections import Counter

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)


def words(caption: str) -> list[str]:
    """Lower-cased words without punctuation, so 'A dog.' and 'a dog' are the same caption."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", caption.lower())


def build_vocab(captions: list[str], min_freq: int = 1) -> list[str]:
    """Special tokens, then words seen at least ``min_freq`` times, most frequent first (ties alphabetical)."""
    counts = Counter(w for c in captions for w in words(c))
    kept = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
    return [*SPECIALS, *kept]


def most_common(captions: list[str]) -> str:
    """The most frequent caption as normalized words (the first seen among equals): the trivial captioner's output."""
    return Counter(" ".join(words(c)) for c in captions).most_common(1)[0][0]
