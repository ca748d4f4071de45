"""Each utterance checked in setup, in the main process, so that loader workers never meet a bad one.

The duration comes from the file header before anything is decoded, so hour-long recordings are found without
filling memory. Training utterances longer than ``max_duration`` are dropped and listed; files to transcribe are
never dropped silently: they follow ``on_bad_input``, as every other bad file does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import soundfile as sf

from ..common import DataError, SkipLog
from .decode import UNDECODABLE_SUFFIXES, audio_problem, rate_problem
from .features import FeaturePipeline
from .files import Utterance
from .text import ctc_frames_needed

log = logging.getLogger(__name__)


def check_utterances(
    items: list[Utterance], what: str, predicting: bool, hp: Any, sample_rate: int, features: FeaturePipeline,
    vocab: Sequence[str],
) -> tuple[list[Utterance], list[str]]:  # fmt: skip
    """The usable ``items`` and the reasons for those left out; bad ones follow ``hp.on_bad_input``, too long ones
    (training only) are dropped and listed, and no usable item at all is a DataError."""
    bad = SkipLog(hp.on_bad_input, what)
    index = {c: i for i, c in enumerate(vocab)}
    kept, too_long = [], []
    for item in items:
        where = item.source if item.source == str(item.file) else f"{item.source}: {item.file}"
        if not item.file.is_file():
            bad.bad(f"{where}: audio file does not exist")
            continue
        if not predicting and not item.text:
            bad.bad(f"{item.source}: zero-length transcript for {item.file}")
            continue
        try:
            info = sf.info(str(item.file))
        except (RuntimeError, ValueError, OSError) as error:
            fix = ""
            if item.file.suffix.lower() in UNDECODABLE_SUFFIXES:
                fix = f"; convert it to WAV or FLAC (ffmpeg -i in{item.file.suffix} out.wav)"
            bad.bad(f"{where}: unreadable or truncated audio ({str(error).strip()}){fix}")
            continue
        if info.frames <= 0:
            bad.bad(f"{where}: empty audio (0 samples)")
            continue
        problem = rate_problem(info.samplerate, sample_rate)
        if problem:
            bad.bad(f"{where}: {problem}")
            continue
        seconds = info.frames / info.samplerate
        if seconds > hp.max_duration:
            reason = f"{where}: {seconds:.1f} s is longer than data.max_duration = {hp.max_duration} s"
            if predicting:
                bad.bad(f"{reason}; raise data.max_duration to transcribe it whole, or split the recording")
            else:
                too_long.append(reason)
            continue
        problem = audio_problem(item.file) if hp.check_audio else None
        if problem:
            bad.bad(f"{where}: {problem}")
            continue
        samples = math.ceil(seconds * sample_rate)
        available = math.ceil(features.frames(samples) / hp.time_reduction)
        needed = ctc_frames_needed([index.get(c, -1) for c in item.text]) if not predicting else 0
        if needed > available:
            bad.bad(
                f"{where}: transcript of {len(item.text)} characters is too long for {seconds:.2f} s of audio "
                f"({available} frames after {hp.time_reduction}x subsampling, CTC needs {needed})"
            )
            continue
        item.duration = seconds
        kept.append(item)
    if too_long:
        log.warning("dropped %d of %d %s longer than data.max_duration:\n  %s", len(too_long), len(items), what,
                    "\n  ".join(too_long))  # fmt: skip
    bad.report(len(items))
    if not kept:
        raise DataError(f"no usable {what} left (all were too long for data.max_duration or bad)")
    return kept, bad.reasons + too_long
