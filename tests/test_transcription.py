"""Speech transcription: data formats, bad input, resampling, CLI training tracked in MLflow, predict."""

from __future__ import annotations

import csv
import importlib
import json
import math
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import assert_refused, mlflow_runs, run_cli, run_count, run_make
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.functional.text import word_error_rate

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny ops on a busy 2-core box: one thread avoids spin-waiting


@pytest.fixture(scope="module")
def audio(package) -> SimpleNamespace:
    """The speech DataModule and the parts of it these tests reach into."""
    root = f"{package.__name__}.datamodules"
    return SimpleNamespace(
        SpeechDataModule=importlib.import_module(f"{root}.audio").SpeechDataModule,
        DataError=importlib.import_module(f"{root}.common").DataError,
        load_audio=importlib.import_module(f"{root}.audio.decode").load_audio,
        LengthGroupedSampler=importlib.import_module(f"{root}.audio.dataset").LengthGroupedSampler,
    )


@pytest.fixture(scope="module")
def sample(package, tmp_path_factory) -> Path:
    """A small LibriSpeech-style sample: 8 speakers x 5 utterances."""
    speech = importlib.import_module(f"{package.__name__}.datamodules.audio.sample")
    return speech.write_sample(tmp_path_factory.mktemp("speech"), seed=1, speakers=8, utterances=5)


