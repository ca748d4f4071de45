"""Offline sample data for each task: ``python -m {{ cookiecutter.package_name }}.sample_data [TASK ...]``.

Each generator writes files in the same format users bring, so swapping in real data means changing
``data.path`` in ``configs/<task>.yaml`` and nothing else.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

# task -> (module under this package, function(out_dir, seed) -> path to use as data.path)
GENERATORS = {
    "captioning": ("datamodules.sample_images", "write_sample"),
    "forecasting": ("datamodules.sample_prices", "write_sample"),
    "transcription": ("datamodules.sample_speech", "write_sample"),
}
SAMPLE_DIR = Path("data/sample")


def available_tasks() -> list[str]:
    """The tasks whose components were generated into this project."""
    found = []
    for task, (module, _) in GENERATORS.items():
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as error:
            if error.name and error.name.endswith(module):
                continue
            raise
        found.append(task)
    return found


def write(task: str, out_dir: Path = SAMPLE_DIR, seed: int = 0, force: bool = False) -> Path:
    """Generate the sample data of ``task`` under ``out_dir/task`` unless it is already complete."""
    module, function = GENERATORS[task]
    target = out_dir / task
    done = target / ".complete"
    if done.exists() and not force:
        return Path(done.read_text().strip())
    path = getattr(importlib.import_module(f"{__package__}.{module}"), function)(target, seed=seed)
    done.write_text(str(path))
    return path


def main() -> None:
    tasks = available_tasks()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", help=f"any of {', '.join(tasks)} (default: all)")
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args()
    unknown = sorted(set(args.tasks) - set(tasks))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}: this project has {', '.join(tasks)}")
    for task in args.tasks or tasks:
        print(f"{task}: {write(task, args.out, args.seed, args.force)}")


if __name__ == "__main__":
    main()
