"""Decoding audio files with soundfile: mono, resampled, and a check for truncated WAVs libsndfile hides."""

from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Any

import soundfile as sf
import torch
import torchaudio

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus"}


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


@functools.lru_cache(maxsize=16)
def resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """torchaudio's resample with its sinc kernel computed once per rate pair (computing it costs ~5x the filtering)."""
    return torchaudio.transforms.Resample(orig, new)


def load_audio(path: Path, sample_rate: int) -> torch.Tensor:
    """Decode with soundfile, mix to mono, resample: a float32 tensor (S,)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = torch.from_numpy(data).mean(dim=1)
    return resampler(rate, sample_rate)(audio) if rate != sample_rate else audio
