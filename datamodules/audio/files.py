"""Reading speech data sets: LibriSpeech folders, NeMo JSONL manifests, CSV/TSV (Common Voice) files."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..common import DataError, SkipLog

SAMPLE_HINT = "Generate the sample with `make sample-data TASK=transcription`, or set data.path to your data."


@dataclass
class Utterance:
    file: Path
    text: str  # normalized
    speaker: str
    source: str  # where it came from, for error messages: "manifest.jsonl line 3"
    duration: float = 0.0


def read_librispeech(root: Path, bad: SkipLog) -> list[Utterance]:
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise DataError(f"no *.trans.txt files under {root}: not a LibriSpeech-style folder. {SAMPLE_HINT}")
    items = []
    for trans in transcripts:
        for number, line in enumerate(trans.read_text().splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{utt_id}.flac"
            if not audio.exists() and audio.with_suffix(".wav").exists():
                audio = audio.with_suffix(".wav")
            items.append(Utterance(audio, text, utt_id.split("-")[0], f"{trans} line {number}"))
    return items


def read_jsonl(path: Path, bad: SkipLog) -> list[Utterance]:
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            bad.bad(f"{where}: not valid JSON ({error.msg})")
            continue
        missing = [k for k in ("audio_filepath", "text") if not isinstance(entry, dict) or k not in entry]
        if missing:
            bad.bad(f"{where}: no field {missing[0]!r} (a manifest line needs 'audio_filepath' and 'text')")
            continue
        audio = path.parent / str(entry["audio_filepath"])
        speaker = entry.get("speaker", entry.get("speaker_id", audio.stem))
        items.append(Utterance(audio, str(entry["text"]), str(speaker), where))
    return items


def read_csv(path: Path, bad: SkipLog) -> list[Utterance]:
    with open(path, newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if path.suffix == ".tsv" or "\t" in sample.splitlines()[0] else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames or []
        text_col = next((c for c in ("transcript", "sentence", "text") if c in columns), None)
        if "path" not in columns or text_col is None:
            raise DataError(f"{path}: columns {columns} need 'path' and 'transcript' (or Common Voice's 'sentence')")
        items = []
        for number, row in enumerate(reader, 2):
            audio = path.parent / row["path"]
            if not audio.exists() and (path.parent / "clips" / row["path"]).exists():
                audio = path.parent / "clips" / row["path"]  # Common Voice keeps clips/ next to the TSV
            speaker = row.get("client_id") or row.get("speaker") or audio.stem
            items.append(Utterance(audio, row[text_col] or "", speaker, f"{path} row {number}"))
    return items


READERS = {"librispeech": read_librispeech, "jsonl": read_jsonl, "csv": read_csv}


def detect_format(path: Path, format: str) -> str:
    """``librispeech``, ``jsonl`` or ``csv``: ``format`` unless it is ``auto``, else told by the path."""
    if format != "auto":
        return format
    if path.is_dir():
        return "librispeech"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise DataError(f"cannot tell the format of {path}: use a folder, .jsonl, .csv or .tsv, or set data.format")
