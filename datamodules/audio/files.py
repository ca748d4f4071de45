"""Reading speech data sets: LibriSpeech folders, NeMo JSONL manifests, CSV/TSV (Common Voice) files.

Text files are read as users save them (UTF-8 with or without a byte-order mark, or UTF-16); every entry that
cannot be used is named by file and line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..common import DataError, SkipLog, read_text, refuse_duplicates, sniff_separator
from ..unpack import EXCEL_SUFFIXES, plain_suffix

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
        for number, line in enumerate(read_text(trans).splitlines(), 1):
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
    for number, line in enumerate(read_text(path).splitlines(), 1):
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
        audio, text = entry["audio_filepath"], entry["text"]
        if not isinstance(audio, str) or not audio.strip():
            bad.bad(f"{where}: audio_filepath {audio!r} is not a file name")
            continue
        if not isinstance(text, str):
            bad.bad(f"{where}: text {text!r} is not text")
            continue
        file = path.parent / audio
        speaker = entry.get("speaker", entry.get("speaker_id"))
        items.append(Utterance(file, text, file.stem if speaker is None else str(speaker), where))
    return items


def read_csv(path: Path, bad: SkipLog) -> list[Utterance]:
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path} is empty; it needs a header with 'path' and 'transcript' and a row per utterance")
    separator = "\t" if plain_suffix(path) == ".tsv" else sniff_separator(text.partition("\n")[0])
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=separator)
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        text_col = next((c for c in ("transcript", "sentence", "text") if c in columns), None)
        if "path" not in columns or text_col is None:
            raise DataError(f"{path}: columns {columns} need 'path' and 'transcript' (or Common Voice's 'sentence')")
        refuse_duplicates(str(path), columns, ["path", text_col, "client_id", "speaker"])
        items = []
        for row in reader:
            where = f"{path} row {reader.line_num}"
            name = (row.get("path") or "").strip()
            if not name:
                bad.bad(f"{where}: no audio path")
                continue
            audio = path.parent / name
            if not audio.exists() and (path.parent / "clips" / name).exists():
                audio = path.parent / "clips" / name  # Common Voice keeps clips/ next to the TSV
            speaker = row.get("client_id") or row.get("speaker") or audio.stem
            items.append(Utterance(audio, row.get(text_col) or "", speaker, where))
    except csv.Error as error:
        raise DataError(f"{path} row {reader.line_num}: {error}") from None
    return items


READERS = {"librispeech": read_librispeech, "jsonl": read_jsonl, "csv": read_csv}


def detect_format(path: Path, format: str) -> str:
    """``librispeech``, ``jsonl`` or ``csv``: ``format`` unless it is ``auto``, else told by the path."""
    if format != "auto":
        return format
    if path.is_dir():
        return "librispeech"
    suffix = plain_suffix(path)  # train.tsv.gz is a TSV
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv", *EXCEL_SUFFIXES):
        return "csv"
    raise DataError(f"cannot tell the format of {path}: use a folder, .jsonl, .csv or .tsv, or set data.format")
