"""``python -m <module> ARGS`` for a test, started as a fork of ``zygote.py`` (imports done) instead of a fresh Python.

Same contract as ``subprocess.run(..., capture_output=True, text=True, timeout=...)``: a ``CompletedProcess`` with
the exit status and both outputs, ``TimeoutExpired`` after killing the command's process group. One zygote per
pytest worker, started on first use. A second command while one runs (a test's own threads), or
``TESTS_FRESH_PYTHON=1``, gets a fresh Python, as does everything started through ``make``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ZYGOTE = Path(__file__).with_name("zygote.py")
# The zygote's own environment: what a command sets for itself must not be fixed when torch and MLflow are imported.
NOT_INHERITED = ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MLFLOW_TRACKING_URI", "MLFLOW_LOGGING_LEVEL")


class Zygote:
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        self.process = subprocess.Popen(
            [sys.executable, str(ZYGOTE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.lock = threading.Lock()
        atexit.register(self.process.kill)

    def answer(self, timeout: float | None) -> dict | None:
        if timeout is not None and not select.select([self.process.stdout], [], [], max(0.0, timeout))[0]:
            return None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the test zygote ({ZYGOTE.name}) ended; run with TESTS_FRESH_PYTHON=1 to compare")
        return json.loads(line)

    def run(self, module: str, argv: list[str], cwd: Path, env: dict[str, str], timeout: float):
        command = [sys.executable, "-m", module, *argv]
        with tempfile.TemporaryDirectory(prefix="forked-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"module": module, "argv": argv, "cwd": str(cwd), "env": env}
            request.update(stdout=str(out), stderr=str(err))
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = self.answer(timeout=600)["pid"]  # the first command waits for the zygote's imports
            done = self.answer(timeout)
            if done is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self.answer(None)
                raise subprocess.TimeoutExpired(command, timeout, _read(out), _read(err))
            return subprocess.CompletedProcess(command, done["status"], _read(out), _read(err))


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace") if path.exists() else ""


_zygote: Zygote | None = None


def run(module: str, argv: list[str], cwd: Path, env: dict[str, str], timeout: float):
    """``python -m module argv`` in ``cwd`` with exactly ``env``, its outputs captured."""
    global _zygote
    if os.environ.get("TESTS_FRESH_PYTHON") != "1":
        if _zygote is None or _zygote.process.poll() is not None:
            _zygote = Zygote()
        zygote = _zygote
        if zygote.lock.acquire(blocking=False):
            try:
                return zygote.run(module, argv, cwd, env, timeout)
            except subprocess.TimeoutExpired:
                raise
            except BaseException:  # out of step with its answers: the next command starts another
                zygote.process.kill()
                _zygote = None
                raise
            finally:
                zygote.lock.release()
    command = [sys.executable, "-m", module, *argv]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
