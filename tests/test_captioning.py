"""Image captioning in a baked project: the three data formats, bad input, training via the CLI, prediction."""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import assert_refused, mlflow_runs, run_cli, run_count
from PIL import Image

CONFIG = "configs/captioning.yaml"
# One intra-op thread per training process: on a shared 2-core runner two threads oversubscribe the CPU, which
# made an epoch 2x slower in bench/captioning.py (small tensors, many ops).
THREADS = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def images(package):
    return importlib.import_module(f"{package.__name__}.datamodules.images")


@pytest.fixture(scope="module")
def text(package):
    return importlib.import_module(f"{package.__name__}.datamodules.images.text")


@pytest.fixture(scope="module")
def DataError(package):
    return importlib.import_module(f"{package.__name__}.datamodules.common").DataError


@pytest.fixture(scope="module")
def small_coco(package, tmp_path_factory) -> Path:
    """40 shape scenes in COCO format (each test copies what it breaks)."""
    sample = importlib.import_module(f"{package.__name__}.datamodules.images.sample")
    return sample.write_sample(tmp_path_factory.mktemp("coco"), seed=1, num_images=40)


def as_csv(coco: Path, out: Path) -> Path:
    data = json.loads(coco.read_text())
    names = {im["id"]: im["file_name"] for im in data["images"]}
    path = out / "captions.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerows([names[a["image_id"]], a["caption"]] for a in data["annotations"])
    return path


def as_jsonl(coco: Path, out: Path) -> Path:
    data = json.loads(coco.read_text())
    names = {im["id"]: im["file_name"] for im in data["images"]}
    shutil.copytree(coco.parent / "images", out, dirs_exist_ok=True)
    lines = [json.dumps({"file_name": names[a["image_id"]], "text": a["caption"]}) for a in data["annotations"]]
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return out


def copy_coco(coco: Path, out: Path) -> Path:
    shutil.copytree(coco.parent, out, dirs_exist_ok=True)
    return out / coco.name


@pytest.mark.parametrize("fmt", ["coco", "csv", "jsonl"])
def test_each_format_gives_leak_free_padded_batches(images, text, small_coco, tmp_path, fmt):
    path = {
        "coco": lambda: small_coco,
        "csv": lambda: as_csv(small_coco, tmp_path),
        "jsonl": lambda: as_jsonl(small_coco, tmp_path),
    }[fmt]()
    root = str(small_coco.parent / "images") if fmt == "csv" else None
    dm = images.ImageCaptionDataModule(
        str(path), image_root=root, image_size=32, batch_size=8, val_fraction=0.2, test_fraction=0.2
    )
    dm.setup("fit")
    files = {name: {str(p) for p, _ in dm.splits[name]} for name in ("train", "val", "test")}
    assert sum(map(len, files.values())) == 40
    assert not (files["train"] & files["val"] or files["train"] & files["test"] or files["val"] & files["test"])
    assert all(len(caps) == 5 for _, caps in dm.splits["train"])  # every caption of an image stays with it
    vocab = dm.spec.vocab
    assert vocab[:4] == ("<pad>", "<bos>", "<eos>", "<unk>") and "circle" in vocab and "," not in vocab
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["tokens"].shape[0] == 8
    for row, length in zip(batch["tokens"], batch["token_lengths"], strict=True):
        assert row[0] == text.BOS and row[length - 1] == text.EOS and (row[length:] == text.PAD).all()
    assert len(batch["captions"][0]) == 5 and batch["captions"][0][2] == batch["captions"][0][2].lower()
    again = images.ImageCaptionDataModule(str(path), image_root=root, val_fraction=0.2, test_fraction=0.2)
    again.setup("fit")
    assert again.splits == dm.splits and again.spec.vocab == dm.spec.vocab  # deterministic


