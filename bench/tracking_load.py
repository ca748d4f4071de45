"""Tracking load benchmark: python bench/tracking_load.py [--clients 1,4,16,64] [--duration S] [--backends ...]

N clients log metrics at once through the generated project's MetricSender (background.py), each like a training
logging `train/loss` every step at the sample forecasting model's speed (measured first, a plain PyTorch loop)
and sending a batch every `flush_interval_s` (2 s, the project's default), into:
  sqlite         the project's embedded SQLite store (each client writes the file itself);
  server-sqlite  `make mlflow-server` on a SQLite file;
  server-pg      `make mlflow-server BACKEND=postgresql://...` on a PostgreSQL of the benchmark's own;
  ...+auth       the same server with MLflow's basic-auth app (MLFLOW_AUTH=1): a password check per request.
Per backend and N: metrics per second accepted (acknowledged by the end of the load plus one flush interval and
3 s, per second of load; against those offered), requests per second, the longest a metric waited between being
logged and the store accepting it, and the metrics still queued ("behind") then. Then a saturation run: N clients
each `--speedup` times faster (the load of N x speedup trainings). What a backend accepts at the first load it
does not keep up with (accepted < 95% of offered), divided by what one training offers, is how many trainings
logging every step it holds.

Clients run as threads in `--processes` processes (a process per client would measure Python start-ups), on the
same machine as the servers: on a small machine both compete for the cores, and figures are lower bounds.
Every backend at --duration 5 took 16 minutes on 2 shared cores (the servers with passwords most of it).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]
PACKAGE = "bench_project"
PASSWORD = "bench-load-password"  # the admin's, of a throw-away server on 127.0.0.1
FLUSH_S = 2.0  # tracking.flush_interval_s, the project's default
TICK_S = 0.05  # a client queues its steps of each tick at once: the sender batches them anyway
GRACE_S = 3.0  # after a load and one flush interval, how long the store may take to accept what it was sent


def sample_steps_per_s(project: Path, steps: int = 60) -> float:
    """Training steps per second of the sample forecasting model on this machine (one thread, plain loop)."""
    import torch
    from overhead import build, plain_step

    torch.set_num_threads(1)
    model, data = build(PACKAGE, project)
    optimizer = model.configure_optimizers()
    batches = list(data.train_dataloader())
    model.train()
    for batch in batches[:5]:
        plain_step(model, optimizer, batch)  # warm-up
    start = time.perf_counter()
    for i in range(steps):
        plain_step(model, optimizer, batches[i % len(batches)])
    return steps / (time.perf_counter() - start)


def run_load(uri: str, run_ids: list[str], rate: float, flush_s: float, duration: float, start_at: float) -> dict:
    """Clients (threads) of this process from ``start_at`` for ``duration``, then at most ``flush_s + GRACE_S`` to
    send what they hold: metrics offered and acknowledged in that window, requests, the longest wait in s (rows
    still queued at the end count with their wait so far: they are late at least that much), rows still queued."""
    from bench_project.background import MetricSender
    from mlflow import MlflowClient

    stats = {"acked": 0, "requests": 0, "longest": 0.0}
    lock, over = threading.Lock(), threading.Event()

    class TimedClient(MlflowClient):
        def log_batch(self, run_id, metrics=(), **kwargs):
            if over.is_set():  # the load is over: stop, so that the next one meets an idle store
                raise RuntimeError("load over")
            super().log_batch(run_id, metrics=metrics, **kwargs)
            now = time.time()
            if metrics and not over.is_set():
                with lock:
                    stats["acked"] += len(metrics)
                    stats["requests"] += 1
                    stats["longest"] = max(stats["longest"], now - min(m.timestamp for m in metrics) / 1000)

    senders = [MetricSender(TimedClient(uri), run_id, flush_s) for run_id in run_ids]
    time.sleep(max(0.0, start_at - time.time()))
    owed, step, tick = [0.0] * len(senders), [0] * len(senders), 0
    while (now := time.time()) < start_at + duration:
        for i, sender in enumerate(senders):
            owed[i] += rate * TICK_S
            rows = []
            while owed[i] >= 1:
                rows.append(("train/loss", 1.0 / (step[i] + 1), int(now * 1000), step[i]))
                owed[i] -= 1
                step[i] += 1
            sender.put(rows)
        tick += 1
        time.sleep(max(0.0, start_at + tick * TICK_S - time.time()))
    deadline = start_at + duration + flush_s + GRACE_S
    queued = [sender.flush(max(0.0, deadline - time.time())) for sender in senders]
    with lock:
        over.set()
        end = time.time()
        oldest = min((row[2] for rows in queued for row in rows), default=end * 1000) / 1000
        return {**stats, "longest": max(stats["longest"], end - oldest), "offered": sum(step),
                "behind": sum(map(len, queued))}  # fmt: skip


def client_worker(project: str, tasks, results) -> None:
    """A process of clients, kept for every load: takes a load, says "ready", takes its start time, runs it."""
    sys.path.insert(0, str(Path(project) / "src"))
    import mlflow  # noqa: F401 - imported once, before any load is timed

    # A SQLite store's "database is locked" is logged with a traceback by MLflow; the sender retries, and the
    # wait it causes is what the table shows.
    logging.getLogger("mlflow").setLevel(logging.CRITICAL)

    while (task := tasks.get()) is not None:
        uri, run_ids, rate, flush_s, duration, auth = task
        for key, value in (("MLFLOW_TRACKING_USERNAME", "admin"), ("MLFLOW_TRACKING_PASSWORD", PASSWORD)):
            os.environ.pop(key, None)
            if auth:
                os.environ[key] = value
        results.put("ready")
        results.put(run_load(uri, run_ids, rate, flush_s, duration, tasks.get()))


class Clients:
    """``processes`` client processes, started once (a fresh interpreter each: no HTTP session shared by a fork)."""

    def __init__(self, project: Path, processes: int) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.results = spawn.Queue()
        self.tasks = [spawn.Queue() for _ in range(processes)]
        self.workers = [spawn.Process(target=client_worker, args=(str(project), t, self.results)) for t in self.tasks]
        for worker in self.workers:
            worker.start()

    def measure(self, uri: str, clients: int, rate: float, flush_s: float, duration: float, auth: bool) -> dict:
        """One load: ``clients`` senders, each at ``rate`` steps/s with a batch every ``flush_s``."""
        from mlflow import MlflowClient

        if auth:
            os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=PASSWORD)
        try:
            client = MlflowClient(uri)
            found = client.get_experiment_by_name("load")
            experiment = found.experiment_id if found else client.create_experiment("load")
            run_ids = [client.create_run(experiment).info.run_id for _ in range(clients)]
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
            os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
        used = self.tasks[: min(len(self.tasks), clients)]
        for i, tasks in enumerate(used):
            tasks.put((uri, run_ids[i :: len(used)], rate, flush_s, duration, auth))
        for _ in used:
            assert self.results.get(timeout=300) == "ready"
        start_at = time.time() + 1.0  # every process has made its senders
        for tasks in used:
            tasks.put(start_at)
        parts = [self.results.get(timeout=duration + flush_s + GRACE_S + 300) for _ in used]
        acked, offered = sum(p["acked"] for p in parts), sum(p["offered"] for p in parts)
        return {
            "offered_per_s": offered / duration,
            "accepted_per_s": acked / duration,
            "requests_per_s": sum(p["requests"] for p in parts) / duration,
            "longest_wait_s": max(p["longest"] for p in parts),
            "behind": sum(p["behind"] for p in parts),
        }

    def close(self) -> None:
        for tasks in self.tasks:
            tasks.put(None)
        for worker in self.workers:
            worker.join(60)


class PeakConnections:
    """The most connections a PostgreSQL server had open at once while ``with``: what its max_connections must hold."""

    def __init__(self, database_uri: str | None) -> None:
        self.uri, self.peak = database_uri, 0

    def __enter__(self) -> PeakConnections:
        self.done = threading.Event()
        if self.uri:
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def _poll(self) -> None:
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as db:
            while not self.done.wait(0.2):
                (count,) = db.execute("SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = 'load'").fetchone()
                self.peak = max(self.peak, count)

    def __exit__(self, *exc) -> None:
        self.done.set()
        if self.uri:
            self.thread.join(5)


@contextlib.contextmanager
def backend(name: str, project: Path, folder: Path, workers: int) -> Iterator[tuple[str, str | None]]:
    """The tracking URI of a backend (its server started, and stopped afterwards, where it has one), and the URI
    of its PostgreSQL database where it has one."""
    from test_mlflow_server import serving

    if name == "sqlite":
        yield f"sqlite:///{folder / 'embedded.db'}", None
        return
    make_args = [f"MLFLOW_WORKERS={workers}"] + (["MLFLOW_AUTH=1"] if name.endswith("+auth") else [])
    # NullPool: a connection per request, none kept open (MLflow's setting, read by the server's workers)
    os.environ.pop("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", None)
    if name.endswith("+nullpool"):
        os.environ["MLFLOW_SQLALCHEMYSTORE_POOLCLASS"] = "NullPool"
    if name.startswith("server-sqlite"):
        with serving(project, f"BACKEND=sqlite:///{folder / name}.db", *make_args) as uri:
            yield uri, None
    else:
        from pgserver import postgres

        with postgres() as database:
            database_uri = database.create_database("load")
            with serving(project, f"BACKEND={database_uri}", *make_args) as uri:
                yield uri, database_uri


def load_backend(name: str, args, counts: list[int], project: Path, out: Path, rate: float,
                 clients: Clients) -> float | str:  # fmt: skip
    """Prints a line per load of one backend; how many trainings it holds (a string where it was not saturated)."""
    with backend(name, project, out, args.workers) as (uri, database_uri):
        auth = name.endswith("+auth")
        top = max(counts)
        loads = [(n, n, rate, FLUSH_S) for n in counts]
        loads.append((f"{top}x{args.speedup:g}", top, rate * args.speedup, FLUSH_S / args.speedup))
        held: float | str | None = None
        for label, n, client_rate, flush_s in loads:
            with PeakConnections(database_uri) as connections:
                r = clients.measure(uri, n, client_rate, flush_s, args.duration, auth)
            print(f"{name:<20}{label:>6}{r['offered_per_s']:>11.0f}{r['accepted_per_s']:>12.0f}"
                  f"{r['accepted_per_s'] / r['offered_per_s']:>7.2f}{r['requests_per_s']:>8.1f}"
                  f"{r['longest_wait_s']:>12.1f} s{r['behind']:>8}"
                  f"{connections.peak if database_uri else '':>8}", flush=True)  # fmt: skip
            # The first load the backend does not keep up with: what it accepts there, in trainings. (A client of
            # the last load sends the batches of `speedup` trainings, each of a training's size.)
            if held is None and r["accepted_per_s"] < 0.95 * r["offered_per_s"]:
                held = r["accepted_per_s"] / rate
    return held if held is not None else f">= {r['offered_per_s'] / rate:.0f} (kept up with every load)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds each load lasts")
    parser.add_argument(
        "--backends", default="sqlite,server-sqlite,server-sqlite+auth,server-pg,server-pg+auth,server-pg+nullpool"
    )
    parser.add_argument("--speedup", type=float, default=4.0, help="the saturation run: clients this much faster")
    parser.add_argument("--processes", type=int, default=4, help="client processes (threads share them)")
    parser.add_argument("--workers", type=int, default=4, help="the server's processes (make MLFLOW_WORKERS)")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    import mlflow  # noqa: F401 - sets its loggers' levels when imported; then quieter: each new store's set-up

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from conftest import bake

    out = Path(tempfile.mkdtemp(prefix="bench-load-"))
    project = bake(out, image_captioning=False, speech_transcription=False, project_name="Bench Project",
                   package_name=PACKAGE)  # fmt: skip
    os.environ.update(BENCH_PROJECT=str(project), MLFLOW_AUTH_ADMIN_PASSWORD=PASSWORD,
                      MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # fmt: skip
    sys.path.insert(0, str(project / "src"))
    rate = sample_steps_per_s(project)
    print(f"sample model: {rate:.0f} steps/s = metrics/s of one training logging train/loss every step; "
          f"a batch every {FLUSH_S:g} s; {os.cpu_count()} cores; server workers {args.workers}; "
          f"{args.duration:g} s per load", flush=True)  # fmt: skip
    print(f"{'backend':<20}{'N':>6}{'offered/s':>11}{'accepted/s':>12}{'ratio':>7}{'req/s':>8}{'longest wait':>14}"
          f"{'behind':>8}{'db conn':>8}")  # fmt: skip
    clients = Clients(project, args.processes)
    try:
        held = {n: load_backend(n, args, counts, project, out, rate, clients) for n in args.backends.split(",")}
    finally:
        clients.close()
    baseline = held.get("sqlite")
    for name, count in held.items():
        ratio = f" ({count / baseline:.1f}x sqlite)" if isinstance(count, float) and isinstance(baseline, float) else ""
        shown = f"{count:.0f}" if isinstance(count, float) else count
        print(f"trainings held, logging every step at the sample model's speed: {name} {shown}{ratio}")


if __name__ == "__main__":
    main()
