"""Checkpoints from the tracking store: what ``--ckpt_path runs:/<run id>`` and ``models:/<name>/<version>`` name.

A run's checkpoint artifact is downloaded once per machine and job (local rank 0; the other processes of the node
wait for the file it names) into a folder of its own, then renamed into place; ``checkpoints.resolve`` then reads
it like any file, with ``weights_only=True``. A pickled MLflow model is never loaded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from .checkpoints import CheckpointError
from .errors import first_line


def from_store(uri: str, tracking_uri: str, out_dir: Path) -> Path:
    """Download the checkpoint artifact of the run behind ``runs:/<run id>[/...]`` or ``models:/<name>/<ref>``.

    Once per machine and job: under torchrun or srun, every process of a node resolves ``--ckpt_path`` on its own;
    local rank 0 downloads, the others wait for the file it names (``shared_download``).
    """
    marker = shared_download(uri, out_dir)
    if marker is not None and local_rank() != 0:
        return wait_for_download(marker)
    final = _download(uri, tracking_uri, out_dir)
    if marker is not None:
        temporary = marker.with_suffix(".tmp")
        temporary.write_text(str(final))
        os.replace(temporary, marker)
    return final


def local_rank() -> int:
    """This process's rank on its machine, as torchrun or srun set it (0 when neither did)."""
    value = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID") or "0"
    return int(value) if value.isdigit() else 0


def shared_download(uri: str, out_dir: Path) -> Path | None:
    """The file in which local rank 0 of this job names what it downloaded for ``uri`` (None outside a launcher)."""
    job = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{job}\0{uri}".encode()).hexdigest()[:16]
    return out_dir / f".resolved-{key}"


def wait_for_download(marker: Path, timeout_s: float = 900.0) -> Path:
    """The checkpoint local rank 0 downloaded, once it is there."""
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if time.monotonic() > deadline:
            raise CheckpointError(f"local rank 0 did not download the checkpoint within {timeout_s:.0f} s")
        time.sleep(0.5)
    return Path(marker.read_text().strip())


def _download(uri: str, tracking_uri: str, out_dir: Path) -> Path:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from .store import redact

    client = MlflowClient(tracking_uri)
    try:
        if uri.startswith("models:/"):
            name, _, ref = uri[len("models:/") :].partition("/")
            version = (
                client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
            )
            run = version.run_id
        else:
            run = uri[len("runs:/") :].split("/")[0]
        artifacts = {Path(a.path).name: a.path for a in client.list_artifacts(run, "checkpoints")}
    except MlflowException as error:
        raise CheckpointError(f"cannot find {uri} in {redact(tracking_uri)}: {first_line(error)}") from None
    chosen = next((artifacts[n] for n in ("best.ckpt", "last.ckpt") if n in artifacts), None)
    chosen = chosen or next((p for n, p in sorted(artifacts.items()) if n.endswith(".ckpt")), None)
    if chosen is None:
        raise CheckpointError(
            f"run {run} ({uri}) has no checkpoint artifact under checkpoints/; predict needs one (a run logs its "
            "best checkpoint unless --tracking.log_checkpoints false)"
        )
    target = out_dir / run
    target.mkdir(parents=True, exist_ok=True)
    # Into a folder of its own, then renamed into place: ranks that torchrun or srun started download at once, and
    # none may read a file another is still writing.
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as folder:
        downloaded = Path(client.download_artifacts(run, chosen, folder))
        final = target / downloaded.name
        os.replace(downloaded, final)
    return final
