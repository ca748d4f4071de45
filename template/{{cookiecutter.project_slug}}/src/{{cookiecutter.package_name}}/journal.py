"""What a run has handed to the store but the store has not yet acknowledged, in a file of the run's folder.

Every metric row, hyper-parameter, tag, file and the final status is written to ``runs/<task>/<run id>/journal.jsonl``
before it is sent, and trimmed once the store has it. A store that hangs, a SIGTERM followed by SIGKILL, a lost
network: what never arrived is in the journal, and ``make replay RUN=<run id>`` sends it (``python -m
<package>.journal <run id>``). Replaying twice sends nothing twice: steps the store has are skipped.

One JSON object per line: ``{"metrics": [[key, value, timestamp_ms, step], ...]}``, ``{"params": {...}}``,
``{"tag": [key, value]}``, ``{"file": [local path, artifact dir]}``, ``{"status": "FINISHED"}``, and
acknowledgements (``{"ack_metrics": n}``: the first n rows not yet acknowledged are in the store; ``{"ack_params":
[...]}``, ``{"ack_tag": key}``, ``{"ack_file": path}``, ``{"ack_status": true}``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
Row = tuple[str, float, int, int]  # (key, value, timestamp in ms, step)
JOURNAL = "journal.jsonl"
COMPACT_BELOW = 2000  # rewrite the file without what is acknowledged when fewer rows than this are left


@dataclass
class Pending:
    """What a journal holds that the store has not acknowledged."""

    metrics: list[Row] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, str | None] = field(default_factory=dict)  # local path -> artifact dir
    status: str | None = None

    def empty(self) -> bool:
        return not (self.metrics or self.params or self.tags or self.files or self.status)

    def apply(self, entry: dict) -> None:
        """One line of a journal."""
        if "metrics" in entry:
            self.metrics += [tuple(row) for row in entry["metrics"]]
        if "params" in entry:
            self.params.update(entry["params"])
        if "tag" in entry:
            self.tags[entry["tag"][0]] = entry["tag"][1]
        if "file" in entry:
            self.files[entry["file"][0]] = entry["file"][1]
        if "status" in entry:
            self.status = entry["status"]
        del self.metrics[: entry.get("ack_metrics", 0)]
        for key in entry.get("ack_params", ()):
            self.params.pop(key, None)
        self.tags.pop(entry.get("ack_tag"), None)
        self.files.pop(entry.get("ack_file"), None)
        if entry.get("ack_status"):
            self.status = None

    def lines(self) -> Iterable[dict]:
        """The entries that make this state again (a compacted journal)."""
        if self.metrics:
            yield {"metrics": [list(row) for row in self.metrics]}
        if self.params:
            yield {"params": self.params}
        for key, value in self.tags.items():
            yield {"tag": [key, value]}
        for path, where in self.files.items():
            yield {"file": [path, where]}
        if self.status:
            yield {"status": self.status}


def read(path: Path) -> Pending:
    """The unacknowledged state a journal file holds (a line cut short by a kill is ignored)."""
    pending = Pending()
    for line in path.read_text().splitlines():
        try:
            pending.apply(json.loads(line))
        except (json.JSONDecodeError, TypeError, IndexError):
            continue
    return pending


class Journal:
    """The journal of one run, written from the training thread and the sender's threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():  # a continued run whose last attempt left something unsent: kept aside for replay
            kept = path.with_name(f"journal-{int(time.time())}.jsonl")
            os.replace(path, kept)
            log.warning("an earlier attempt of this run left data MLflow has not received in %s: `make replay "
                        "RUN=%s` sends it", kept, kept)  # fmt: skip
        self.pending = Pending()
        self.lock = threading.Lock()
        self.file = open(path, "a")  # noqa: SIM115 - open for the run's life
        self.broken = False

    def _write(self, entry: dict) -> None:
        """Under ``self.lock``. A journal that cannot be written (a full disk) must not stop the training."""
        self.pending.apply(entry)
        if self.broken:
            return
        try:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()  # in the kernel's hands: survives SIGKILL
        except (OSError, ValueError) as error:
            self.broken = True
            log.warning("the run's journal %s cannot be written (%s): a lost store may lose data", self.path, error)

    def metrics(self, rows: list[Row]) -> None:
        if rows:
            with self.lock:
                self._write({"metrics": [list(row) for row in rows]})

    def params(self, params: dict[str, str]) -> None:
        if params:
            with self.lock:
                self._write({"params": params})

    def tag(self, key: str, value: str) -> None:
        with self.lock:
            self._write({"tag": [key, value]})

    def file_to_upload(self, path: Path | str, artifact_dir: str | None) -> None:
        with self.lock:
            self._write({"file": [str(path), artifact_dir]})

    def status(self, status: str) -> None:
        with self.lock:
            self._write({"status": status})

    def acknowledge(self, **entry: object) -> None:
        """The store has it: ``metrics=n`` (the first n rows), ``params=[...]``, ``tag=key``, ``file=path``,
        ``status=True``."""
        with self.lock:
            self._write({f"ack_{kind}": value for kind, value in entry.items()})
            if len(self.pending.metrics) < COMPACT_BELOW:
                self._compact()

    def _compact(self) -> None:
        """Rewrite the file with only what is unacknowledged (atomically: a kill leaves the old or the new one)."""
        if self.broken:
            return
        try:
            temporary = self.path.with_suffix(".tmp")
            with open(temporary, "w") as f:
                f.writelines(json.dumps(entry) + "\n" for entry in self.pending.lines())
            os.replace(temporary, self.path)
            self.file.close()
            self.file = open(self.path, "a")  # noqa: SIM115
        except OSError:
            pass  # the appended acknowledgements still say the same

    def close(self) -> bool:
        """Stop writing; delete the file when the store has everything. Whether it did."""
        with self.lock:
            done = self.pending.empty()
            self.file.close()
            self.broken = True
            if done:
                self.path.unlink(missing_ok=True)
            return done


