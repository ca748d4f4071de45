"""Offline sample data for each task: ``python -m <package>.sample_data [TASK ...]``.

Each task's sample writer (named in ``tasks/__init__.py``) writes files in the same format users bring, so
swapping in real data means changing ``data.path`` in ``configs/<task>.yaml`` and nothing else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .tasks import TASKS, load

SAMPLE_DIR = Path("data/sample")


def write(task: str, out_dir: Path = SAMPLE_DIR, seed: int = 0, force: bool = False) -> Path:
    """Generate the sample data of ``task`` under ``out_dir/task`` unless it is already complete."""
    target = out_dir / task
    done = target / ".complete"
    if done.exists() and not force:
        return Path(done.read_text().strip())
    path = load(TASKS[task].sample)(target, seed=seed)
    done.write_text(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", help=f"any of {', '.join(TASKS)} (default: all)")
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    parser.add_argument(
        "--for-config", type=Path, help="only if this config reads the sample (its data.path is under --out), silently"
    )
    args = parser.parse_args()
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}: this project has {', '.join(TASKS)}")
    for task in args.tasks or TASKS:
        if args.for_config is None:
            print(f"{task}: {write(task, args.out, args.seed, args.force)}")
        elif reads_sample(args.for_config, args.out) and not (args.out / task / ".complete").exists():
            print(f"Writing the sample data of {task}: {write(task, args.out, args.seed)}")


def reads_sample(config: Path, out_dir: Path) -> bool:
    """Whether ``config``'s ``data.path`` is under ``out_dir`` (the bundled sample), or the config cannot tell."""
    import yaml

    try:
        path = yaml.safe_load(config.read_text())["data"]["init_args"]["path"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return True  # the training itself reports a config it cannot read
    return Path(path).is_relative_to(out_dir) if isinstance(path, str) else True


if __name__ == "__main__":
    main()
