"""A Python with torch, Lightning and MLflow imported once, that forks one process per CLI command of a test.

A fresh ``python -m <package>`` spends about 5 s importing those before it reads its arguments: most of what a
test of a refusal or a short training costs, and the suite runs many. ``forked.run`` sends this process a
command; it forks a child that becomes that command's process, as a shell would start it (its own argv,
environment, working directory, ``sys.path`` from PYTHONPATH, stdin from /dev/null, stdout and stderr to files,
thread count from OMP_NUM_THREADS, a process group of its own) and runs the module as ``python -m`` does
(``runpy``, so DDP launches its ranks as usual); it answers with the child's pid, then its exit status. The
project's own code is never imported here, so every command imports the project it runs in, as a fresh Python would.
Started by ``forked.py``; requests and answers are JSON lines on stdin and stdout.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import json
import os
import runpy
import signal
import sys
import threading

# What the CLI imports before it does anything: a module that is not installed is left to the command.
PRELOAD = (
    "numpy", "pandas", "torch", "torchvision", "torchaudio", "torchmetrics", "lightning.pytorch",
    "lightning.pytorch.cli", "jsonargparse", "PIL.Image", "soundfile", "mlflow", "mlflow.tracking",
    "mlflow.tracking.context.registry", "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.tracking.rest_store",
    "mlflow.system_metrics.system_metrics_monitor",
)  # fmt: skip
BASE_PATH = sys.path[1:]  # without this script's folder: a command's sys.path is its cwd, PYTHONPATH, then these
DEFAULT_THREADS = os.cpu_count() or 1  # torch's own default replaces it once torch is imported


def preload() -> None:
    """Import what every command imports (``make venv`` runs this too, to write those modules' bytecode)."""
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def main() -> None:
    _die_with(signal.SIGKILL)  # with the pytest worker that started it
    preload()
    if "torch" in sys.modules:  # started without OMP_NUM_THREADS: what a fresh Python without it would use
        global DEFAULT_THREADS
        DEFAULT_THREADS = sys.modules["torch"].get_num_threads()
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    while line := sys.stdin.readline():
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            answers.close()
            _become(request)
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")


def _become(request: dict) -> None:
    """In the child: become ``python -m <module> <argv>`` started from a shell, run it, and exit as it would."""
    code = 1
    try:
        os.setpgid(0, 0)  # a group of its own, so that a timeout stops its DDP ranks and loader workers too
        _die_with(signal.SIGKILL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [request["cwd"], *extra, *BASE_PATH]
        importlib.invalidate_caches()
        _fresh_state(request["env"])
        sys.argv = [request["module"], *request["argv"]]
        code = _run(request["module"])
        threading._shutdown()  # what Python does at exit: wait for the threads that are not daemons
        atexit._run_exitfuncs()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _run(module: str) -> int:
    """The exit status Python would give ``python -m module``."""
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return (done.code or 0) & 0xFF
        print(done.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - printed as Python prints it
        sys.excepthook(*sys.exc_info())
        return 130 if isinstance(sys.exc_info()[1], KeyboardInterrupt) else 1
    return 0


def _fresh_state(env: dict[str, str]) -> None:
    """What a fresh Python would start with: OpenMP read OMP_NUM_THREADS when this process loaded it (torch gets
    the command's own setting), and numpy's global generator is seeded from the OS."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(env.get("OMP_NUM_THREADS") or DEFAULT_THREADS))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # a fresh Python seeds it from the OS; a fork would repeat the parent's state


def _die_with(sig: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG: when the parent ends


if __name__ == "__main__":
    main()