def test_the_training_shift_is_randomcrop_with_edge_padding_in_two_copies(package):
    """The augmentation gives what torchvision's edge-padded random crop gives, from the same random draws."""
    import torch
    from torchvision.transforms import v2

    augment = importlib.import_module(f"{package.__name__}.datamodules.images.augment")
    for size, padding in ((32, 2), (9, 3), (5, 5), (224, 14)):
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
        crop, shift = v2.RandomCrop(size, padding=padding, padding_mode="edge"), augment.RandomShift(padding)
        seen = set()
        for seed in range(40):
            torch.manual_seed(seed)
            expected = crop(image)
            torch.manual_seed(seed)
            shifted = shift(image)
            assert shifted.dtype == torch.uint8 and torch.equal(shifted, expected), (size, padding, seed)
            seen.add(shifted.numpy().tobytes())
        assert len(seen) > 10  # it does shift, differently each time
    batch = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(augment.shift(batch, 3, -1)[..., :5], batch[..., 3:])  # leading dimensions pass through
    assert (augment.shift(batch, -20, -2) == batch[..., :1, :]).all()  # a shift past the edge is the edge row


def test_loader_workers_send_batches_by_name_and_a_killed_training_leaves_none_behind(project, small_coco):
    """Workers hand batches over by shared-memory name (no connection per tensor); a training killed with a batch
    in hand and its workers busy leaves nothing in /dev/shm (torch_shm_manager removes it). Images of 128 px: a
    batch's tensors under 64 KB travel by value."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import PACKAGE, project_env

    script = f"""
import os, psutil
from {PACKAGE}.datamodules.images import ImageCaptionDataModule
data = ImageCaptionDataModule({str(small_coco)!r}, image_size=128, batch_size=4, num_workers=2, val_fraction=0.2,
                              test_fraction=0.2)
data.setup("fit")
for step, batch in enumerate(data.train_dataloader()):
    if step == 2:  # a batch in hand, the next ones on their way
        workers = [str(p.pid) for p in psutil.Process().children()]
        print(" ".join(n for n in os.listdir("/dev/shm") if n.split("_")[1:2] and n.split("_")[1] in workers))
        os.kill(os.getpid(), 9)
"""
    killed = subprocess.run([sys.executable, "-c", script], cwd=project, env=project_env(project), text=True,
                            capture_output=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    names = killed.stdout.split()
    assert names, "no batch was in shared memory by name: the workers sent file descriptors"
    deadline = time.monotonic() + 30
    while (left := [n for n in names if os.path.exists(f"/dev/shm/{n}")]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"left in /dev/shm after the training was killed: {left}"


class OneBatch(torch.utils.data.Dataset):
    """Batches of a big tensor and the small ones a batch carries (lengths, token ids, a flag)."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "images": torch.full((4, 3, 64, 64), index, dtype=torch.uint8),  # 48 KB: small
            "features": torch.arange(20_000, dtype=torch.float32) + index,  # 80 KB: by name
            "lengths": torch.tensor([5, 3, index]),
            "tokens": torch.arange(12).reshape(3, 4)[:, 1:],  # a view
            "flags": torch.tensor([True, False]),
        }


def test_loader_workers_send_small_tensors_by_value_and_big_ones_by_name(package):
    """A shared-memory segment per tensor costs the training process 0.2 ms whatever its size: a batch's small
    tensors come inside the message, the big ones by name, all of them the worker's values."""
    settings = importlib.import_module(f"{package.__name__}.datamodules.workers").loader_settings(2)
    batches = list(torch.utils.data.DataLoader(OneBatch(), batch_size=None, **settings))
    for index, batch in enumerate(batches):
        expected = OneBatch()[index]
        assert all(torch.equal(batch[key], expected[key]) for key in expected), index
        assert batch["features"].is_shared()
        assert not any(batch[key].is_shared() for key in ("images", "lengths", "tokens", "flags"))


def break_missing_image(coco: Path) -> str:
    (coco.parent / "images" / "00003.png").unlink()
    return "00003.png' does not exist"


def break_unreadable_image(coco: Path) -> str:
    (coco.parent / "images" / "00004.png").write_bytes(b"not a png at all")
    return "00004.png' is not a readable image"


def break_unknown_image_id(coco: Path) -> str:
    data = json.loads(coco.read_text())
    data["annotations"][7]["image_id"] = 9999
    coco.write_text(json.dumps(data))
    return "annotations[7]: image_id 9999 is not in 'images'"


def break_empty_caption(coco: Path) -> str:
    data = json.loads(coco.read_text())
    data["annotations"][5]["caption"] = " . "
    coco.write_text(json.dumps(data))
    return "annotations[5]: caption for '00001.png' is empty"


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a few bytes, as a decompression bomb does."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def edit_coco(coco: Path, change) -> None:
    data = json.loads(coco.read_text())
    change(data)
    coco.write_text(json.dumps(data))


