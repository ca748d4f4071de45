"""Keep requirements.lock and pyproject.toml in step (standard library only: it runs before the environment exists).

  python scripts/lock.py stamp   after `uv pip compile` (make lock): record the requirements the lock was made from
  python scripts/lock.py check   before installing (make install): one ERROR line if pyproject.toml's changed since
  python scripts/lock.py pin uv  the locked, hashed lines of one package (make install bootstraps uv from them)
Options: --lock FILE, --pyproject FILE, --extra NAME (optional dependencies locked too) or --group NAME (a
dependency group instead of the project's dependencies).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

MARK = "# Locked from pyproject.toml (make lock); make install refuses this file once these change:"


def declared(pyproject: Path, extras: list[str], groups: list[str]) -> list[str]:
    """The requirements pyproject.toml declares for the lock, one normalized string each."""
    try:
        meta = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        sys.exit(f"ERROR: cannot read {pyproject}: {error}")
    project = meta.get("project", {})
    found = [f"requires-python {project['requires-python']}"] if "requires-python" in project else []
    if groups:
        found += [r for g in groups for r in meta.get("dependency-groups", {}).get(g, [])]
    else:
        found += project.get("dependencies", [])
    found += [r for e in extras for r in project.get("optional-dependencies", {}).get(e, [])]
    return [re.sub(r"\s+", " ", r.strip()) for r in found]


def recorded(lock: Path) -> list[str] | None:
    """The requirements written under MARK in the lock, or None when the lock has no such header."""
    lines = lock.read_text().splitlines()
    if MARK not in lines:
        return None
    found = []
    for line in lines[lines.index(MARK) + 1 :]:
        if not line.startswith("#   "):
            break
        found.append(line[4:])
    return found


def stamp(lock: Path, requirements: list[str]) -> None:
    body = lock.read_text()
    if MARK in body:  # a lock stamped before: replace its header
        lines = body.splitlines(keepends=True)
        start = lines.index(MARK + "\n")
        end = start + 1 + len(recorded(lock) or [])
        body = "".join(lines[:start] + lines[end:])
    lock.write_text("\n".join([MARK, *(f"#   {r}" for r in requirements)]) + "\n" + body)


def check(lock: Path, requirements: list[str]) -> None:
    if not lock.is_file():
        sys.exit(f"ERROR: {lock} is missing: run make lock (it needs the package index) to write it.")
    made_from = recorded(lock)
    if made_from is None:
        sys.exit(f"ERROR: {lock} has no '{MARK[2:30]}...' header: make lock writes it; run make lock.")
    added = [r for r in requirements if r not in made_from]
    removed = [r for r in made_from if r not in requirements]
    if added or removed:
        changes = "; ".join([*(f"now {r}" for r in added), *(f"was {r}" for r in removed)])
        sys.exit(
            f"ERROR: {lock} is older than pyproject.toml ({changes}): run make lock to regenerate it (never edit it "
            "by hand), then make install."
        )


def pin(lock: Path, name: str) -> str:
    """The lock's lines for package ``name``: its ``name==version`` line and the hash lines after it."""
    lines, out = lock.read_text().splitlines(), []
    for line in lines:
        if out and not line.startswith("    --hash"):
            break
        if out or re.match(rf"{re.escape(name)}==", line, re.IGNORECASE):
            out.append(line)
    if not out:
        sys.exit(f"ERROR: {lock} has no {name}: add it to pyproject.toml's dev extra and run make lock.")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["stamp", "check", "pin"])
    parser.add_argument("package", nargs="?")
    parser.add_argument("--lock", type=Path, default=Path("requirements.lock"))
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--group", action="append", default=[])
    args = parser.parse_args()
    if args.command == "pin":
        sys.stdout.write(pin(args.lock, args.package or "uv"))
        return
    requirements = declared(args.pyproject, args.extra, args.group)
    (stamp if args.command == "stamp" else check)(args.lock, requirements)


if __name__ == "__main__":
    main()
