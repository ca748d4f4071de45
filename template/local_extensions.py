"""Jinja helpers of this template: where the template is (for the hooks), and TOML strings (for pyproject.toml).

Where the template is, when neither cookiecutter nor cruft says so alike:
cookiecutter puts ``_repo_dir`` in the context, cruft (``cruft create``/``cruft update``) does not; both render the
hooks from inside the template's folder (the one holding ``cookiecutter.json``), so that folder is the working
directory at the moment a hook is rendered. cookiecutter and cruft both put this folder on ``sys.path`` for
``_extensions``, which is how this file is found.
"""

from __future__ import annotations

import json
import os

from jinja2 import Environment
from jinja2.ext import Extension


class TemplateDir(Extension):
    """``{{ template_dir() }}``: the absolute path of the folder the hook is rendered from."""

    def __init__(self, environment) -> None:
        super().__init__(environment)
        environment.globals["template_dir"] = os.getcwd  # called at render time, not at import


def toml_string(value: object) -> str:
    """``value`` as a TOML basic string.

    JSON's escapes (quote, backslash, ``\\n``, ``\\uXXXX``) are TOML's too; Jinja's ``tojson`` also writes characters
    beyond the BMP (an emoji) as surrogate pairs, which TOML refuses, so non-ASCII text is written as it is (UTF-8).
    """
    return json.dumps(str(value), ensure_ascii=False)


class TomlFilters(Extension):
    """``{{ value|toml }}``: a TOML string."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["toml"] = toml_string
