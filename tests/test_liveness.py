"""Which RUNNING runs a training may mark KILLED: only runs it can prove dead, by boot, PID namespace, pid and start
time; a heartbeat (another host's clock, a store away for a while) is shown, never acted on."""

from __future__ import annotations

import subprocess
import time
from types import SimpleNamespace


def a_run(tags: dict[str, str], started_s_ago: float = 3600) -> SimpleNamespace:
    info = SimpleNamespace(run_id="r", start_time=int((time.time() - started_s_ago) * 1000))
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags))


def test_only_a_provably_dead_process_of_this_machine_is_dead(package) -> None:
    from demo_project.liveness import process_gone, process_tags, provably_dead

    mine = process_tags()
    assert not provably_dead(a_run(mine)) and not process_gone(a_run(mine)), "this very process lives"
    ended = subprocess.Popen(["true"])
    ended.wait()
    assert provably_dead(a_run({**mine, "process.pid": str(ended.pid)})), "its pid is gone"
    reused = {**mine, "process.start_ticks": str(int(mine["process.start_ticks"]) - 1)}
    assert provably_dead(a_run(reused)), "the pid now belongs to a process started later"

    old = {**mine, "process.pid": str(ended.pid), "process.heartbeat": str(int(time.time()) - 6 * 60)}
    for elsewhere in (
        {**old, "process.boot_id": "another-boot"},  # another machine, or this one before a reboot
        {**old, "process.pid_ns": "pid:[1]"},  # a container sharing this hostname
        {k: v for k, v in old.items() if k not in ("process.boot_id", "process.pid_ns")},  # an older version's
        {},  # a notebook's run, or another project's
    ):
        assert not provably_dead(a_run(elsewhere)), elsewhere
    skewed = {**old, "process.boot_id": "another-boot"}  # a host 5 minutes behind, or a store away for 6 minutes
    assert not process_gone(a_run(skewed)), "a heartbeat a few minutes old is not a death"
    stopped = {**skewed, "process.heartbeat": str(int(time.time()) - 3600)}
    assert process_gone(a_run(stopped)), "`make runs` shows a heartbeat stopped an hour ago as gone"
