"""Offline sample speech: real synthesis with eSpeak NG (the ``espeakng-loader`` wheel), no system package.

Utterances are digit strings and short voice commands, spoken by "speakers" that are each one setting of
eSpeak voice, speaking rate and pitch, written as a LibriSpeech folder
(``<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` + ``<spk>-<chapter>.trans.txt``, upper-case transcripts).
Splitting by speaker therefore holds out voice/speed/pitch settings never heard in training.
"""

from __future__ import annotations

import ctypes
import random
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 22050  # what eSpeak NG synthesizes
AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_RATE, ESPEAK_PITCH, ESPEAK_RANGE = 1, 3, 4
ESPEAK_CHARS_UTF8 = 1
POS_CHARACTER = 1

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COMMANDS = [
    "turn on the light",
    "turn off the light",
    "open the door",
    "close the door",
    "play music",
    "stop",
    "go left",
    "go right",
    "move up",
    "move down",
    "volume up",
    "volume down",
    "yes",
    "no",
    "call home",
    "next song",
]
# eSpeak NG English accents and voice variants; each speaker picks one of each plus a rate and a pitch.
ACCENTS = ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt3"]

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Espeak:
    """A thin ctypes binding to libespeak-ng that returns each utterance as int16 samples at 22,050 Hz."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"eSpeak NG failed to initialize (returned {rate}); reinstall espeakng-loader")
        self.chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept referenced: the library calls it later
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), count: int, events: ctypes.c_void_p) -> int:
        if wav and count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0 = continue synthesis

    def voice(self, name: str, rate: int, pitch: int, pitch_range: int = 50) -> None:
        if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise RuntimeError(f"eSpeak NG has no voice {name!r}")
        self.lib.espeak_SetParameter(ESPEAK_RATE, rate, 0)
        self.lib.espeak_SetParameter(ESPEAK_PITCH, pitch, 0)
        self.lib.espeak_SetParameter(ESPEAK_RANGE, pitch_range, 0)

    def say(self, text: str) -> np.ndarray:
        self.chunks = []
        data = text.encode() + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"eSpeak NG could not synthesize {text!r} (status {status})")
        self.lib.espeak_Synchronize()
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)


def sentence(rng: random.Random) -> str:
    """A digit string (2-4 digits), a command, or a command followed by a digit."""
    kind = rng.random()
    if kind < 0.4:
        return " ".join(rng.choice(DIGITS) for _ in range(rng.randint(2, 4)))
    if kind < 0.8:
        return rng.choice(COMMANDS)
    return f"{rng.choice(COMMANDS)} {rng.choice(DIGITS)}"


def trim_silence(samples: np.ndarray, threshold: int = 200, margin: int = 2205) -> np.ndarray:
    """Cut eSpeak's leading/trailing silence down to ``margin`` samples, so utterances stay short."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return samples
    return samples[max(0, loud[0] - margin) : loud[-1] + margin]


def write_sample(out_dir: Path, seed: int = 0, speakers: int = 40, utterances: int = 12) -> Path:
    """Write ``speakers`` x ``utterances`` synthesized utterances as a LibriSpeech folder; return its root."""
    rng = random.Random(seed)
    root = Path(out_dir)
    engine = Espeak()
    settings: list[tuple[str, str, int, int]] = []
    for spk in range(speakers):
        while True:  # each speaker is a distinct voice/rate/pitch setting
            setting = (rng.choice(ACCENTS), rng.choice(VARIANTS), rng.randrange(110, 191, 10), rng.randrange(25, 76, 5))
            if setting not in settings:
                settings.append(setting)
                break
        accent, variant, rate, pitch = setting
        engine.voice(f"{accent}+{variant}", rate, pitch, pitch_range=rng.randrange(30, 81, 10))
        speaker_id, chapter_id = 100 + spk, 1000 + spk
        folder = root / str(speaker_id) / str(chapter_id)
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for utt in range(utterances):
            text = sentence(rng)
            samples = trim_silence(engine.say(text))
            utt_id = f"{speaker_id}-{chapter_id}-{utt:04d}"
            sf.write(folder / f"{utt_id}.flac", samples, SAMPLE_RATE, subtype="PCM_16")
            lines.append(f"{utt_id} {text.upper()}")
        (folder / f"{speaker_id}-{chapter_id}.trans.txt").write_text("\n".join(lines) + "\n")
    (root / "SPEAKERS.txt").write_text(
        "; ID | SETTING (accent+variant, words per minute, pitch)\n"
        + "".join(f"{100 + i} | {a}+{v} {r} {p}\n" for i, (a, v, r, p) in enumerate(settings))
    )
    return root
