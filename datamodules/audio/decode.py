"""Decoding audio files with soundfile: mono, resampled, and the checks that find bad audio before training does.

libsndfile silently shortens a truncated WAV and happily returns NaN or infinite samples from a float WAV; both
are looked for here, so that they are named in ``setup`` instead of turning a loss into NaN.
"""

from __future__ import annotations

import functools
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64"}
# Audio that phones and players save and soundfile cannot decode: taken into a folder to transcribe so that each
# file is refused by name with the fix, rather than left out without a word.
UNDECODABLE_SUFFIXES = {".m4a", ".aac", ".wma", ".amr", ".3gp", ".webm", ".mp4", ".mka"}
LOWEST_RATE = 1000  # Hz; lower rates are damaged headers, not speech
RESAMPLE_LIMIT = 20_000_000  # entries of torchaudio's resampling kernel (80 MB): rates like 44101 Hz need billions
LOUDEST = 1000.0  # full scale is 1; float WAVs far beyond it are damaged, and their spectra overflow float32


def wav_truncated(path: Path) -> bool:
    """libsndfile silently shortens a truncated WAV; compare the data chunk's declared size with the file."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        while chunk := f.read(8):
            if len(chunk) < 8:
                return True
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                return _remaining(f) < size
            f.seek(size + (size & 1), 1)
    return False


def _remaining(f: Any) -> int:
    here = f.tell()
    end = f.seek(0, 2)
    f.seek(here)
    return end - here


def rate_problem(rate: int, target: int) -> str | None:
    """Why audio at ``rate`` Hz cannot be resampled to ``target`` Hz, or None."""
    if rate < LOWEST_RATE:
        return f"has a sample rate of {rate} Hz, too low for speech (a damaged header?)"
    g = math.gcd(rate, target)
    if (rate // g) * (target // g) > RESAMPLE_LIMIT:
        return (
            f"has an unusual sample rate ({rate} Hz) that cannot be resampled to {target} Hz in reasonable memory; "
            "convert it to a standard rate such as 16000 or 48000 Hz"
        )
    return None


def audio_problem(path: Path) -> str | None:
    """Why the audio of ``path`` cannot be used (truncated, undecodable, empty, NaN or infinite samples), or None.

    Decodes the whole file: call it after the duration has been checked from the header.
    """
    try:
        if wav_truncated(path):
            return "unreadable or truncated audio (the file is shorter than its header says)"
        data, _ = read_samples(path)
    except (RuntimeError, ValueError, OSError, EOFError, struct.error) as error:
        return f"unreadable or truncated audio ({str(error).strip()})"
    if data.size == 0:
        return "empty audio (0 samples)"
    return samples_problem(data)


def samples_problem(data: np.ndarray) -> str | None:
    """Why decoded samples cannot become features (NaN, infinite or absurdly loud), or None.

    Two reductions and no temporary array (NaN propagates through max and min): the loader runs this on every
    utterance of every epoch, and ``isfinite`` plus ``abs`` took twice as long, an eighth of reading a WAV.
    """
    if data.size == 0:
        return None
    highest, lowest = float(data.max()), float(data.min())
    if not (math.isfinite(highest) and math.isfinite(lowest)):
        return "has NaN or infinite samples (a damaged float WAV?)"
    loudest = max(highest, -lowest)
    if loudest > LOUDEST:
        return f"has samples far outside [-1, 1] (up to {loudest:.3g}; a damaged float WAV?)"
    return None


PHASES_PER_PRODUCT = 16  # output phases that share one matrix product in ``Resampler``


class Resampler:
    """torchaudio's sinc resampling, with its kernel, as a few small matrix products: the same samples, 3x faster.

    torchaudio convolves every output phase with a kernel as wide as the input's period (475 taps from 44.1 to
    16 kHz) though each phase's window covers 34 of them; that made resampling a third of the loader's time from
    44.1 kHz files. Here the input is cut into periods (a view) and each run of ``PHASES_PER_PRODUCT`` phases is
    one product with only the taps its windows cover.
    """

    def __init__(self, orig: int, new: int) -> None:
        reference = torchaudio.transforms.Resample(orig, new)  # its kernel, as torchaudio computes it
        common = math.gcd(orig, new)
        self.orig, self.new, self.width = orig // common, new // common, reference.width
        kernel = reference.kernel[:, 0]  # (phases, taps)
        self.taps = kernel.shape[1]
        self.products: list[tuple[int, int, torch.Tensor]] = []
        for first in range(0, self.new, PHASES_PER_PRODUCT):
            rows = kernel[first : first + PHASES_PER_PRODUCT]
            used = rows.abs().sum(0).nonzero()
            low, high = int(used.min()), int(used.max()) + 1
            self.products.append((low, high, rows[:, low:high].T.contiguous()))

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """(S,) float32 -> (ceil(S * new / orig),), as ``torchaudio.functional.resample``."""
        length = audio.shape[-1]
        padded = torch.nn.functional.pad(audio[None], (self.width, self.width + self.orig))[0]
        periods = padded.unfold(0, self.taps, self.orig)  # (periods, taps), a view
        out = torch.cat([periods[:, low:high] @ weights for low, high, weights in self.products], dim=1)
        return out.reshape(-1)[: -(-length * self.new // self.orig)]


@functools.lru_cache(maxsize=16)
def resampler(orig: int, new: int) -> Resampler:
    """The resampler of a rate pair, its kernel computed once (computing it costs ~5x the filtering)."""
    return Resampler(orig, new)


def read_samples(path: Path) -> tuple[np.ndarray, int]:
    """What ``sf.read(path, dtype="float32", always_2d=True)`` returns, 16-bit PCM scaled here from its integers.

    libsndfile turns PCM into floats one sample at a time: for a 16-bit WAV that took 80% of reading it, and a
    sixth of reading, resampling and featurizing a 44.1 kHz clip. Its scale is 1/32768 too, so the samples are
    the same. FLAC decodes to integers and converts them in one step already: it keeps libsndfile's path.
    """
    with sf.SoundFile(str(path)) as f:
        if f.subtype == "PCM_16" and f.format != "FLAC":
            samples = f.read(dtype="int16", always_2d=True)
            return np.multiply(samples, np.float32(2**-15), dtype=np.float32), f.samplerate
        return f.read(dtype="float32", always_2d=True), f.samplerate


def load_audio(path: Path, sample_rate: int) -> torch.Tensor:
    """Decode with soundfile, mix to mono, resample: a float32 tensor (S,); bad audio raises ValueError."""
    data, rate = read_samples(path)
    problem = samples_problem(data) or rate_problem(rate, sample_rate)
    if problem:
        raise ValueError(problem)
    audio = torch.from_numpy(data[:, 0] if data.shape[1] == 1 else data.mean(axis=1))  # mono: a view, no copy
    return resampler(rate, sample_rate)(audio) if rate != sample_rate else audio
