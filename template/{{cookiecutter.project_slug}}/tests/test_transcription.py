"""Speech transcription: the data module on the sample speech, a bad input, a tiny training and a prediction."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import PROJECT, run_cli

from {{ cookiecutter.package_name }}.datamodules.audio import SpeechDataModule
from {{ cookiecutter.package_name }}.datamodules.common import DataError

CONFIG = str(PROJECT / "configs" / "transcription.yaml")


def test_sample_speech_gives_batches_split_by_speaker(sample_path):
    dm = SpeechDataModule(str(sample_path("transcription")), batch_size=4, n_mels=40)
    dm.setup("fit")
    train, val = ({u.speaker for u in dm.splits[s]} for s in ("train", "val"))
    assert train and val and not train & val
    batch = next(iter(dm.train_dataloader()))
    assert batch["features"].shape[0] == 4 and batch["features"].shape[2] == 40
    assert dm.spec.vocab[0] == "<blank>" and all(batch["text"])
    assert (batch["target_lengths"] > 0).all() and batch["targets"].shape[0] == 4


def test_empty_audio_is_named(sample_path, tmp_path):
    data = tmp_path / "speech"
    shutil.copytree(sample_path("transcription"), data)
    victim = sorted(data.rglob("*.flac"))[3]
    sf.write(victim, np.zeros(0, dtype="float32"), 16000, format="WAV")  # a valid header and no samples
    with pytest.raises(DataError, match=rf"{victim.name}: empty audio"):
        SpeechDataModule(str(data)).setup("fit")


def test_tiny_training_then_predict(sample_path, tmp_path):
    path = str(sample_path("transcription"))
    limits = [
        "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
    ]  # fmt: skip
    run_cli(tmp_path, "fit", "--config", CONFIG, "--data.path", path, "--trainer.max_epochs", "1", *limits)
    audio = tmp_path / "audio"
    audio.mkdir()
    for file in sorted(sample_path("transcription").rglob("*.flac"))[:2]:
        shutil.copy(file, audio / file.name)
    predict = ["--ckpt_path", "last", "--data.predict_path", str(audio), "--trainer.logger", "false"]
    run_cli(tmp_path, "predict", "--config", CONFIG, "--data.path", path, *predict)
    rows = pd.read_csv(tmp_path / "predictions" / "transcription.csv")
    assert len(rows) == 2 and set(rows.columns) == {"file", "transcript"}