def utterances(root: Path) -> list[tuple[Path, str]]:
    """(audio file, transcript) pairs of a LibriSpeech folder."""
    pairs = []
    for trans in sorted(root.rglob("*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt, _, text = line.partition(" ")
            pairs.append((trans.parent / f"{utt}.flac", text))
    return pairs


def write_formats(sample: Path, out: Path) -> dict[str, Path]:
    """The same utterances as a JSONL manifest, a CSV and a Common Voice TSV (clips/ next to it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "clips").mkdir(exist_ok=True)
    rows = utterances(sample)
    with open(out / "manifest.jsonl", "w") as f:
        for file, text in rows:
            rel = Path("clips") / file.name
            shutil.copy(file, out / rel)
            f.write(json.dumps({"audio_filepath": str(rel), "duration": sf.info(file).duration, "text": text}) + "\n")
    pd.DataFrame({"path": [f"clips/{f.name}" for f, _ in rows], "transcript": [t for _, t in rows]}).to_csv(
        out / "data.csv", index=False
    )
    pd.DataFrame(
        {"client_id": [f.name.split("-")[0] for f, _ in rows], "path": [f.name for f, _ in rows],
         "sentence": [t.capitalize() + "." for _, t in rows]}
    ).to_csv(out / "validated.tsv", sep="\t", index=False)  # fmt: skip
    return {
        "librispeech": sample,
        "jsonl": out / "manifest.jsonl",
        "csv": out / "data.csv",
        "tsv": out / "validated.tsv",
    }


def test_each_format_gives_the_same_batches(audio, sample, tmp_path):
    paths = write_formats(sample, tmp_path)
    texts = {}
    for name, path in paths.items():
        dm = audio.SpeechDataModule(str(path), batch_size=4, val_fraction=0.25, test_fraction=0.25, n_mels=40)
        dm.setup("fit")
        assert dm.spec.vocab[0] == "<blank>" and " " in dm.spec.vocab
        texts[name] = sorted(i.text for split in ("train", "val", "test") for i in dm.splits[split])
        batch = next(iter(dm.train_dataloader()))
        assert set(batch) >= {"features", "feature_lengths", "targets", "target_lengths", "text", "file"}
        assert batch["features"].shape[0] == 4 and batch["features"].shape[2] == 40
        assert batch["feature_lengths"].max() == batch["features"].shape[1]
        decoded = "".join(dm.spec.vocab[i] for i in batch["targets"][0][: batch["target_lengths"][0]])
        assert decoded == batch["text"][0] and decoded == decoded.lower()
    assert texts["librispeech"] == texts["jsonl"] == texts["csv"] == texts["tsv"]  # "Seven two." -> "seven two"
    dm = audio.SpeechDataModule(str(sample), val_fraction=0.25, test_fraction=0.25)
    dm.setup("fit")
    speakers = [{i.speaker for i in dm.splits[s]} for s in ("train", "val", "test")]
    assert not (speakers[0] & speakers[1]) and not (speakers[0] & speakers[2]) and all(speakers)


def test_features_on_auto_are_the_models_on_an_accelerator_or_for_a_waveform_encoder(audio, sample):
    """``features_on: auto``: log-mel features from the loader on a CPU; waveforms where the training runs on a GPU
    (the model computes the features there) or the model reads waveforms; an explicit choice is kept."""

    def batch(features_on: str, device: str | None, model: object = None) -> set[str]:
        dm = audio.SpeechDataModule(str(sample), batch_size=2, val_fraction=0.25, test_fraction=0.25,
                                    features_on=features_on)  # fmt: skip
        if device is not None:  # what the Trainer shows a DataModule: its strategy's device and the model
            dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)),
                                         lightning_module=model)  # fmt: skip
        dm.setup("fit")
        return set(next(iter(dm.train_dataloader()))) & {"features", "audio"}

    wav2vec = SimpleNamespace(reads_waveforms=True)
    assert batch("auto", None) == batch("auto", "cpu") == batch("auto", "cpu", SimpleNamespace()) == {"features"}
    assert batch("auto", "cuda") == batch("auto", "mps") == batch("auto", "cpu", wav2vec) == {"audio"}
    assert batch("datamodule", "cuda") == {"features"} and batch("model", "cpu") == {"audio"}


def test_the_model_augments_waveform_batches_only_as_data_spec_augment_says(audio, package, sample):
    """With the features on the model's side, data.spec_augment still decides SpecAugment (training only)."""
    from dataclasses import asdict

    transcription = importlib.import_module(f"{package.__name__}.tasks.transcription")
    for spec_augment in (True, False):
        dm = audio.SpeechDataModule(str(sample), batch_size=2, val_fraction=0.25, test_fraction=0.25,
                                    features_on="model", spec_augment=spec_augment)  # fmt: skip
        dm.setup("fit")
        model = transcription.SpeechTranscriber(hidden_size=16, num_layers=1, conv_channels=4, spec=asdict(dm.spec))
        calls: list[bool] = []

        def featurize(waves, lengths, augment=False, calls=calls, forward=model.features.forward):
            calls.append(augment)
            return forward(waves, lengths, augment)

        model.features.forward = featurize
        model.train()
        model(next(iter(dm.train_dataloader())))
        model.eval()
        model(next(iter(dm.val_dataloader())))
        assert calls == [spec_augment, False]


def test_a_manifest_without_speakers_says_so_and_how_it_splits(audio, sample, tmp_path, caplog):
    """No speaker field: one notice, and a split by utterance, rather than every file counted as a speaker."""
    manifest = write_formats(sample, tmp_path)["jsonl"]
    dm = audio.SpeechDataModule(str(manifest), val_fraction=0.25, test_fraction=0.25)
    with caplog.at_level("INFO"):
        dm.setup("fit")
    notices = [r.getMessage() for r in caplog.records if "names no speakers" in r.getMessage()]
    assert len(notices) == 1, caplog.text
    assert "the split is by utterance" in notices[0] and "speaker/speaker_id/client_id" in notices[0]
    assert "train 20, val 10, test 10 utterances" in caplog.text and "from 40 speakers" not in caplog.text
    # with NeMo's speaker field the same manifest holds speakers out
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    for line in lines:
        line["speaker"] = Path(line["audio_filepath"]).name.split("-")[0]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    caplog.clear()
    dm = audio.SpeechDataModule(str(manifest), val_fraction=0.25, test_fraction=0.25)
    with caplog.at_level("INFO"):
        dm.setup("fit")
    assert "names no speakers" not in caplog.text and "from 8 speakers" in caplog.text
    speakers = [{i.speaker for i in dm.splits[s]} for s in ("train", "val", "test")]
    assert not (speakers[0] & speakers[1]) and not (speakers[0] & speakers[2])


def test_a_folder_is_read_as_the_manifest_it_holds(audio, sample, tmp_path, caplog):
    manifest = write_formats(sample, tmp_path / "speech")["jsonl"]
    for other in ("data.csv", "validated.tsv"):
        (manifest.parent / other).unlink()
    with caplog.at_level("INFO"):
        audio.SpeechDataModule(str(manifest.parent), val_fraction=0.25, test_fraction=0.25).setup("fit")
    assert "reading manifest.jsonl (NeMo manifest)" in caplog.text
    with pytest.raises(audio.DataError, match=r"is not a LibriSpeech-style folder .* holds no data file"):
        audio.SpeechDataModule(str(manifest.parent / "clips")).setup("fit")


def one_utterance(folder: Path, text: str = "STOP", samples: np.ndarray | None = None) -> Path:
    """A one-utterance LibriSpeech folder; returns the audio path."""
    chapter = folder / "1" / "2"
    chapter.mkdir(parents=True)
    audio = chapter / "1-2-0000.wav"
    sf.write(audio, np.sin(np.arange(16000) / 5).astype("float32") if samples is None else samples, 16000)
    (chapter / "1-2.trans.txt").write_text(f"1-2-0000 {text}\n")
    return audio


def break_missing(audio: Path) -> None:
    audio.unlink()


def break_truncated(audio: Path) -> None:
    audio.write_bytes(audio.read_bytes()[:2000])


def break_garbage(audio: Path) -> None:
    audio.write_bytes(b"this is not audio" * 10)


def break_empty(audio: Path) -> None:
    sf.write(audio, np.zeros(0, dtype="float32"), 16000)


def break_transcript(audio: Path) -> None:
    (audio.parent / "1-2.trans.txt").write_text("1-2-0000 ?!\n")  # nothing left after normalization


def break_too_long(audio: Path) -> None:
    sf.write(audio, np.zeros(1600, dtype="float32") + 0.1, 16000)  # 0.1 s: ~3 frames after 4x subsampling
    (audio.parent / "1-2.trans.txt").write_text("1-2-0000 TURN ON THE LIGHT\n")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (break_missing, "audio file does not exist"),
        (break_truncated, "truncated"),
        (break_garbage, "unreadable"),
        (break_empty, "empty audio"),
        (break_transcript, "zero-length transcript"),
        (break_too_long, "too long for 0.10 s of audio"),
    ],
)
def test_bad_input_is_named_or_skipped(audio, sample, tmp_path, damage, message):
    root = tmp_path / "data"
    shutil.copytree(sample, root)
    bad = one_utterance(root / "bad")
    damage(bad)
    dm = audio.SpeechDataModule(str(root), val_fraction=0.25, test_fraction=0.25)
    with pytest.raises(audio.DataError, match=message) as error:
        dm.setup("fit")
    assert "1-2-0000" in str(error.value) and "on_bad_input: skip" in str(error.value)
    dm = audio.SpeechDataModule(str(root), val_fraction=0.25, test_fraction=0.25, on_bad_input="skip")
    dm.setup("fit")
    assert sum(len(dm.splits[s]) for s in ("train", "val", "test")) == len(utterances(sample))