def break_bomb(coco: Path) -> str:
    (coco.parent / "images" / "00002.png").write_bytes(png_header(30000, 30000))
    return "00002.png' is 30000x30000 pixels (900 MP), more than data.max_image_pixels = 100,000,000"


def break_truncated_jpeg(coco: Path) -> str:
    image = Image.open(coco.parent / "images" / "00006.png").convert("RGB").resize((128, 128))
    image.save(coco.parent / "images" / "cut.jpg", quality=95)
    data = (coco.parent / "images" / "cut.jpg").read_bytes()
    (coco.parent / "images" / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])  # a valid header, half the scan
    edit_coco(coco, lambda d: d["images"][6].update(file_name="cut.jpg"))
    return "cut.jpg' is not a readable image (OSError: image file is truncated"


def break_parent_path(coco: Path) -> str:
    shutil.copy(coco.parent / "images" / "00001.png", coco.parent / "outside.png")
    edit_coco(coco, lambda d: d["images"][1].update(file_name="../outside.png"))
    return "outside.png' leaves the image folder"


def break_absolute_path(coco: Path) -> str:
    edit_coco(coco, lambda d: d["images"][1].update(file_name="/etc/hostname"))
    return "image '/etc/hostname' leaves the image folder"


def break_null_file_name(coco: Path) -> str:
    edit_coco(coco, lambda d: d["images"][2].update(file_name=None))
    return "annotations.json images[2]: file_name None is not a file name"


def break_list_image_id(coco: Path) -> str:
    edit_coco(coco, lambda d: d["annotations"][4].update(image_id=[0]))
    return "annotations.json annotations[4]: image_id [0] is not in 'images'"


def break_number_caption(coco: Path) -> str:
    edit_coco(coco, lambda d: d["annotations"][8].update(caption=17))
    return "annotations.json annotations[8]: caption 17 is not text"


@pytest.mark.parametrize(
    "breaks",
    [
        break_missing_image,
        break_unreadable_image,
        break_unknown_image_id,
        break_empty_caption,
        break_bomb,
        break_truncated_jpeg,
        break_parent_path,
        break_absolute_path,
        break_null_file_name,
        break_list_image_id,
        break_number_caption,
    ],
)
def test_bad_input_is_named_or_skipped_and_listed(images, DataError, small_coco, tmp_path, caplog, breaks):
    coco = copy_coco(small_coco, tmp_path)
    message = breaks(coco)
    with pytest.raises(DataError, match="on_bad_input: skip") as error:
        images.ImageCaptionDataModule(str(coco)).setup("fit")
    assert message in str(error.value)
    dm = images.ImageCaptionDataModule(str(coco), on_bad_input="skip")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert "skipped" in caplog.text and message in caplog.text
    assert dm.skipped and all(message in reason or "is not in 'images'" in reason for reason in dm.skipped)
    captions = sum(len(caps) for split in dm.splits.values() for _, caps in split)
    dropped = [r for r in dm.skipped if r.startswith("annotations.json annotations[")]
    assert captions + len(dropped) == 200, "every caption is kept or listed as skipped"
    next(iter(dm.train_dataloader()))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"images": [], "annotations": [', "annotations.json line 1 column 32: not valid JSON"),
        ('{"images": "caf\xe9"}'.encode("latin-1"), "annotations.json line 1: byte 0xE9 is not UTF-8"),
        (b'[{"id": 1}]', "annotations.json is not a COCO captions file"),
        (b"", "annotations.json line 1 column 1: not valid JSON"),
    ],
    ids=["cut-json", "latin-1", "not-coco", "empty"],
)
def test_unreadable_caption_files_are_refused_by_name(images, DataError, small_coco, tmp_path, content, message):
    coco = copy_coco(small_coco, tmp_path)
    coco.write_bytes(content)
    with pytest.raises(DataError) as error:
        images.ImageCaptionDataModule(str(coco), on_bad_input="skip").setup("fit")
    assert message in str(error.value)


