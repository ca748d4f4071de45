"""Reject bad answers before anything is generated, with a message that says what to type instead."""

from __future__ import annotations

import keyword
import re
import sys
import unicodedata
from urllib.parse import urlparse

# Answers as JSON strings: quotes, backslashes or `$` in them cannot break this file.
SLUG = {{ cookiecutter.project_slug|tojson }}
PACKAGE = {{ cookiecutter.package_name|tojson }}
PYTHON = {{ cookiecutter.python_version|tojson }}
TRACKING_URI = {{ cookiecutter.mlflow_tracking_uri|tojson }}
TASKS = {{ cookiecutter.__tasks|tojson }}.split()  # the chosen tasks (template/cookiecutter.json)
FREE_TEXT = {
    "project_name": {{ cookiecutter.project_name|tojson }},
    "description": {{ cookiecutter.description|tojson }},
    "author": {{ cookiecutter.author|tojson }},
}
# A newline in an answer would end a Makefile or TOML line and turn the rest into code; tabs and other control
# characters have no place in a one-line answer either.
CONTROL = ("Cc", "Zl", "Zp")


def problems() -> list[str]:
    found = []
    if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", SLUG):
        found.append(
            f"project_slug {SLUG!r} is not a valid folder name: use lower-case letters, digits and single dashes, "
            "starting with a letter (e.g. 'my-project')."
        )
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", PACKAGE) or keyword.iskeyword(PACKAGE):
        found.append(
            f"package_name {PACKAGE!r} is not a valid Python package name: use lower-case letters, digits and "
            "underscores, starting with a letter, and not a Python keyword (e.g. 'my_project')."
        )
    if not TASKS:
        found.append(
            "no task chosen: answer yes to at least one of image_captioning, price_forecasting, speech_transcription."
        )
    version = re.fullmatch(r"3\.(\d+)", PYTHON.strip())
    if not version or int(version.group(1)) < 11:
        found.append(f"python_version {PYTHON!r} is not supported: use 3.11 or newer (e.g. '3.11').")
    for name, value in FREE_TEXT.items():
        bad = next((c for c in value if unicodedata.category(c) in CONTROL), None)
        if bad is not None:
            found.append(
                f"{name} has a control character in it ({ascii(bad)}): write it on one line, without tabs or "
                "control characters."
            )
    problem = uri_problem(TRACKING_URI)
    if problem:
        found.append(
            f"mlflow_tracking_uri {TRACKING_URI!r} is not a tracking URI ({problem}): use e.g. 'sqlite:///mlflow.db' "
            "or 'http://127.0.0.1:5000'."
        )
    return found


def uri_problem(uri: str) -> str | None:
    """What is wrong with ``uri`` as an MLflow tracking URI, or None."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]  # postgresql+psycopg://
    if not uri or any(c.isspace() or c in "\"'`<>\\" for c in uri):
        return "empty, or spaces, quotes or backslashes in it"
    if scheme == "sqlite":
        return None if uri.startswith("sqlite:///") and len(uri) > len("sqlite:///") else "use sqlite:///<path>"
    if scheme in ("http", "https", "postgresql", "mysql", "mssql"):
        return None if parsed.hostname else f"no host after {parsed.scheme}://"
    if scheme in ("file", "databricks"):
        return None
    return f"unknown scheme {parsed.scheme!r}" if parsed.scheme else "no scheme such as sqlite:/// or http://"


if __name__ == "__main__":
    errors = problems()
    if errors:
        sys.stderr.write("ERROR: cannot generate the project:\n" + "".join(f"  - {e}\n" for e in errors))
        sys.exit(1)