def break_nan_samples(audio: Path) -> None:
    samples = np.sin(np.arange(16000) / 5).astype("float32")
    samples[[100, 2000]] = [np.nan, np.inf]
    sf.write(audio, samples, 16000, subtype="FLOAT")


def break_odd_rate(audio: Path) -> None:
    sf.write(audio, np.sin(np.arange(44101) / 5).astype("float32"), 44101)


def break_latin1_transcript(audio: Path) -> None:
    (audio.parent / "1-2.trans.txt").write_bytes("1-2-0000 CAF\xc9\n".encode("latin-1"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (break_nan_samples, "1-2-0000.wav: has NaN or infinite samples"),
        (break_odd_rate, "1-2-0000.wav: has an unusual sample rate (44101 Hz)"),
    ],
)
def test_bad_audio_is_named_or_skipped_and_listed(audio, sample, tmp_path, damage, message):
    root = tmp_path / "data"
    shutil.copytree(sample, root)
    damage(one_utterance(root / "bad"))
    with pytest.raises(audio.DataError, match="on_bad_input: skip") as error:
        audio.SpeechDataModule(str(root), val_fraction=0.25, test_fraction=0.25).setup("fit")
    assert message in str(error.value)
    dm = audio.SpeechDataModule(str(root), val_fraction=0.25, test_fraction=0.25, on_bad_input="skip")
    dm.setup("fit")
    assert len(dm.skipped) == 1 and message in dm.skipped[0]
    assert next(iter(dm.train_dataloader()))["features"].isfinite().all()


