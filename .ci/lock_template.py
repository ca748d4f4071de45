"""Write the generated projects' requirements.lock into the template, from a project baked with every task.

make lock (in this repository) bakes build/lock/lock-project, runs its own `make lock` there, and calls this script,
which turns that lock into template/{{cookiecutter.project_slug}}/requirements.lock: the project's name and Python
version become cookiecutter variables, and the packages only a task's dependency pulls in (espeakng-loader for
transcription, as template/.../pyproject.toml renders it) are kept for projects with that task only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "template" / "{{cookiecutter.project_slug}}" / "requirements.lock"
# requirement name -> the Jinja condition under which template/.../pyproject.toml declares it
CONDITIONAL = {"espeakng-loader": '"transcription" in cookiecutter.__tasks.split()'}


def package_blocks(lines: list[str]) -> list[tuple[str | None, list[str]]]:
    """The lock cut into (package name or None for the header, its lines)."""
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in lines:
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if match:
            blocks.append((match.group(1).lower(), []))
        blocks[-1][1].append(line)
    return blocks


def templated(lock: str, slug: str, python: str) -> str:
    out: list[str] = []
    for name, block in package_blocks(lock.splitlines(keepends=True)):
        text = "".join(block).replace(f"{slug} (pyproject.toml)", "{{ cookiecutter.project_slug }} (pyproject.toml)")
        if name is None:  # the header: requirements as pyproject.toml declares them
            python_line = "#   requires-python >={}\n"
            text = text.replace(python_line.format(python), python_line.format("{{ cookiecutter.python_version }}"))
            for requirement, condition in CONDITIONAL.items():
                # {%- strips the newline before the tag: the header stays one block of lines either way
                line = rf"(#   {re.escape(requirement)}\b.*\n)"
                text = re.sub(line, rf"{{%- if {condition} %}}\n\1{{%- endif %}}\n", text)
        elif name in CONDITIONAL:
            raw = "".join(block)
            others = [v for v in re.findall(r"#\s+(?:via )?(\S+)", raw) if v not in ("via", slug, "(pyproject.toml)")]
            if others:
                sys.exit(f"ERROR: {name} is also required by {others}: it cannot be left out with its task")
            text = f"{{%- if {CONDITIONAL[name]} %}}\n{text}{{%- endif %}}\n"
        out.append(text)
    return "".join(out)


def main() -> None:
    lock, slug, python = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    TARGET.write_text(templated(lock.read_text(), slug, python))
    print(f"wrote {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