def test_images_to_caption_are_captioned_or_refused_by_name(images, DataError, small_coco, tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(small_coco.parent / "images" / "00000.png", folder / "scene.png")
    (folder / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(100))
    (folder / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING), pytest.raises(DataError) as error:
        images.ImageCaptionDataModule(predict_path=str(folder)).setup("predict")
    assert "IMG_0001.HEIC' is not a readable image" in str(error.value) and "convert it to PNG or JPEG" in str(
        error.value
    )
    assert "1 file(s) that are not images are left out (.txt)" in caplog.text
    dm = images.ImageCaptionDataModule(predict_path=str(folder), on_bad_input="skip")
    dm.setup("predict")
    assert [f.name for f in dm.predict_files] == ["scene.png"] and "IMG_0001.HEIC" in dm.skipped[0]


def test_data_follows_the_checkpoint_image_size_and_says_so(images, small_coco, caplog):
    trained = images.CaptionSpec(vocab=("<pad>", "<bos>", "<eos>", "<unk>", "circle"), image_size=24, common_caption="")
    dm = images.ImageCaptionDataModule(str(small_coco), image_size=64, batch_size=4)
    with caplog.at_level(logging.WARNING):
        dm.use_spec(trained)
    assert "data.image_size 64 -> 24: the data follows the trained model" in caplog.text
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["image"].shape[-2:] == (24, 24)


def test_pixel_limit_is_configurable(images, DataError, small_coco, tmp_path):
    with pytest.raises(
        DataError, match=r"00000.png' is 64x64 pixels \(0 MP\), more than data.max_image_pixels = 4,000"
    ):
        images.ImageCaptionDataModule(str(small_coco), max_image_pixels=4000).setup("fit")
    images.ImageCaptionDataModule(str(small_coco), max_image_pixels=64 * 64).setup("fit")


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: ("\ufeff" + text).encode(),
        lambda text: pd.read_csv(io.StringIO(text)).to_csv(sep="\t", index=False).encode(),
        lambda text: ("\ufeff" + text).encode("utf-16-le"),
        lambda text: text.replace("image,caption", "Image, Caption").encode(),
    ],
    ids=["bom", "tabs", "utf-16", "header-case-and-spaces"],
)
def test_odd_but_valid_csv_reads_like_the_plain_one(images, small_coco, tmp_path, encode):
    plain = as_csv(small_coco, tmp_path)
    odd = tmp_path / "odd.csv"
    odd.write_bytes(encode(plain.read_text()))
    root = str(small_coco.parent / "images")
    read = [images.ImageCaptionDataModule(str(p), image_root=root) for p in (plain, odd)]
    for dm in read:
        dm.setup("fit")
    assert read[0].splits == read[1].splits and read[0].spec == read[1].spec


def test_captions_keep_the_letters_of_every_script(text):
    assert text.words("Un café, s'il vous plaît.") == ["un", "café", "s'il", "vous", "plaît"]
    assert text.words("कुत्ता गेंद से खेलता है") == ["कुत्ता", "गेंद", "से", "खेलता", "है"]  # vowel signs and virama stay
    assert text.words("كلب يلعب") == ["كلب", "يلعب"]
    assert text.words("Con chó đang chơi") == ["con", "chó", "đang", "chơi"]
    assert text.words("一只狗在草地上。") == [
        "一",
        "只",
        "狗",
        "在",
        "草",
        "地",
        "上",
    ]  # unspaced: one word a character
    assert text.words("ＦＵＬＬ width") == ["full", "width"]


def test_a_split_left_empty_is_refused_before_training(images, DataError, small_coco, tmp_path):
    coco = copy_coco(small_coco, tmp_path)
    for image in sorted((coco.parent / "images").iterdir())[:37]:
        image.write_bytes(b"broken")
    with pytest.raises(DataError, match=r"the (val|test) split is empty \(3 usable images, 185 entries skipped\)"):
        images.ImageCaptionDataModule(str(coco), on_bad_input="skip").setup("fit")


def test_missing_image_root_and_format_are_explained(images, DataError, small_coco, tmp_path):
    with pytest.raises(DataError, match="image root .*nowhere.* does not exist"):
        images.ImageCaptionDataModule(str(small_coco), image_root=str(tmp_path / "nowhere")).setup("fit")
    with pytest.raises(DataError, match="needs the columns 'image,caption'"):
        (tmp_path / "bad.csv").write_text("file,text\na.png,a dog\n")
        images.ImageCaptionDataModule(str(tmp_path / "bad.csv")).setup("fit")
    with pytest.raises(DataError, match="cannot tell the format"):
        (tmp_path / "x.xml").write_text("")
        images.ImageCaptionDataModule(str(tmp_path / "x.xml")).setup("fit")
    (tmp_path / "Flickr8k.token.txt").write_text("1000268201.jpg#0\tA child in a pink dress .\n")
    with pytest.raises(DataError, match=r"Flickr8k.token.txt needs the columns 'image,caption'; it has \['1000268201"):
        images.ImageCaptionDataModule(str(tmp_path / "Flickr8k.token.txt")).setup("fit")