def test_unreadable_transcripts_are_refused_by_name(audio, tmp_path):
    break_latin1_transcript(one_utterance(tmp_path / "data"))
    with pytest.raises(audio.DataError, match="1-2.trans.txt line 1: byte 0xC9 is not UTF-8"):
        audio.SpeechDataModule(str(tmp_path / "data")).setup("fit")


def test_durations_come_from_the_header_before_decoding(audio, package, sample, tmp_path, monkeypatch, caplog):
    root = tmp_path / "data"
    shutil.copytree(sample, root)
    long = one_utterance(root / "long", samples=np.zeros(16000 * 60, dtype="float32"))  # a minute
    checks = importlib.import_module(f"{package.__name__}.datamodules.audio.checks")
    decoded = []
    check = checks.audio_problem
    monkeypatch.setattr(checks, "audio_problem", lambda path: decoded.append(path) or check(path))
    dm = audio.SpeechDataModule(str(root), val_fraction=0.25, test_fraction=0.25, max_duration=20)
    dm.setup("fit")
    assert long not in decoded and len(decoded) == len(utterances(sample))
    assert dm.skipped == [
        f"{long.parent / '1-2.trans.txt'} line 1: {long}: 60.0 s is longer than data.max_duration = 20 s"
    ]


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_long_files_to_transcribe_are_refused_or_listed_never_dropped(audio, tmp_path, policy):
    sf.write(tmp_path / "hour.wav", np.zeros(16000 * 45, dtype="float32"), 16000)
    sf.write(tmp_path / "short.wav", np.zeros(16000, dtype="float32") + 0.1, 16000)
    dm = audio.SpeechDataModule(predict_path=str(tmp_path), max_duration=30, on_bad_input=policy)
    message = f"{tmp_path / 'hour.wav'}: 45.0 s is longer than data.max_duration = 30 s; raise data.max_duration"
    if policy == "error":
        with pytest.raises(audio.DataError) as error:
            dm.setup("predict")
        assert message in str(error.value)
    else:
        dm.setup("predict")
        assert [u.file.name for u in dm.splits["predict"]] == ["short.wav"] and message in dm.skipped[0]


