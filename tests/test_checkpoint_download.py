"""`--ckpt_path runs:/...` under torchrun or srun: local rank 0 of a job downloads the checkpoint (into a folder of
its own, renamed into place), and the other processes of the machine take the file it names."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest


def test_the_other_local_ranks_take_what_local_rank_0_downloaded(package, tmp_path: Path, monkeypatch) -> None:
    from demo_project.checkpoint_download import from_store, shared_download

    uri, out = "runs:/0123456789abcdef0123456789abcdef", tmp_path / "downloaded"
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert shared_download(uri, out) is None, "a plain command downloads on its own"

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    marker = shared_download(uri, out)
    downloaded = out / "0123456789abcdef0123456789abcdef" / "best.ckpt"

    def rank_0_finishes() -> None:  # what rank 0 writes once its download is in place
        time.sleep(1)
        downloaded.parent.mkdir(parents=True)
        downloaded.write_bytes(b"checkpoint")
        marker.write_text(str(downloaded))

    threading.Thread(target=rank_0_finishes).start()
    nowhere = "http://127.0.0.1:9"  # rank 1 never asks the store
    assert from_store(uri, nowhere, out) == downloaded
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-2")  # another job does not take job 1's file
    assert shared_download(uri, out) != marker


def test_local_rank_0_asks_the_store_itself(package, tmp_path: Path, monkeypatch) -> None:
    from demo_project.checkpoint_download import CheckpointError, from_store

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(CheckpointError, match="cannot find runs:/"):
        from_store("runs:/0123456789abcdef0123456789abcdef", "http://127.0.0.1:9", tmp_path)
