"""Captions as words and word ids: the vocabulary a captioner is trained with."""

from __future__ import annotations

import re
from collections import Counter

from ..common import word_characters

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
# Scripts written without spaces between words (Chinese, Japanese kana): each character is a word, as BLEU for
# them is usually counted, rather than a whole sentence becoming one word seen once.
UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
WORD = re.compile(rf"[{UNSPACED}]|[^\s'{UNSPACED}]+(?:'[^\s'{UNSPACED}]+)*")


def words(caption: str) -> list[str]:
    """Lower-cased words of any script without punctuation, so 'A dog.' and 'a dog' are the same caption and
    'café', 'कुत्ता' or '狗' stay words."""
    return WORD.findall(word_characters(caption))


def build_vocab(captions: list[str], min_freq: int = 1) -> list[str]:
    """Special tokens, then words seen at least ``min_freq`` times, most frequent first (ties alphabetical)."""
    counts = Counter(w for c in captions for w in words(c))
    kept = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
    return [*SPECIALS, *kept]


def most_common(captions: list[str]) -> str:
    """The most frequent caption as normalized words (the first seen among equals): the trivial captioner's output."""
    return Counter(" ".join(words(c)) for c in captions).most_common(1)[0][0]