def test_phone_recordings_in_a_folder_are_refused_by_name_not_left_out(audio, tmp_path, caplog):
    sf.write(tmp_path / "ok.wav", np.zeros(16000, dtype="float32") + 0.1, 16000)
    (tmp_path / "memo.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    (tmp_path / "notes.txt").write_text("not audio")
    dm = audio.SpeechDataModule(predict_path=str(tmp_path))
    with caplog.at_level("WARNING"), pytest.raises(audio.DataError) as error:
        dm.setup("predict")
    assert "memo.m4a: unreadable or truncated audio" in str(error.value)
    assert "convert it to WAV or FLAC (ffmpeg -i in.m4a out.wav)" in str(error.value)
    assert "1 file(s) that are not audio files are left out (.txt)" in caplog.text


def test_characters_the_model_never_saw_are_named(audio, sample, tmp_path, caplog):
    trained = audio.SpeechDataModule(str(sample))
    trained.setup("fit")
    one_utterance(tmp_path / "data", text="ÇA VA")
    dm = audio.SpeechDataModule(str(tmp_path / "data"), split_by="utterance", val_fraction=0.1, test_fraction=0)
    dm.use_spec(trained.spec)
    with caplog.at_level("WARNING"), pytest.raises(audio.DataError):  # one utterance cannot fill the splits
        dm.setup("fit")
    assert "characters the model never saw in training: 'ç'" in caplog.text


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.csv", b"", "m.csv is empty"),
        ("m.jsonl", b"", "m.jsonl has no utterances"),
        ("m.csv", b"path,transcript\n,hello\n", "m.csv row 2: no audio path"),
        ("m.jsonl", b'{"audio_filepath": "a.wav", "text": null}\n', "m.jsonl line 1: text None is not text"),
        (
            "m.jsonl",
            b'{"audio_filepath": ["a.wav"], "text": "hi"}\n',
            "m.jsonl line 1: audio_filepath ['a.wav'] is not",
        ),
        ("m.jsonl", b"[1, 2]\n", "m.jsonl line 1: no field 'audio_filepath'"),
    ],
    ids=["empty-csv", "empty-manifest", "short-row", "null-text", "list-path", "not-an-object"],
)
def test_malformed_lists_are_refused_by_name(audio, tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(audio.DataError) as error:
        audio.SpeechDataModule(str(tmp_path / name)).setup("fit")
    assert message in str(error.value)


def test_text_keeps_the_marks_of_every_script(package):
    normalize = importlib.import_module(f"{package.__name__}.datamodules.audio.text").normalize_text
    assert normalize("नमस्ते दुनिया!") == "नमस्ते दुनिया"  # virama and vowel signs are marks
    assert normalize("สวัสดีครับ") == "สวัสดีครับ"
    assert normalize("Tiếng Việt, rất hay.") == "tiếng việt rất hay"
    assert normalize("Don’t STOP") == "don't stop"


def test_too_few_speakers_are_refused_with_the_fix(audio, tmp_path):
    for n in range(6):
        one_utterance(tmp_path / "data" / f"u{n}", text="STOP")  # all speaker 1
    with pytest.raises(audio.DataError, match=r"1 speaker\(s\) cannot fill train, val and test splits by speaker"):
        audio.SpeechDataModule(str(tmp_path / "data")).setup("fit")
    with pytest.raises(audio.DataError, match=r"the val split would be empty; 6 utterance\(s\) are too few"):
        audio.SpeechDataModule(str(tmp_path / "data"), split_by="utterance", val_fraction=0.05, test_fraction=0).setup(
            "fit"
        )
    dm = audio.SpeechDataModule(str(tmp_path / "data"), split_by="utterance", val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [4, 1, 1]


def test_data_follows_the_checkpoint_sample_rate(audio, sample, caplog):
    trained = audio.SpeechDataModule(str(sample), sample_rate=16000, n_mels=40)
    trained.setup("fit")
    dm = audio.SpeechDataModule(str(sample), sample_rate=8000, n_mels=20, val_fraction=0.25, test_fraction=0.25)
    with caplog.at_level("WARNING"):
        dm.use_spec(trained.spec)
    assert "data.sample_rate 8000 -> 16000, data.n_mels 20 -> 40: the data follows the trained model" in caplog.text
    dm.setup("test")
    item = dm.splits["test"][0]
    batch = next(iter(dm.test_dataloader()))
    assert batch["features"].shape[2] == 40
    frames = dict(zip(batch["file"], batch["feature_lengths"].tolist(), strict=True))
    seconds = sf.info(item.file).duration
    assert abs(frames[str(item.file)] - (round(seconds * 16000) // 160 + 1)) <= 1  # frames of 16 kHz audio


def test_malformed_manifest_names_the_line(audio, tmp_path):
    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "a.wav"}\n')
    with pytest.raises(audio.DataError, match=r"m.jsonl line 1: no field 'text'"):
        audio.SpeechDataModule(str(tmp_path / "m.jsonl")).setup("fit")
    (tmp_path / "m.csv").write_text("file,words\na.wav,hello\n")
    with pytest.raises(audio.DataError, match="need 'path' and 'transcript'"):
        audio.SpeechDataModule(str(tmp_path / "m.csv")).setup("fit")


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (44100, 2)])
def test_resampling_keeps_duration_and_pitch(audio, tmp_path, rate, channels):
    t = np.arange(int(1.5 * rate)) / rate
    tone = np.sin(2 * math.pi * 440 * t).astype("float32")
    data = np.stack([tone, tone * 0.5], axis=1) if channels == 2 else tone
    sf.write(tmp_path / "tone.wav", data, rate)
    wave = audio.load_audio(tmp_path / "tone.wav", 16000)
    assert wave.ndim == 1 and abs(wave.numel() - 24000) <= 2
    spectrum = torch.fft.rfft(wave).abs()
    assert abs(spectrum.argmax().item() * 16000 / wave.numel() - 440) < 2
    expected = 0.75 if channels == 2 else 1.0  # stereo is averaged to mono
    assert abs(wave[2000:-2000].abs().max().item() - expected) < 0.02


@given(
    rates=st.sampled_from(
        [
            (44100, 16000),
            (48000, 16000),
            (22050, 16000),
            (8000, 16000),
            (11025, 22050),
            (16000, 8000),
            (32000, 24000),
            (44100, 48000),
            (7000, 16000),
            (96000, 44100),
        ]
    ),
    length=st.integers(1, 3000),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None, derandomize=True, database=None)
def test_resampling_gives_torchaudios_samples(package, rates, length, seed):
    """The loader's resampler computes torchaudio's sinc resampling its own faster way: the same samples, for
    common and odd rate pairs, up and down, and lengths from one sample to a few periods."""
    import torchaudio

    decode = importlib.import_module(f"{package.__name__}.datamodules.audio.decode")
    audio = torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, length).astype("float32"))
    ours = decode.resampler(*rates)(audio)
    expected = torchaudio.functional.resample(audio, *rates)
    assert ours.shape == expected.shape and torch.allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("container", "subtype"),
    [("WAV", "PCM_16"), ("AIFF", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"), ("WAV", "PCM_U8")],
)
def test_samples_are_soundfiles_floats_whichever_way_they_are_read(package, tmp_path, container, subtype):
    decode = importlib.import_module(f"{package.__name__}.datamodules.audio.decode")
    wave = np.random.default_rng(0).uniform(-1, 1, (4000, 2)).astype("float32")
    wave[:3, 0] = [-1.0, 0.0, 32767 / 32768]  # the ends of 16-bit PCM
    path = tmp_path / f"clip.{container.lower()}"
    sf.write(path, wave, 16000, format=container, subtype=subtype)
    samples, rate = decode.read_samples(path)
    expected, _ = sf.read(path, dtype="float32", always_2d=True)
    assert rate == 16000 and samples.dtype == np.float32 and np.array_equal(samples, expected)


def test_features_are_torchaudios_log_mel_normalized(package):
    """The pipeline takes the STFT's power itself (faster than torchaudio's abs and pow): the same log-mel, and the
    same state dict keys, so checkpoints from before load."""
    import torchaudio

    features = importlib.import_module(f"{package.__name__}.datamodules.audio.features")
    pipeline = features.FeaturePipeline(16000, n_mels=40)
    assert set(pipeline.state_dict()) == {"mel.spectrogram.window", "mel.mel_scale.fb"}
    torch.manual_seed(0)
    audio = torch.randn(2, 16000) * 0.1
    ours, frames = pipeline(audio, torch.tensor([16000, 16000]))
    mel = torch.log(torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=40)(audio) + 1e-6)
    expected = (mel - mel.mean(-1, keepdim=True)) / mel.std(-1, unbiased=False, keepdim=True)
    assert frames.tolist() == [101, 101] and torch.allclose(ours, expected.transpose(1, 2), atol=1e-4)