def test_a_folder_is_read_as_the_captions_file_it_holds_or_refused_naming_what_it_holds(
    images, DataError, small_coco, tmp_path, caplog
):
    folder = copy_coco(small_coco, tmp_path / "coco").parent  # annotations.json and images/
    with caplog.at_level("INFO"):
        images.ImageCaptionDataModule(str(folder), val_fraction=0.2, test_fraction=0.2).setup("fit")
    assert f"reading {small_coco.name} (COCO captions)" in caplog.text
    as_csv(small_coco, folder)  # a second candidate
    csv_name = next(p.name for p in folder.iterdir() if p.suffix == ".csv")
    with pytest.raises(DataError, match=rf"holds several data files \({small_coco.name}, {csv_name}\)"):
        images.ImageCaptionDataModule(str(folder)).setup("fit")
    nothing = r"not a folder with metadata.jsonl and holds no data file \(\.json \(COCO captions\).*holds \.png"
    with pytest.raises(DataError, match=nothing):
        images.ImageCaptionDataModule(str(folder / "images")).setup("fit")


CLI_REFUSALS = {
    "truncated-jpeg": break_truncated_jpeg,
    "outside-the-image-folder": break_parent_path,
    "null-file-name": break_null_file_name,
}


@pytest.mark.parametrize("breaks", CLI_REFUSALS.values(), ids=CLI_REFUSALS.keys())
def test_refused_training_starts_no_run(project, small_coco, tmp_path, breaks):
    coco = copy_coco(small_coco, tmp_path)
    message = breaks(coco)
    runs = run_count(project)
    result = run_cli(project, "fit", "--config", CONFIG, "--data.path", str(coco), check=False, **THREADS)
    assert_refused(result, message, "on_bad_input: skip")
    assert run_count(project) == runs, "a refused training must not create an MLflow run"


def test_skipped_entries_are_listed_in_the_run_and_no_test_split_is_fine(project, small_coco, tmp_path):
    from mlflow import MlflowClient

    coco = copy_coco(small_coco, tmp_path)
    message = break_truncated_jpeg(coco)
    quick = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    args = [
        "--data.path",
        str(coco),
        "--data.on_bad_input",
        "skip",
        "--data.test_fraction",
        "0",
        "--data.image_size",
        "32",
    ]
    run_cli(project, "fit", "--config", CONFIG, *args, *quick, "--model.beam_size", "1", **THREADS)
    run = mlflow_runs(project, "captioning")[0]
    assert run.info.status == "FINISHED" and not [m for m in run.data.metrics if m.startswith("test/")]
    listed = Path(
        MlflowClient(f"sqlite:///{project / 'mlflow.db'}").download_artifacts(run.info.run_id, "skipped_inputs.txt")
    )
    lines = listed.read_text().splitlines()
    assert len(lines) == 5 and all(message in line for line in lines)  # the image's five captions, each named


@pytest.fixture(scope="module")
def trained(project, package):
    """A short training on the sample data via the CLI, as a user runs it; returns its MLflow run."""
    importlib.import_module(f"{package.__name__}.sample_data").write("captioning", project / "data" / "sample")
    run_cli(
        project,
        "fit",
        "--config",
        CONFIG,
        "--trainer.max_epochs",
        "4",
        "--data.image_size",
        "48",
        "--model.beam_size",
        "2",
        timeout=400,
        **THREADS,
    )
    return mlflow_runs(project, "captioning")[0]