def replay(path: Path, run_id: str, uri: str) -> Pending:
    """Send what the journal at ``path`` holds to run ``run_id`` of the store at ``uri``, skipping what the store
    has already (metric steps, params): what is still left afterwards (empty when everything arrived)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri)
    pending = read(path)
    run = client.get_run(run_id)
    seen: dict[str, set[int]] = {}
    for key in dict.fromkeys(k for k, *_ in pending.metrics):
        seen[key] = {m.step for m in client.get_metric_history(run_id, key)} if key in run.data.metrics else set()
    fresh = []
    for key, value, timestamp, step in pending.metrics:
        if step not in seen[key]:
            seen[key].add(step)
            fresh.append(Metric(key, value, int(timestamp), int(step)))
    for start in range(0, len(fresh), 1000):
        client.log_batch(run_id, metrics=fresh[start : start + 1000])
    params = [Param(k, v) for k, v in pending.params.items() if k not in run.data.params]
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])
    for key, value in pending.tags.items():
        client.set_tag(run_id, key, value)
    left = Pending()
    for local, where in pending.files.items():
        if Path(local).is_dir():
            client.log_artifacts(run_id, local, where)
        elif Path(local).is_file():
            client.log_artifact(run_id, local, where)
        else:
            left.files[local] = where
            log.warning("%s is not on disk any more: not uploaded", local)
    if pending.status:
        client.set_terminated(run_id, pending.status)
    print(f"Replayed into MLflow run {run_id}: {len(fresh)} metric values ({len(pending.metrics) - len(fresh)} "
          f"already there), {len(params)} params, {len(pending.tags)} tags, {len(pending.files) - len(left.files)} "
          f"files{', status ' + pending.status if pending.status else ''}")  # fmt: skip
    return left


def find(run: str, root: Path) -> Path:
    """The journal of ``run`` (a run id, or a path to a journal or a run's folder) under the runs folder ``root``."""
    given = Path(run)
    if given.is_file():
        return given
    if (given / JOURNAL).is_file():
        return given / JOURNAL
    found = sorted(root.glob(f"*/{run}/{JOURNAL}"))
    if not found:
        raise FileNotFoundError(f"no {JOURNAL} of run {run} under {root}/<task>/: nothing to replay")
    return found[0]


def main(argv: list[str] | None = None) -> None:
    """``make replay RUN=<run id>``: send a run's journal to the store, then remove it."""
    from .checkpoints import RUNS_DIR
    from .credentials import scrub
    from .quiet import quiet_terminal
    from .store import project_root, tracking_uri

    quiet_terminal()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0]:
        raise SystemExit("ERROR: name the run: make replay RUN=<run id>")
    try:
        path = find(args[0], project_root() / RUNS_DIR)
        left = replay(path, path.parent.name, tracking_uri())
    except Exception as error:  # the store away again, a wrong run: say so; the journal stays for the next try
        from .errors import first_line

        raise SystemExit(f"ERROR: {scrub(first_line(error))}") from None
    if left.empty():
        path.unlink()
    else:
        path.write_text("".join(json.dumps(entry) + "\n" for entry in left.lines()))


if __name__ == "__main__":
    main()