@pytest.mark.parametrize(
    ("bad", "message"),
    [(np.nan, "NaN or infinite"), (-np.inf, "NaN or infinite"), (np.inf, "NaN or infinite"), (-2000.0, "up to 2e+03")],
)
def test_each_bad_sample_is_found_wherever_it_is(package, bad, message):
    problem = importlib.import_module(f"{package.__name__}.datamodules.audio.decode").samples_problem
    samples = np.sin(np.arange(8000, dtype="float32") / 5)[:, None]
    assert problem(samples) is None and problem(samples[:0]) is None
    for where in (0, 4321, 7999):
        broken = samples.copy()
        broken[where] = bad
        assert message in problem(broken)


def test_spec_augment_masks_whole_bands_and_steps_within_its_widths(package):
    features = importlib.import_module(f"{package.__name__}.datamodules.audio.features")
    pipeline = features.FeaturePipeline(16000, n_mels=40, freq_mask=6, time_mask=8, n_masks=2)
    torch.manual_seed(0)
    audio = torch.randn(3, 16000) * 0.1
    lengths = torch.tensor([16000, 12000, 8000])
    clean, frames = pipeline(audio, lengths)
    for _ in range(20):
        masked, _ = pipeline(audio, lengths, augment=True)
        changed = (masked != clean) & (clean != 0)  # (B, T, n_mels); the padding stays 0 either way
        assert ((masked == clean) | (masked == 0)).all()
        for row in range(3):
            zeroed = changed[row, : frames[row]]
            steps, bands = zeroed.all(dim=1), zeroed.all(dim=0)  # steps with every band zeroed, and bands
            assert (zeroed == (steps[:, None] | bands[None, :])).all()  # nothing else is touched
            assert steps.sum() <= 2 * 7 and bands.sum() <= 2 * 5  # two spans each, narrower than its limit
    augmented = torch.stack([pipeline(audio, lengths, augment=True)[0] for _ in range(20)])
    assert (augmented == 0).float().mean() > (clean == 0).float().mean()  # it does mask