def test_fit_logs_losses_bleu_and_caption_tables(project, trained):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert trained.info.status == "FINISHED"
    assert len(client.get_metric_history(trained.info.run_id, "train/loss")) >= 5
    assert {"test/bleu1", "test/bleu4", "val/bleu4", "val/loss"} <= set(trained.data.metrics)
    folders = [a.path for a in client.list_artifacts(trained.info.run_id, "examples")]
    assert folders == ["examples/test"] + [f"examples/val_epoch{e:03d}" for e in range(4)]
    files = {Path(a.path).name for a in client.list_artifacts(trained.info.run_id, folders[-1])}
    assert {"predictions.csv", "predictions.html", "figure.png", "0.png"} <= files
    assert (project / "runs" / "captioning" / trained.info.run_id / "checkpoints" / "best.ckpt").exists()


def test_brief_training_beats_most_common_caption(project, trained, images, text, monkeypatch):
    from torchmetrics.text import BLEUScore

    monkeypatch.chdir(project)  # the split hashes image paths as data.path spells them: relative, as the config does
    dm = images.ImageCaptionDataModule("data/sample/captioning/annotations.json")
    dm.setup("fit")
    common = Counter(" ".join(text.words(c)) for _, caps in dm.splits["train"] for c in caps).most_common(1)[0][0]
    refs = [[" ".join(text.words(c)) for c in caps] for _, caps in dm.splits["test"]]
    baseline = float(BLEUScore(n_gram=4)([common] * len(refs), refs))
    assert trained.data.metrics["test/bleu4"] > baseline + 0.1, (trained.data.metrics["test/bleu4"], baseline)
    assert trained.data.metrics["test/common_bleu4"] == pytest.approx(baseline, abs=1e-4)  # the run logs it too


def test_predict_captions_images_of_any_mode_and_size(project, trained, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    scene = Image.open(project / "data/sample/captioning/images/00000.png")
    scene.convert("L").save(folder / "gray.png")
    scene.convert("RGBA").save(folder / "rgba.png")
    scene.convert("P").save(folder / "palette.png")
    scene.resize((3, 2)).save(folder / "tiny.png")
    scene.resize((3000, 2000)).save(folder / "huge.jpg")
    scene.save(folder / "bitmap.bmp")
    Image.new("I;16", (40, 30), 3000).save(folder / "deep.png")
    out = tmp_path / "predictions"
    predict = ["predict", "--config", CONFIG, "--ckpt_path", "best", "--data.predict_path", str(folder)]
    predict += ["--trainer.logger", "false", "--predictions.output_dir", str(out)]
    run_cli(project, *predict)
    rows = pd.read_csv(out / "captioning.csv")
    assert sorted(Path(f).name for f in rows["file"]) == sorted(p.name for p in folder.iterdir())
    assert rows["caption"].str.split().str.len().min() >= 2  # words, not empty strings

    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    failed = run_cli(project, *predict, check=False)
    assert failed.returncode != 0 and "broken.png' is not a readable image" in failed.stderr


def test_encoder_weights_file_freezing_and_decoding(package, images, tmp_path):
    import torch
    import torchvision

    captioning = importlib.import_module(f"{package.__name__}.tasks.captioning")
    weights = torchvision.models.resnet18().state_dict()
    torch.save(weights, tmp_path / "resnet18.pth")
    vocab = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "circle"]
    spec = {"vocab": vocab, "image_size": 64, "common_caption": "a red circle"}
    model = captioning.ImageCaptioner(
        encoder="resnet18", weights_path=str(tmp_path / "resnet18.pth"), freeze_encoder=True, d_model=32
    )  # a new model reads the file; one rebuilt from a checkpoint (spec given) gets its weights from the checkpoint
    model.configure(images.CaptionSpec(**spec))
    assert torch.equal(model.encoder.trunk[0].weight, weights["conv1.weight"])
    model.train()
    assert not model.encoder.training and not any(p.requires_grad for p in model.encoder.parameters())
    assert model.decoder.training and all(p.requires_grad for p in model.decoder.parameters())
    memory = model.eval().encode(torch.randn(2, 3, 64, 64))
    for beam in (1, 3):
        captions = model.generate(memory, beam_size=beam)
        assert len(captions) == 2 and all(set(c.split()) <= set(vocab[3:]) for c in captions)
    (tmp_path / "bad.pth").write_bytes(b"nope")
    with pytest.raises(ValueError, match="cannot load resnet18 weights from"):
        captioning.ImageCaptioner(encoder="resnet18", weights_path=str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError, match="unknown encoder 'resnet9000'"):
        captioning.ImageCaptioner(spec=spec, encoder="resnet9000")
