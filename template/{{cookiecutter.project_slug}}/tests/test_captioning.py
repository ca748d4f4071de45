"""Image captioning: the data module on the sample data, a bad input, a tiny training and a prediction."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import PROJECT, run_cli
from PIL import Image

from {{ cookiecutter.package_name }}.datamodules.common import DataError
from {{ cookiecutter.package_name }}.datamodules.images import ImageCaptionDataModule
from {{ cookiecutter.package_name }}.datamodules.images.text import BOS

CONFIG = str(PROJECT / "configs" / "captioning.yaml")


def test_sample_data_gives_batches_split_by_image(sample_path):
    dm = ImageCaptionDataModule(str(sample_path("captioning")), batch_size=4)
    dm.setup("fit")
    train, val = ({str(p) for p, _ in dm.splits[s]} for s in ("train", "val"))
    assert train and val and not train & val
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[:2] == (4, 3) and (batch["tokens"][:, 0] == BOS).all()
    assert len(batch["captions"]) == 4 and all(batch["captions"])


def test_unknown_image_id_is_named(sample_path, tmp_path):
    path = sample_path("captioning")
    data = json.loads(path.read_text())
    data["annotations"][3]["image_id"] = -1
    broken = tmp_path / "annotations.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotations\[3\]: image_id -1 is not in 'images'"):
        ImageCaptionDataModule(str(broken), image_root=str(path.parent / "images")).setup("fit")


def test_tiny_training_then_predict(sample_path, tmp_path):
    path = str(sample_path("captioning"))
    run_cli(
        tmp_path,
        "fit",
        "--config",
        CONFIG,
        "--data.path",
        path,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.limit_test_batches",
        "1",
    )
    images = tmp_path / "images"
    images.mkdir()
    for name in ("00000.png", "00001.png"):
        shutil.copy(sample_path("captioning").parent / "images" / name, images / name)
    Image.new("L", (17, 9), 128).save(images / "gray.png")
    run_cli(
        tmp_path,
        "predict",
        "--config",
        CONFIG,
        "--data.path",
        path,
        "--ckpt_path",
        "last",
        "--data.predict_path",
        str(images),
        "--trainer.logger",
        "false",
    )
    rows = pd.read_csv(tmp_path / "predictions" / "captioning.csv")
    assert len(rows) == 3 and set(rows.columns) == {"file", "caption"}
