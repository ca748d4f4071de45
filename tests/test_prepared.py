"""Prepared data (``make prepare-data``, ``data.prepared``): the same data as the files, sharded across DDP ranks,
resumed mid-epoch, refused when it is other data.

One project with the captioning and transcription tasks; each sample set is prepared once for the module.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PACKAGE, Store, assert_refused, bake, project_env, run_cli, run_make

pytestmark = pytest.mark.slow
TESTS = str(Path(__file__).parent)
SHORT = ["--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", "--test_after_fit", "false"]


# Smaller sample sets than the bundled ones (1000 images, 480 utterances): the same formats, half the preparation
SAMPLES = {"captioning": ("images", "num_images=400"), "transcription": ("audio", "speakers=20, utterances=12")}


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A captioning + transcription project whose sample sets are prepared under data/prepared/<task>."""
    proj = bake(tmp_path_factory.mktemp("prepared"), price_forecasting=False)
    for task, (modality, size) in SAMPLES.items():
        folder = f"data/sample/{task}"
        write = f"from {PACKAGE}.datamodules.{modality}.sample import write_sample; from pathlib import Path; "
        write += f"Path('{folder}/.complete').write_text(str(write_sample(Path('{folder}'), {size})))"
        subprocess.run([sys.executable, "-c", write], cwd=proj, env=project_env(proj), check=True, timeout=300)
        done = run_make(proj, "prepare-data", f"TASK={task}", timeout=600)
        assert f"Prepared data/prepared/{task}" in done.stdout
    return proj


def fit(proj: Path, task: str, store: Store, *args: str, check: bool = True, **env: str):
    return run_cli(proj, "fit", "--config", f"configs/{task}.yaml", *SHORT, *args, check=check, **store.env, **env)


def metrics(store: Store, task: str) -> dict[str, float]:
    (run,) = store.runs(task)
    return run.data.metrics


def read_batches(folder: Path) -> dict[int, list[tuple[int, int, str]]]:
    """What each rank trained on: (epoch, global step, file) per item, in order."""
    seen = {}
    for file in sorted(folder.glob("rank*.txt")):
        rows = [line.split(" ", 2) for line in file.read_text().splitlines()]
        seen[int(file.stem[4:])] = [(int(e), int(s), f) for e, s, f in rows]
    return seen


def test_preparing_unchanged_data_again_does_nothing(proj: Path) -> None:
    manifest = proj / "data/prepared/captioning/prepared.json"
    before = manifest.stat().st_mtime_ns
    again = run_make(proj, "prepare-data", "TASK=captioning")
    assert "Unchanged, nothing to do" in again.stdout and manifest.stat().st_mtime_ns == before
    spec = json.loads(manifest.read_text())
    assert spec["counts"]["train"] > 0 and spec["spec"]["image_size"] == 64


@pytest.mark.parametrize(
    ("task", "limits", "metric"),
    [
        ("captioning", ["--trainer.limit_train_batches", "6", "--data.batch_size", "16"], "val/loss"),
        ("transcription", ["--trainer.limit_train_batches", "4", "--data.batch_size", "8"], "val/loss"),
    ],
)
def test_training_from_prepared_data_matches_training_from_files(
    proj: Path, tmp_path: Path, task: str, limits: list[str], metric: str
) -> None:
    """Same seed, same budget: the validation loss from prepared data is the one from the files within 10% (the
    training order differs: LitData shuffles its chunks, the files' loader its indices), and the model trained on
    files, validated on the prepared validation split, scores what it scores on the files' (within 0.1%)."""
    files, prepared = Store(tmp_path, "files"), Store(tmp_path, "prepared")
    quick = ["--trainer.max_epochs", "1", *limits]
    fit(proj, task, files, *quick)
    fit(proj, task, prepared, *quick, "--data.prepared", f"data/prepared/{task}")
    ours, theirs = metrics(files, task)[metric], metrics(prepared, task)[metric]
    assert theirs == pytest.approx(ours, rel=0.10), (ours, theirs)

    (run,) = files.runs(task)  # its one epoch's validation is the model's score on the files' validation split
    args = ["--config", f"configs/{task}.yaml", *SHORT[:4], "--ckpt_path", run.info.run_id]
    run_cli(proj, "validate", *args, "--data.prepared", f"data/prepared/{task}", **files.env)
    validated = max(files.runs(task), key=lambda r: r.info.start_time)
    on_files, on_prepared = ours, validated.data.metrics[metric]
    assert validated.info.run_id != run.info.run_id and on_prepared == pytest.approx(on_files, rel=1e-3)


def test_two_ddp_ranks_see_disjoint_shards_that_cover_the_training_split_once(proj: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "ddp")
    args = ["--config", "configs/trainer/ddp.yaml", "--trainer.devices", "2", "--trainer.max_epochs", "1"]
    args += ["--data.prepared", "data/prepared/captioning", "--data.batch_size", "40"]  # 320 items: 4 per rank
    args += ["--trainer.limit_val_batches", "1", "--trainer.callbacks+=batches.RecordBatches"]
    fit(proj, "captioning", store, *args, PYTHONPATH=TESTS, BATCHES_DIR=str(tmp_path))
    seen = read_batches(tmp_path)
    assert sorted(seen) == [0, 1]
    ranks = [{f for _, _, f in rows} for rows in seen.values()]
    assert all(len(rows) == len(files) for rows, files in zip(seen.values(), ranks, strict=True)), "an item twice"
    assert not ranks[0] & ranks[1], "both ranks trained on the same item"
    manifest = json.loads((proj / "data/prepared/captioning/prepared.json").read_text())
    assert len(ranks[0] | ranks[1]) == manifest["counts"]["train"], "the ranks together missed items"


