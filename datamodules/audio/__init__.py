"""Speech: LibriSpeech folders, JSONL manifests or CSV/TSV -> batches of log-mel features and characters."""

from .datamodule import SpeechDataModule, SpeechSpec

__all__ = ["SpeechDataModule", "SpeechSpec"]
