"""Plug the chosen task components into the generated project and remove what belongs to the others.

Components live once, as plain Python, in the template repository's ``tasks/`` and ``datamodules/``
folders; this hook copies them into ``src/<package>/``. It finds them next to the ``template/`` folder
cookiecutter rendered from (a local path or a clone of a git URL).
"""

import os
import shutil
import sys
from pathlib import Path

PACKAGE = "{{ cookiecutter.package_name }}"
REPO_DIR = r"{{ cookiecutter._repo_dir }}"
CHOSEN = {
    "image_captioning": "{{ cookiecutter.image_captioning }}".strip().lower() in {"true", "yes", "y", "1", "on"},
    "price_forecasting": "{{ cookiecutter.price_forecasting }}".strip().lower() in {"true", "yes", "y", "1", "on"},
    "speech_transcription": "{{ cookiecutter.speech_transcription }}".strip().lower() in {"true", "yes", "y", "1", "on"},
}
# What each task owns, by component folder; files not listed here are shared and always copied.
TASKS = {
    "image_captioning": {
        "name": "captioning",
        "tasks": ["captioning.py"],
        "datamodules": ["images.py", "sample_images.py"],
    },
    "price_forecasting": {
        "name": "forecasting",
        "tasks": ["forecasting.py"],
        "datamodules": ["timeseries.py", "sample_prices.py"],
    },
    "speech_transcription": {
        "name": "transcription",
        "tasks": ["transcription.py"],
        "datamodules": ["audio.py", "sample_speech.py"],
    },
}


def find_repo_root() -> Path:
    """The folder that holds ``tasks/`` and ``datamodules/`` (the parent of ``template/``)."""
    template_dir = Path(REPO_DIR)
    if not template_dir.is_absolute():  # cookiecutter pointed straight at template/ by a relative path
        template_dir = Path(os.environ.get("PWD", ".")) / template_dir
    for candidate in (template_dir.parent, template_dir):
        if (candidate / "tasks").is_dir() and (candidate / "datamodules").is_dir():
            return candidate.resolve()
    sys.exit(
        f"ERROR: cannot find the tasks/ and datamodules/ folders next to {template_dir}. "
        "Run cookiecutter on the template repository's root (a path or a git URL), not on its template/ folder."
    )


def copy_components(repo: Path, project: Path) -> None:
    unchosen = {folder: set() for folder in ("tasks", "datamodules")}
    for key, spec in TASKS.items():
        if not CHOSEN[key]:
            for folder in unchosen:
                unchosen[folder].update(spec[folder])
    for folder, skip in unchosen.items():
        target = project / "src" / PACKAGE / folder
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted((repo / folder).glob("*.py")):
            if source.name not in skip:
                shutil.copy2(source, target / source.name)


def remove_unchosen(project: Path) -> None:
    for key, spec in TASKS.items():
        if CHOSEN[key]:
            continue
        name = spec["name"]
        for path in (project / "configs" / f"{name}.yaml", project / "tests" / f"test_{name}.py"):
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    project_dir = Path.cwd()
    copy_components(find_repo_root(), project_dir)
    remove_unchosen(project_dir)