def test_a_training_killed_mid_epoch_resumes_the_epoch_where_it_stopped(proj: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "resume")
    args = [sys.executable, "-m", PACKAGE, "fit", "--config", "configs/captioning.yaml", *SHORT]
    args += ["--data.prepared", "data/prepared/captioning", "--data.batch_size", "20", "--trainer.max_epochs", "1"]
    args += ["--trainer.limit_val_batches", "1", "--checkpoint.every_n_train_steps", "4"]
    args += ["--checkpoint.monitor", "null"]  # a monitored metric would defer the step's save to validation
    args += ["--trainer.callbacks+=batches.RecordBatches"]
    env = project_env(proj, PYTHONPATH=TESTS, BATCHES_DIR=str(tmp_path), KILL_AT_STEP="6", **store.env)
    killed = subprocess.run(args, cwd=proj, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    before = [f for _, step, f in read_batches(tmp_path)[0] if step < 4]  # what last.ckpt (step 4) had trained on
    (tmp_path / "rank0.txt").unlink()
    resume = "ARGS=--trainer.callbacks+=batches.RecordBatches --trainer.enable_progress_bar false"
    resume += " --test_after_fit false --trainer.limit_val_batches 1 --data.prepared data/prepared/captioning"
    resume += " --data.batch_size 20 --trainer.max_epochs 1 --trainer.accelerator cpu"
    run_make(proj, "resume", "TASK=captioning", resume, PYTHONPATH=TESTS, BATCHES_DIR=str(tmp_path), **store.env)
    after = [f for epoch, _, f in read_batches(tmp_path)[0] if epoch == 0]
    assert after, "the resumed training did not continue the epoch"
    assert not set(before) & set(after), "items trained on before the checkpoint were trained on again"
    manifest = json.loads((proj / "data/prepared/captioning/prepared.json").read_text())
    assert len(before) + len(after) == len(set(before) | set(after)) == manifest["counts"]["train"]


def test_prepared_data_of_another_task_or_settings_is_refused_by_name(proj: Path, tmp_path: Path) -> None:
    store = Store(tmp_path, "refused")
    other = fit(proj, "captioning", store, "--data.prepared", "data/prepared/transcription", check=False)
    assert_refused(other, "data/prepared/transcription", "SpeechDataModule", "ImageCaptionDataModule")
    settings = fit(proj, "captioning", store, "--data.prepared", "data/prepared/captioning", "--data.min_freq",
                   "2", check=False)  # fmt: skip
    assert_refused(settings, "data.min_freq is 2 here but 1 there")
    plain = fit(proj, "captioning", store, "--data.prepared", "data/sample/captioning", check=False)
    assert_refused(plain, "data/sample/captioning", "is not prepared data", "make prepare-data")


def test_a_large_jpeg_is_decoded_at_reduced_size_upright_and_batches_leave_the_loader_as_uint8(package, tmp_path):
    import importlib

    import numpy as np
    import torch
    from PIL import Image

    decode = importlib.import_module(f"{package.__name__}.datamodules.images.decode")
    images = importlib.import_module(f"{package.__name__}.datamodules.images")
    y, x = np.mgrid[0:300, 0:400]
    upright = np.stack([x * 255 // 400, y * 255 // 300, (x + y) * 255 // 700], -1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter to the left, as a phone held upright saves it
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "p.jpg", exif=exif, quality=95)
    reduced = decode.reduced_jpeg(tmp_path / "p.jpg", 64)
    assert reduced.shape == (3, 75, 100), "decoded at 1/4 of 300x400, still at least 64 a side, upright"
    got = decode.read_image(tmp_path / "p.jpg", 64).int()
    full = torch.nn.functional.interpolate(torch.from_numpy(upright).permute(2, 0, 1)[None].float(), (64, 64),
                                           mode="area")[0]  # fmt: skip
    assert (got - full).abs().mean() < 4
    (tmp_path / "c.csv").write_text("image,caption\n" + "".join(f"p.jpg,photo {i}\n" for i in range(1)))
    for i in range(1, 10):
        (tmp_path / f"p{i}.jpg").write_bytes((tmp_path / "p.jpg").read_bytes())
    (tmp_path / "c.csv").write_text("image,caption\n" + "".join(f"p{i}.jpg,a photo {i}\n" for i in range(1, 10)))
    dm = images.ImageCaptionDataModule(str(tmp_path / "c.csv"), image_size=64, batch_size=4, val_fraction=0.2,
                                       test_fraction=0.2)  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8
    normalized = dm.on_after_batch_transfer(batch, 0)["image"]
    assert normalized.dtype == torch.float32 and -2.2 < float(normalized.min()) < float(normalized.max()) < 2.7
