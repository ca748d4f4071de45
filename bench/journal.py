"""Journal cost benchmark: python bench/journal.py [--steps N] [--keys K] [--repeats R]

What the run's journal (journal.py: every metric written to runs/<task>/<run id>/journal.jsonl before it is sent,
trimmed when the store acknowledges it) costs per logged metric, against the same MetricSender without it
(background.py, ``journal=None``), in a baked project. A training logs K metrics a step for N steps, as fast as it
can; the sender sends in batches from its thread (every 0.05 s here, so that acknowledgements, and the journal's
trimming, happen all along), and a flush at the end waits until the store has everything. Into:
  fake    a client whose log_batch returns at once: the journal's own cost, nothing to hide it;
  sqlite  MLflow's SQLite store in a temporary folder, as `make train` logs by default.
Per store: the training thread's time in ``put`` per metric, and the process's CPU time per metric from the first
put to the end of the flush (the sender's thread included), each with the journal / without; and the journal's
CPU per step of K metrics as a share of a training step of the sample forecasting model (a plain PyTorch loop,
measured here). Variants run interleaved, R times each; medians.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]
PACKAGE = "bench_project"


class FakeClient:
    """Acknowledges every batch at once."""

    def log_batch(self, run_id, metrics=(), params=(), tags=()) -> None:
        pass

    def set_tag(self, *args) -> None:
        pass


def one_run(client, run_id: str, steps: int, keys: int, journal_path: Path | None) -> tuple[float, float]:
    """(seconds in put, process CPU seconds) for ``steps`` steps of ``keys`` metrics, until all are acknowledged."""
    from bench_project.background import MetricSender
    from bench_project.journal import Journal

    journal = Journal(journal_path) if journal_path is not None else None
    names = [f"train/metric_{k}" for k in range(keys)]
    cpu = time.process_time()
    sender = MetricSender(client, run_id, interval_s=0.05, journal=journal)
    in_put = 0.0
    for step in range(steps):
        rows = [(name, 0.5, 1_700_000_000_000 + step, step) for name in names]
        start = time.perf_counter()
        sender.put(rows)
        in_put += time.perf_counter() - start
    left = sender.flush(600)
    if journal is not None:
        journal.close()
    cpu = time.process_time() - cpu
    assert not left, f"{len(left)} rows not acknowledged"
    return in_put, cpu


def measure(make_client, steps: int, keys: int, repeats: int, folder: Path) -> dict[str, dict[str, float]]:
    """Median put time and CPU time per metric, with and without the journal, interleaved."""
    results: dict[str, dict[str, list[float]]] = {v: {"put": [], "cpu": []} for v in ("journal", "none")}
    for repeat in range(repeats):
        for variant in ("none", "journal") if repeat % 2 else ("journal", "none"):
            client, run_id = make_client()
            path = folder / f"journal-{variant}-{repeat}.jsonl" if variant == "journal" else None
            in_put, cpu = one_run(client, run_id, steps, keys, path)
            results[variant]["put"].append(in_put / (steps * keys))
            results[variant]["cpu"].append(cpu / (steps * keys))
    return {v: {k: statistics.median(xs) for k, xs in r.items()} for v, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps logged per run")
    parser.add_argument("--keys", type=int, default=3, help="metrics logged per step")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from conftest import bake
    from tracking_load import sample_steps_per_s

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        project = bake(out, image_captioning=False, speech_transcription=False, project_name="Bench Project",
                       package_name=PACKAGE)  # fmt: skip
        sys.path.insert(0, str(project / "src"))
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        store = MlflowClient(f"sqlite:///{out}/mlflow.db")
        experiment = store.create_experiment("bench")

        def sqlite_run() -> tuple[MlflowClient, str]:
            return store, store.create_run(experiment).info.run_id  # a new run each time: no steps already there

        step_s = 1.0 / sample_steps_per_s(project)
        stores = {"fake": lambda: (FakeClient(), "run"), "sqlite": sqlite_run}
        print(f"{args.steps} steps x {args.keys} metrics, {args.repeats} repeats; a training step of the sample "
              f"forecasting model: {step_s * 1e3:.2f} ms")  # fmt: skip
        for name, make_client in stores.items():
            figures = measure(make_client, args.steps, args.keys, args.repeats, out)
            on, off = figures["journal"], figures["none"]
            journal_per_step = (on["cpu"] - off["cpu"]) * args.keys
            print(f"{name:6s} put per metric: {on['put'] * 1e6:.1f} us with the journal / {off['put'] * 1e6:.1f} us "
                  f"without = {on['put'] / off['put']:.2f}x")  # fmt: skip
            print(f"{name:6s} CPU per metric: {on['cpu'] * 1e6:.1f} us with the journal / {off['cpu'] * 1e6:.1f} us "
                  f"without = {on['cpu'] / off['cpu']:.2f}x")  # fmt: skip
            print(f"{name:6s} the journal's CPU per step of {args.keys} metrics / a training step = "
                  f"{journal_per_step / step_s:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