def test_batches_are_grouped_by_length(audio):
    lengths = [float(x) for x in torch.rand(200, generator=torch.Generator().manual_seed(0)) * 10]
    sampler = audio.LengthGroupedSampler(lengths, batch_size=10, shuffle=True, seed=0)
    order, next_epoch = list(sampler), list(sampler)
    assert sorted(order) == list(range(200)) and order != next_epoch
    spread = np.mean([np.ptp([lengths[i] for i in order[k : k + 10]]) for k in range(0, 200, 10)])
    assert spread < 1.5  # random batches of 10 from U(0, 10) spread ~8 s


class Utterances(torch.utils.data.Dataset):
    """Items as SpeechDataset makes them: features of different lengths (one a transposed view), their text."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> dict:
        frames = torch.arange((index % 3 + 2) * 40 * 80, dtype=torch.float32).reshape(80, -1) + index
        return {"features": frames.t(), "text": "ab"[: index % 2 + 1], "file": f"u{index}.flac"}


class SaysWhereItPadded:
    """The speech collate, and whether its padded features were in shared memory where it made them."""

    def __init__(self, collate) -> None:
        self.collate = collate

    def __call__(self, rows: list[dict]) -> dict:
        batch = self.collate(rows)
        return {**batch, "made_shared": batch["features"].is_shared()}


def test_speech_batches_are_padded_into_shared_memory_in_a_worker(package):
    """A loader worker pads the features straight into shared memory (nothing copies them there again on the
    way out), with pad_sequence's values; outside a worker they are an ordinary padded batch."""
    root = f"{package.__name__}.datamodules"
    collate = SaysWhereItPadded(importlib.import_module(f"{root}.audio.dataset").Collate(["a", "b"]))
    settings = importlib.import_module(f"{root}.workers").loader_settings(2)
    items = Utterances()
    in_process = [collate([items[i] for i in range(j, j + 3)]) for j in (0, 3)]
    from_workers = torch.utils.data.DataLoader(items, batch_size=3, collate_fn=collate, **settings)
    for in_workers, loader in ((False, in_process), (True, from_workers)):
        for index, batch in enumerate(loader):
            rows = [items[i]["features"] for i in range(3 * index, 3 * index + 3)]
            assert torch.equal(batch["features"], torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)), index
            assert batch["feature_lengths"].tolist() == [len(r) for r in rows]
            assert batch["made_shared"] == in_workers, in_workers
    waves = [torch.rand(n) for n in (5, 9, 7)]
    batch = collate.collate([{"audio": w, "text": "a", "file": "w.flac"} for w in waves])
    assert torch.equal(batch["audio"], torch.nn.utils.rnn.pad_sequence(waves, batch_first=True))


def test_bad_data_through_the_cli_is_a_clear_error_not_a_traceback(project, tmp_path):
    break_empty(one_utterance(tmp_path / "data"))
    args = ("fit", "--config", "configs/transcription.yaml", "--data.path", str(tmp_path / "data"))
    result = run_cli(project, *args, check=False, **ONE_THREAD)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "1-2-0000.wav: empty audio (0 samples)" in result.stderr


CLI_REFUSALS = {
    "nan-samples": (break_nan_samples, ["1-2-0000.wav: has NaN or infinite samples"]),
    "one-speaker": (lambda audio: None, ["1 speaker(s) cannot fill", "data.split_by: utterance"]),
}


@pytest.mark.parametrize(("damage", "names"), CLI_REFUSALS.values(), ids=CLI_REFUSALS.keys())
def test_refused_training_starts_no_run(project, tmp_path, damage, names):
    damage(one_utterance(tmp_path / "data"))
    runs = run_count(project)
    args = ("fit", "--config", "configs/transcription.yaml", "--data.path", str(tmp_path / "data"))
    assert_refused(run_cli(project, *args, check=False, **ONE_THREAD), *names)
    assert run_count(project) == runs, "a refused training must not create an MLflow run"


