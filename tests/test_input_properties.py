"""Property tests of the input contract: a damaged file is read, or refused with a DataError, never anything else.

Each test takes a small valid data set of one modality, damages it at random (``mutations.py``: cells, columns,
rows, bytes, encodings, JSON fields, truncation, an empty file) and builds the DataModule as the CLI does. What is
read must give finite batches; what is refused must be a ``DataError``, which the CLI prints as one ``ERROR:``
line. Any other exception is a bug that hypothesis shrinks to a small example. Runs are derandomized (the same
examples every time) and bounded in number and time, so CI spends a fixed budget.
"""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mutations import apply, byte_mutations, mutations
from PIL import Image

BUDGET = settings(
    max_examples=300,
    deadline=timedelta(seconds=10),  # one example takes well under a second; a hang or a full decode does not
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def set_up(data: SimpleNamespace, make: Callable[[], Any], stage: str = "fit") -> Any | None:
    """The DataModule ``make`` builds, set up for ``stage``, as the CLI does; None when it refuses the data with a
    DataError (recorded as an event)."""
    try:
        module = make()
        module.setup(stage)
    except data.DataError as error:
        event(f"refused: {refusal(error)}")
        return None
    event("read")
    return module


def damaged_copy(source: Path, folder: Path, target: str, changes: Any) -> None:
    """The data set of ``source`` copied into ``folder``, with its file ``target`` damaged by ``changes``."""
    shutil.copytree(source, folder, dirs_exist_ok=True)
    (folder / target).write_bytes(apply((folder / target).read_bytes(), changes))


def read_batches(dm: Any) -> None:
    assert finite(next(iter(dm.train_dataloader()))) and finite(next(iter(dm.val_dataloader())))


@pytest.fixture(scope="module")
def data(package) -> SimpleNamespace:
    root = f"{package.__name__}.datamodules"
    return SimpleNamespace(
        DataError=importlib.import_module(f"{root}.common").DataError,
        PriceDataModule=importlib.import_module(f"{root}.timeseries").PriceDataModule,
        ImageCaptionDataModule=importlib.import_module(f"{root}.images").ImageCaptionDataModule,
        SpeechDataModule=importlib.import_module(f"{root}.audio").SpeechDataModule,
    )


def refusal(error: Exception) -> str:
    """The kind of a refusal, for hypothesis' statistics (``--hypothesis-show-statistics``): its words, no values."""
    words = [w for w in str(error).split() if w.isalpha()]
    return " ".join(words[:6])


def finite(batch: dict) -> bool:
    return all(v.isfinite().all() for v in batch.values() if hasattr(v, "is_floating_point") and v.is_floating_point())


# ---- prices -------------------------------------------------------------------------------------------------------
def price_file() -> bytes:
    days = pd.bdate_range("2024-01-01", periods=45).strftime("%Y-%m-%d")
    rows = [
        f"{s},{d},{p:.2f},{v}" for s in "AB" for d, p, v in zip(days, np.linspace(10, 20, 45), range(45), strict=True)
    ]
    return ("symbol,date,price,volume\n" + "\n".join(rows) + "\n").encode()


@BUDGET
@given(changes=mutations)
def test_price_files_are_read_or_refused(data, changes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prices.csv"
        path.write_bytes(apply(price_file(), changes))
        settings = {"covariates": ["volume"], "lookback": 8, "horizon": 3, "batch_size": 16}
        dm = set_up(data, lambda: data.PriceDataModule(path=str(path), **settings))
        if dm is None:
            return
        read_batches(dm)

        def following() -> Any:  # predict follows what the training data made, as from a checkpoint
            predict = data.PriceDataModule(path=str(path), predict_path=str(path), **settings)
            predict.use_spec(dm.spec)
            return predict

        predict = set_up(data, following, "predict")
        if predict is None:
            return
        batch = next(iter(predict.predict_dataloader()))
        assert finite(batch) and all(len(dates) == 3 for dates in batch["dates"])
        for dates, past in zip(batch["dates"], batch["past_dates"], strict=True):
            assert pd.Timestamp(dates[0]) > pd.Timestamp(past[-1]), "forecasts start after the last row"


# ---- captioned images ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def captioned(tmp_path_factory) -> Path:
    """Eight small images (PNG, JPEG, palette, grayscale) with two captions each, as COCO and as CSV."""
    folder = tmp_path_factory.mktemp("captioned")
    (folder / "images").mkdir()
    images, annotations, rows = [], [], ["image,caption"]
    for i in range(8):
        name = f"{i}.jpg" if i % 3 == 0 else f"{i}.png"
        image = Image.new("RGB", (24 + i, 20), (30 * i, 100, 200))
        (image.convert("P") if i == 4 else image.convert("L") if i == 5 else image).save(folder / "images" / name)
        images.append({"id": i, "file_name": name})
        for caption in (f"a shape number {i}", f"colour {i} on grey"):
            annotations.append({"image_id": i, "caption": caption})
            rows.append(f"{name},{caption}")
    (folder / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations}, indent=0))
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    return folder


@BUDGET
@given(
    target=st.sampled_from(["annotations.json", "captions.csv", "images/0.jpg", "images/1.png"]),
    changes=mutations,
    image_changes=byte_mutations,
    policy=st.sampled_from(["error", "skip"]),
)
def test_caption_data_is_read_or_refused(data, captioned, target, changes, image_changes, policy):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        damaged_copy(captioned, root, target, image_changes if target.startswith("images") else changes)
        path = root / ("captions.csv" if target == "captions.csv" else "annotations.json")
        dm = set_up(
            data,
            lambda: data.ImageCaptionDataModule(
                str(path), image_size=16, batch_size=4, val_fraction=0.25, test_fraction=0.25, on_bad_input=policy
            ),
        )
        if dm is not None:
            read_batches(dm)


# ---- speech -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """Six speakers with two one-second utterances each, listed in a CSV and a JSONL manifest."""
    folder = tmp_path_factory.mktemp("speech")
    rows, lines = ["path,transcript,client_id"], []
    for speaker in range(6):
        for n, text in enumerate(("go left", "stop")):
            name = f"s{speaker}_{n}.wav"
            tone = 0.2 * np.sin(np.arange(16000) * (0.05 + 0.01 * speaker + 0.02 * n))
            sf.write(folder / name, tone.astype("float32"), 16000, subtype="PCM_16" if n else "FLOAT")
            rows.append(f"{name},{text},spk{speaker}")
            lines.append(json.dumps({"audio_filepath": name, "text": text, "speaker": f"spk{speaker}"}))
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@BUDGET
@given(
    target=st.sampled_from(["data.csv", "manifest.jsonl", "s0_0.wav", "s1_1.wav"]),
    changes=mutations,
    audio_changes=byte_mutations,
    policy=st.sampled_from(["error", "skip"]),
)
def test_speech_data_is_read_or_refused(data, speech, target, changes, audio_changes, policy):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        damaged_copy(speech, root, target, audio_changes if target.endswith(".wav") else changes)
        path = root / ("manifest.jsonl" if target == "manifest.jsonl" else "data.csv")
        dm = set_up(
            data,
            lambda: data.SpeechDataModule(
                str(path), n_mels=16, batch_size=4, val_fraction=0.2, test_fraction=0.2, on_bad_input=policy
            ),
        )
        if dm is not None:
            read_batches(dm)
