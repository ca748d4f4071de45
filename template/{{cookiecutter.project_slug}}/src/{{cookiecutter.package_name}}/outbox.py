"""What a started run sends to the store, and what becomes of what the store does not take.

Every metric, hyper-parameter, tag, file and the final status is written to the run's journal first (``journal.py``),
sent off the training thread (``background.py``), and trimmed from the journal once the store acknowledges it. At the
end, what did not arrive within the deadline stays in the journal, named in one line with the command that sends it
(``make replay``). A server that stops letting this user write (an admin revoked the grant mid-run) is one line too,
naming the experiment and the grant to ask for; the training goes on and keeps everything for the replay.
"""

from __future__ import annotations

import csv
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .background import MetricSender, Row, Uploads
from .journal import JOURNAL, Journal
from .liveness import tracking_user
from .store import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


class Outbox:
    """The journal, the metric sender and the uploads of run ``run_id`` of ``experiment``, kept in ``folder``."""

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        experiment: str,
        uri: str,
        folder: Path,
        interval_s: float,
        logged_through: dict[str, int],
    ) -> None:
        self.client, self.run_id, self.experiment, self.uri, self.folder = client, run_id, experiment, uri, folder
        self.journal = Journal(folder / JOURNAL)
        self.uploads = Uploads(on_denied=self.denied)
        self.sender = MetricSender(client, run_id, interval_s, logged_through, self.journal, on_denied=self.denied)
        self.refused = False  # the server denied this user a write: said once, the rest waits for `make replay`
        self._lock = threading.Lock()

    def denied(self, error: Exception) -> None:
        """The server refuses this user's writes to the run (permission denied): one line, the first time."""
        with self._lock:
            if self.refused:
                return
            self.refused = True
        logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)  # it would say so again every sample
        user = tracking_user()
        log.error(
            "MLflow tracking server %s no longer lets %r write to experiment %r (permission denied): the training "
            "goes on, and what the server does not take stays in %s. Ask the server's admin to grant %r EDIT on "
            "experiment %r (README: Teams), then `make replay RUN=%s` sends it",
            redact(self.uri), user, self.experiment, self.journal.path, user, self.experiment, self.run_id,
        )  # fmt: skip

    def log_text(self, text: str, artifact_file: str) -> None:
        """Upload ``text`` as ``artifact_file``; until the store has it, it is a file in the run's folder."""
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="unsent-", dir=self.folder))
        target = folder / artifact_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        self.log_artifacts(folder, None, what=artifact_file)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None, what: str | None = None) -> None:
        """Upload ``local_dir`` (taken over) as ``artifact_path``; deleted once the store has it, kept and named in
        the journal while it has not."""
        self.journal.file_to_upload(local_dir, artifact_path)

        def upload() -> None:
            self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)
            self.journal.acknowledge(file=str(local_dir))
            shutil.rmtree(local_dir, ignore_errors=True)

        self.uploads.add(what or artifact_path or str(local_dir), upload)

    def log_artifact(self, path: str, artifact_path: str, what: str) -> None:
        """Upload the file ``path`` (which stays where it is) into ``artifact_path``."""
        self.journal.file_to_upload(path, artifact_path)

        def upload() -> None:
            self.client.log_artifact(self.run_id, path, artifact_path)
            self.journal.acknowledge(file=path)

        self.uploads.add(what, upload)

    def set_tag(self, key: str, value: str) -> None:
        self.journal.tag(key, value)

        def call() -> None:
            self.client.set_tag(self.run_id, key, value)
            self.journal.acknowledge(tag=key)

        self.uploads.add(f"the {key} tag", call)

    def end(self, status: str, timeout_s: float, deadline: float) -> None:
        """Send what is left and mark the run ``status`` by ``deadline`` (``time.monotonic``, ``timeout_s`` after the
        end began); what the store did not take stays in the journal, named in one line."""
        unsent = self.sender.flush(max(0.0, deadline - time.monotonic()))
        if unsent and not self.refused:
            self._save_unsent(unsent)
        not_uploaded = self.uploads.failed + self.uploads.wait(max(0.0, deadline - time.monotonic()))
        if not_uploaded and not self.refused:
            note = ", ".join(not_uploaded)
            self.set_tag("upload_failures", note)
            log.warning("not uploaded to MLflow run %s: %s", self.run_id, note)

        def set_status() -> None:
            self.client.set_terminated(self.run_id, status)
            self.journal.acknowledge(status=True)

        self.uploads.add(f"the run status ({status})", set_status)
        if self.uploads.wait(max(0.0, deadline - time.monotonic())):
            log.error("MLflow (%s) did not answer within %.0f s; run %s stays RUNNING there (`make runs` shows its "
                      "process as gone)", redact(self.uri), timeout_s, self.run_id)  # fmt: skip
        left = self.journal.pending
        if not self.journal.close():
            what = f"{len(left.metrics)} metric values, {len(left.params)} params, {len(left.tags)} tags, "
            what += f"{len(left.files)} files{', the status' if left.status else ''}"
            log.error("MLflow run %s has not received %s; they are in %s: `make replay RUN=%s` sends them",
                      self.run_id, what, self.journal.path, self.run_id)  # fmt: skip

    def _save_unsent(self, rows: list[Row]) -> None:
        path = self.folder / "unsent_metrics.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="") as f:
            csv.writer(f).writerows(rows)
        log.error("could not send %d metrics to MLflow (%s); they are saved in %s", len(rows), self.sender.error, path)
