"""A team on one tracking server with users (`make mlflow-server MLFLOW_AUTH=1`): every member trains the same task
in the same experiment, nobody's run is touched by another member, and a denied action is one line naming the grant
to ask for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import PACKAGE, assert_refused, forecasting_project, project_env, run_cli, run_make
from proxy import FreezableProxy
from test_mlflow_server import QUICK, TINY, free_port, serving, stop_group
from test_slurm import DONE as SLURM_DONE
from test_slurm import TINY as SLURM_TINY
from test_slurm import job_fields, job_id, slurm, wait_for_job  # noqa: F401  (the cluster, started if a test needs it)

ADMIN_PASSWORD = "admin-Pa55word-for-tests"
CANARY = "c@n/ary-S3cret-9"  # "@" and "/" as people type them into a URI
MEMBERS = {"alice": "alice-Pa55word-xyz", "bob": "bob-Pa55word-xyz", "carol": CANARY}


@pytest.fixture(scope="module")
def tproject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return forecasting_project(tmp_path_factory.mktemp("team-auth"))


@contextmanager
def logged_in(user: str, password: str) -> Iterator[None]:
    """This test process talks to the server as ``user``."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.update({key: value})


def as_member(user: str, uri: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": MEMBERS[user]}


def test_the_auth_config_is_written_once_and_the_stores_are_private(tproject: Path) -> None:
    def auth_config() -> Path:
        return Path(subprocess.run(
            [sys.executable, "-m", f"{PACKAGE}.store", "auth-config"], cwd=tproject, env=project_env(tproject),
            capture_output=True, text=True, check=True,
        ).stdout.strip())  # fmt: skip

    path = auth_config()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "default_permission = EDIT" in path.read_text()
    assert stat.S_IMODE((tproject / "mlflow-auth.db").stat().st_mode) == 0o600, "password hashes are private"
    path.write_text(path.read_text() + "# an admin's edit\n")
    assert auth_config() == path and path.read_text().endswith("# an admin's edit\n"), "the admin's edit stays"
    subprocess.run([sys.executable, "-m", f"{PACKAGE}.store", "init"], cwd=tproject, env=project_env(tproject),
                   check=True, capture_output=True)  # fmt: skip
    assert stat.S_IMODE((tproject / "mlflow.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tproject / "mlartifacts").stat().st_mode) == 0o700


def dead_run_tags(user: str) -> dict[str, str]:
    """The process tags of a process of this machine that has ended, started by ``user``."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    return {
        "process.host": socket.gethostname(),
        "process.boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        "process.pid_ns": os.readlink("/proc/self/ns/pid"),
        "process.pid": str(ended.pid),
        "process.start_ticks": "1",
        "process.user": user,
    }


@pytest.fixture(scope="module")
def team_server(tproject: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make mlflow-server MLFLOW_AUTH=1` with an account per member; yields its URI."""
    from mlflow.server import get_app_client

    password_file = tmp_path_factory.mktemp("admin") / "admin-password"
    password_file.write_text(ADMIN_PASSWORD)
    with serving(tproject, "MLFLOW_AUTH=1", f"MLFLOW_AUTH_ADMIN_PASSWORD_FILE={password_file}") as uri:
        with logged_in("admin", ADMIN_PASSWORD):
            admin = get_app_client("basic-auth", tracking_uri=uri)
            for user, password in MEMBERS.items():
                admin.create_user(user, password)
        yield uri


@pytest.mark.slow
def test_two_members_train_the_same_task_and_leave_each_others_runs_alone(tproject: Path, team_server: str) -> None:
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    uri = team_server
    run_cli(tproject, "fit", *TINY, *QUICK, "--tracking.run_name", "alice-trains", **as_member("alice", uri))
    stale = {}
    for user in ("alice", "bob"):  # a run of each member whose process died (SIGKILL) without marking it
        with logged_in(user, MEMBERS[user]):
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name("forecasting").experiment_id
            stale[user] = client.create_run(experiment, tags=dead_run_tags(user)).info.run_id

    trained = run_cli(tproject, "fit", *TINY, *QUICK, "--tracking.run_name", "bob-trains", **as_member("bob", uri))
    assert "Traceback" not in trained.stderr, trained.stderr[-3000:]
    with logged_in("admin", ADMIN_PASSWORD):
        client = MlflowClient(uri)
        runs = {r.info.run_id: r for r in client.search_runs([experiment])}
        named = {r.info.run_name: r for r in runs.values()}
        assert named["alice-trains"].info.status == "FINISHED" and named["bob-trains"].info.status == "FINISHED"
        assert named["bob-trains"].data.tags["process.user"] == "bob"
        alices = runs[stale["alice"]]
        assert alices.info.status == "RUNNING" and "process.ended" not in alices.data.tags, "bob left it alone"
        assert runs[stale["bob"]].info.status == "KILLED", "bob's own dead run is marked"

    # An admin takes bob off the experiment while he trains (DENY: a grant below the default EDIT has no effect),
    # and takes the DENY back after: one line names the grant, the training ends without a traceback, and `make replay`
    # then sends what the server refused.
    marks = {"FAULT_STEP": "2", "FAULT_FILE": str(tproject / "revoke-step"), "FAULT_END": str(tproject / "revoke-end"),
             "FAULT_STEP_DELAY": "0.3"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", PACKAGE, "fit", *TINY, *QUICK, "--trainer.max_epochs", "3", "--tracking.run_name",
         "bob-revoked", "--tracking.flush_interval_s", "0.2", "--trainer.callbacks+=faults.TouchAtStep"],
        cwd=tproject, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env=project_env(tproject, PYTHONPATH=str(Path(__file__).parent), **as_member("bob", uri), **marks),
    )  # fmt: skip
    try:
        while not (tproject / "revoke-step").exists():
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        with logged_in("admin", ADMIN_PASSWORD):
            admin = get_app_client("basic-auth", tracking_uri=uri)
            admin.grant_user_permission("bob", "experiment", experiment, "DENY")
        stdout, stderr = process.communicate(timeout=300)
    finally:
        stop_group(process)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    told = [line for line in stderr.splitlines() if "EDIT on experiment 'forecasting'" in line]
    assert len(told) == 1 and told[0].startswith("ERROR:") and "'bob'" in told[0], stderr[-3000:]
    rest = stderr.replace(told[0], "")  # a run id is hex: "403" inside one is not a status code
    assert not re.search(r"(?<![0-9a-f])403(?![0-9a-f])", rest) and "ermission denied" not in rest, "said once"
    revoked = re.search(r"MLflow run (\w+) \(new\)", stdout).group(1)
    assert (tproject / "runs" / "forecasting" / revoked / "journal.jsonl").is_file(), stderr[-3000:]
    with logged_in("admin", ADMIN_PASSWORD):
        admin.revoke_user_permission("bob", "experiment", experiment)  # the default EDIT again
        assert client.get_run(revoked).info.status == "RUNNING", "the server took nothing after the revocation"
    replayed = run_make(tproject, "replay", f"RUN={revoked}", **as_member("bob", uri))
    assert "Replayed into MLflow run" in replayed.stdout, replayed.stdout + replayed.stderr
    with logged_in("admin", ADMIN_PASSWORD):
        run = client.get_run(revoked)
        steps = sorted(m.step for m in client.get_metric_history(revoked, "train/loss"))
        listed = {a.path for a in client.list_artifacts(revoked)}
        assert run.info.status == "FINISHED" and steps == list(range(3 * 5)), (run.info.status, steps)
        assert {"config.yaml", "checkpoints"} <= listed and run.data.params["backbone"] == "lstm", listed

        # An admin takes bob off this experiment (README: Teams): his next training is one ERROR line.
        admin.grant_user_permission("bob", "experiment", experiment, "DENY")
        runs = client.search_runs([experiment])
    denied = run_cli(tproject, "fit", *TINY, *QUICK, check=False, **as_member("bob", uri))
    assert_refused(denied, "'bob'", "EDIT", "experiment 'forecasting'")
    with logged_in("admin", ADMIN_PASSWORD):
        assert len(MlflowClient(uri).search_runs([experiment])) == len(runs), "the refusal made no run"


class CutAfterTheCheck(FreezableProxy):
    """Forwards the first connection (the CLI's /health check), then refuses all others: a server that died just
    after the check, so that the next store call fails where nothing catches it."""

    answered = 0

    def _pump(self, client: socket.socket) -> None:
        self.answered += 1
        if self.answered > 1:
            self.listener.close()
            client.close()
            return
        super()._pump(client)


def with_password(uri: str, user: str, password: str) -> str:
    return uri.replace("://", f"://{user}:{password}@")  # as typed: "@" and "/" in the password unquoted


@pytest.mark.slow
def test_a_password_never_reaches_output_or_files_whatever_fails(tproject: Path, team_server: str) -> None:
    from mlflow import MlflowClient

    fast_failures = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    outputs = {}
    port = int(team_server.rsplit(":", 1)[1])

    proxy = FreezableProxy(port)  # the server goes away at step 3 of a training
    marks = {"FAULT_STEP": "3", "FAULT_FILE": str(tproject / "step"), "FAULT_END": str(tproject / "end")}
    env = {"MLFLOW_TRACKING_URI": with_password(proxy.uri, "carol", CANARY), **marks, **fast_failures}
    process = subprocess.Popen(
        [sys.executable, "-m", PACKAGE, "fit", *TINY, "--trainer.max_epochs", "2", "--tracking.end_timeout_s", "5",
         "--tracking.flush_interval_s", "0.2", "--trainer.callbacks+=faults.TouchAtStep"],
        cwd=tproject, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env=project_env(tproject, PYTHONPATH=str(Path(__file__).parent), **env),
    )  # fmt: skip
    try:
        while not (tproject / "step").exists():
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        proxy.close()
        outputs["server gone mid-run"] = "".join(process.communicate(timeout=300))
    finally:
        stop_group(process)
        proxy.close()
    started = re.search(r"MLflow run (\w+) \(new\)", outputs["server gone mid-run"])
    assert started, outputs["server gone mid-run"][-3000:]

    dead = with_password(f"http://127.0.0.1:{free_port()}", "carol", CANARY)
    outputs["predict, dead server"] = "".join(run_cli(
        tproject, "predict", *TINY[:2], "--ckpt_path", f"runs:/{started.group(1)}", "--trainer.logger", "false",
        "--data.predict_path", "data/sample/forecasting/prices.csv", check=False,
        MLFLOW_TRACKING_URI=dead, **fast_failures,
    ).__dict__[k] for k in ("stdout", "stderr"))  # fmt: skip
    assert "ERROR:" in outputs["predict, dead server"], outputs["predict, dead server"][-3000:]

    cut = CutAfterTheCheck(port)
    try:
        uncaught = run_cli(tproject, "fit", *TINY, *QUICK, check=False,
                           MLFLOW_TRACKING_URI=with_password(cut.uri, "carol", CANARY), **fast_failures)  # fmt: skip
    finally:
        cut.close()
    outputs["uncaught store error"] = uncaught.stdout + uncaught.stderr
    assert uncaught.returncode != 0 and "Traceback" in uncaught.stderr, uncaught.stderr[-3000:]

    with logged_in("admin", ADMIN_PASSWORD):
        client = MlflowClient(team_server)
        run = client.get_run(started.group(1))
        outputs["the run's tags and params"] = repr(run.data.tags) + repr(run.data.params)
    for what, text in outputs.items():
        assert CANARY not in text, (what, text[max(0, text.find(CANARY) - 1500) : text.find(CANARY) + 300])
    written = [p for p in tproject.rglob("*") if p.is_file() and "data" not in p.relative_to(tproject).parts]
    leaks = [str(p) for p in written if CANARY.encode() in p.read_bytes()]
    assert not leaks, f"the password is in {leaks}"


@pytest.mark.slow
def test_a_hung_store_then_sigterm_and_sigkill_lose_nothing_and_replay_completes_the_run(
    tproject: Path, team_server: str
) -> None:
    """The stop sequence of a scheduler while the server hangs: SIGTERM, then SIGKILL before the command could give
    up on the store (its end deadline is longer than this scheduler's grace). The journal holds what never arrived,
    and `make replay` brings the run to the store complete, once, however often it runs."""
    from mlflow import MlflowClient

    grace_s = 12
    proxy = FreezableProxy(int(team_server.rsplit(":", 1)[1]))
    marks = {"FAULT_STEP": "4", "FAULT_FILE": str(tproject / "hung-step"), "FAULT_END": str(tproject / "hung-end")}
    env = {**as_member("carol", proxy.uri), **marks, "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    process = subprocess.Popen(
        [sys.executable, "-m", PACKAGE, "fit", *TINY, *QUICK, "--trainer.max_epochs", "40", "--tracking.end_timeout_s",
         "60", "--tracking.flush_interval_s", "0.2", "--tracking.run_name", "hung-then-killed",
         "--trainer.callbacks+=faults.TouchAtStep"],
        cwd=tproject, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env=project_env(tproject, PYTHONPATH=str(Path(__file__).parent), **env),
    )  # fmt: skip
    try:
        while not (tproject / "hung-step").exists():
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        proxy.freeze()
        time.sleep(4)  # training goes on; nothing reaches the store
        process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    finally:
        stop_group(process)
        proxy.close()
    assert process.returncode == -signal.SIGKILL, stderr[-3000:]
    run_id = re.search(r"MLflow run (\w+) \(new\)", stdout).group(1)
    journal = tproject / "runs" / "forecasting" / run_id / "journal.jsonl"
    assert journal.is_file(), stderr[-3000:]
    held = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert {"status": "KILLED"} in held, "the status is journaled before anything is sent"
    journaled_steps = {row[3] for entry in held for row in entry.get("metrics", []) if row[0] == "train/loss"}
    assert journaled_steps, held[:3]
    copy = journal.with_name("journal-copy.jsonl")
    shutil.copy(journal, copy)

    member = as_member("carol", team_server)
    replayed = run_make(tproject, "replay", f"RUN={run_id}", **member)
    assert "Replayed into MLflow run" in replayed.stdout, replayed.stdout + replayed.stderr
    assert not journal.exists()
    again = run_make(tproject, "replay", f"RUN={copy}", **member)  # a second replay of the same journal
    assert "0 metric values" in again.stdout, again.stdout + again.stderr

    with logged_in("carol", CANARY):
        client = MlflowClient(team_server)
        run = client.get_run(run_id)
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert run.info.status == "KILLED"
    assert len(steps) == len(set(steps)), "no step twice"
    assert set(steps) == set(range(max(steps) + 1)) and journaled_steps <= set(steps), "every step, once"
    assert run.data.params["backbone"] == "lstm"


@pytest.mark.slow
def test_a_password_never_reaches_the_slurm_output_when_the_server_goes_away(
    tproject: Path,
    team_server: str,
    slurm: dict[str, str],  # noqa: F811
) -> None:
    """`make train-slurm` with the password in the tracking URI, and the server gone at step 3 of the job: the
    failure paths print into slurm-<job>.out, which has no password, and neither has any file of the project."""
    proxy = FreezableProxy(int(team_server.rsplit(":", 1)[1]))
    step = tproject / "slurm-step"
    marks = {"FAULT_STEP": "3", "FAULT_FILE": str(step), "FAULT_END": str(tproject / "slurm-end"),
             "FAULT_STEP_DELAY": "0.3"}  # fmt: skip
    env = {"MLFLOW_TRACKING_URI": with_password(proxy.uri, "carol", CANARY), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", **marks, **slurm}  # fmt: skip
    args = f"{SLURM_TINY} --tracking.end_timeout_s 5 --tracking.flush_interval_s 0.2"
    # 12 steps: the server goes at step 3 and the job trains on for ~3 s, however late a busy machine sees the mark
    args += " --trainer.limit_train_batches 12 --trainer.callbacks+=faults.TouchAtStep"
    try:
        submitted = run_make(tproject, "train-slurm", "TASK=forecasting", "NNODES=1", "NPROC=1", f"ARGS={args}",
                             PYTHONPATH=str(Path(__file__).parent), **env)  # fmt: skip
        job = job_id(submitted.stdout)
        output = tproject / f"slurm-{job}.out"
        deadline = time.monotonic() + 300
        asked = 0.0
        while not step.exists():
            if time.monotonic() - asked > 1:  # scontrol is slow on a busy machine: watch the mark, ask now and then
                assert job_fields(job, slurm).get("JobState") not in SLURM_DONE, output.read_text()[-3000:]
                asked = time.monotonic()
            assert time.monotonic() < deadline, "the job did not reach step 3"
            time.sleep(0.05)
        proxy.close()
        fields = wait_for_job(job, project_env(tproject, **slurm), output)
    finally:
        proxy.close()
    log = output.read_text()
    assert fields["JobState"] == "COMPLETED" and "MLflow run " in log, (fields, log[-3000:])
    assert "make replay RUN=" in log, log[-3000:]  # the server went away: the journal's line was printed
    assert CANARY not in log, log[max(0, log.find(CANARY) - 1500) : log.find(CANARY) + 300]
    written = [p for p in tproject.rglob("*") if p.is_file() and "data" not in p.relative_to(tproject).parts]
    leaks = [str(p) for p in written if CANARY.encode() in p.read_bytes()]
    assert not leaks, f"the password is in {leaks}"
