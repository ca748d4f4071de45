"""Jinja filters of this template (cookiecutter loads this file from the template folder: ``_extensions``)."""

from __future__ import annotations

import json

from jinja2 import Environment
from jinja2.ext import Extension


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
