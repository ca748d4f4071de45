"""Install-time benchmark: python bench/install.py [--lock requirements.lock] [--rounds 2]

Seconds to install a hash-locked environment into a fresh virtual environment, two ways:
  pip   python -m venv, then pip install --require-hashes --no-deps -r LOCK (the baseline: what make install did);
  uv    uv venv, then uv pip sync --require-hashes LOCK (wheels unpacked once into uv's cache, then linked).
Each tool runs ``--rounds`` times in turn; the first round fills that tool's download cache (cold), the later ones
are the warm-cache figures (a teammate's second project, CI with a cached folder, a re-made .venv). The pip config
of this machine (constraints, extra indexes) applies to pip as it does to make install.
Prints one line per round and tool, then the warm ratio uv/pip and the size of the environment.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def install_pip(venv: Path, lock: Path) -> float:
    return timed([sys.executable, "-m", "venv", str(venv)]) + timed(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--require-hashes", "--no-deps", "-r", str(lock)]
    )


def install_uv(venv: Path, lock: Path) -> float:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    return timed([uv, "venv", "-q", "--python", sys.executable, str(venv)]) + timed(
        [uv, "pip", "sync", "-q", "--require-hashes", "--python", str(venv / "bin/python"), str(lock)]
    )


def size_gb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    warm: dict[str, list[float]] = {"pip": [], "uv": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, install in (("pip", install_pip), ("uv", install_uv)):
                venv = Path(tmp) / f"{name}-{round_}"
                seconds = install(venv, args.lock)
                state = "cold" if round_ == 0 else "warm"
                print(f"{name} {state} install: {seconds:.0f} s, environment {size_gb(venv):.1f} GB", flush=True)
                if round_:
                    warm[name].append(seconds)
                shutil.rmtree(venv)
    if warm["pip"]:
        ratio = min(warm["uv"]) / min(warm["pip"])
        print(f"uv/pip warm install time: {ratio:.2f}")


if __name__ == "__main__":
    main()