EPOCHS = 12


@pytest.fixture(scope="module")
def trained(project: Path):
    """One short training through `make train` (sample data included), shared by the tests below."""
    args = f"ARGS=--trainer.max_epochs {EPOCHS} --trainer.enable_progress_bar false"
    run_make(project, "train", "TASK=transcription", args, timeout=900, **ONE_THREAD)
    return mlflow_runs(project, "transcription")[0]


@pytest.mark.slow
def test_training_is_tracked_in_mlflow(project, trained):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert trained.info.status == "FINISHED"
    assert len(client.get_metric_history(trained.info.run_id, "train/loss")) >= EPOCHS
    assert len(client.get_metric_history(trained.info.run_id, "val/wer")) == EPOCHS
    assert {"test/wer", "test/cer", "test/loss"} <= set(trained.data.metrics)
    assert trained.data.params["encoder"] == "lstm"
    tables = {a.path for a in client.list_artifacts(trained.info.run_id, "examples/val_epoch000")}
    assert {"examples/val_epoch000/predictions.csv", "examples/val_epoch000/predictions.html"} <= tables
    table = pd.read_csv(client.download_artifacts(trained.info.run_id, "examples/test/predictions.csv"))
    assert list(table.columns) == ["file", "reference", "hypothesis"] and len(table) == 8


@pytest.mark.slow
def test_briefly_trained_model_beats_empty_output_and_the_most_common_word(project, audio, trained):
    # an empty transcript deletes every word: WER 1.0; a model that only babbles scores worse than that
    metrics = trained.data.metrics
    assert metrics["test/wer"] < 0.8, metrics
    # the logged baseline: always the most common word of the training speakers, scored on the test speakers
    dm = audio.SpeechDataModule(str(project / "data/sample/transcription"), val_fraction=0.15, test_fraction=0.15)
    dm.setup("fit")
    common = Counter(word for item in dm.splits["train"] for word in item.text.split()).most_common(1)[0][0]
    references = [item.text for item in dm.splits["test"]]
    expected = float(word_error_rate([common] * len(references), references))
    assert metrics["test/common_wer"] == pytest.approx(expected, abs=1e-4)
    assert metrics["test/wer"] < metrics["test/common_wer"] < 1.0


@pytest.mark.slow
def test_predict_transcribes_new_files(project, package, trained, tmp_path):
    speech = importlib.import_module(f"{package.__name__}.datamodules.audio.sample")
    engine = speech.Espeak()
    engine.voice("en-us+m3", rate=150, pitch=50)  # a setting the sample's speakers may not have
    texts = {"a.wav": "open the door", "b.flac": "seven one two"}
    for name, text in texts.items():
        sf.write(tmp_path / name, engine.say(text), speech.SAMPLE_RATE)
    stereo = np.stack([engine.say("stop")] * 2, axis=1)
    sf.write(tmp_path / "c.wav", stereo, speech.SAMPLE_RATE)
    run_make(project, "predict", "TASK=transcription", f"INPUT={tmp_path}", **ONE_THREAD)
    rows = pd.read_csv(project / "predictions" / "transcription.csv", keep_default_na=False)
    assert list(rows.columns) == ["file", "transcript"]
    assert [Path(f).name for f in rows["file"]] == ["a.wav", "b.flac", "c.wav"]  # in file order, not by length
    with open(project / "predictions" / "transcription.csv", newline="") as f:
        assert all(set(row["transcript"]) <= set("abcdefghijklmnopqrstuvwxyz '") for row in csv.DictReader(f))


def test_uninformative_predictions_are_named(package, caplog):
    """Four empty transcripts, or the same word for every file, are said; varied ones are not."""
    predict = importlib.import_module(f"{package.__name__}.predict")
    with caplog.at_level("WARNING"):
        predict.warn_if_uninformative([{"file": f, "transcript": ""} for f in "abcd"], "transcript")
        predict.warn_if_uninformative([{"file": f, "transcript": "stop"} for f in "abc"], "transcript")
        predict.warn_if_uninformative([{"file": "a", "transcript": "stop"}, {"file": "b", "transcript": "go"}],
                                      "transcript")  # fmt: skip
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("all 4 predictions have an empty transcript")
    assert messages[1].startswith("all 3 predictions have the same transcript 'stop'")
