"""Jinja helpers for the hooks: where the template is, when neither cookiecutter nor cruft says so alike.

cookiecutter puts ``_repo_dir`` in the context, cruft (``cruft create``/``cruft update``) does not; both render the
hooks from inside the template's folder (the one holding ``cookiecutter.json``), so that folder is the working
directory at the moment a hook is rendered. cookiecutter and cruft both put this folder on ``sys.path`` for
``_extensions``, which is how this file is found.
"""

from __future__ import annotations

import os

from jinja2.ext import Extension


class TemplateDir(Extension):
    """``{{ template_dir() }}``: the absolute path of the folder the hook is rendered from."""

    def __init__(self, environment) -> None:
        super().__init__(environment)
        environment.globals["template_dir"] = os.getcwd  # called at render time, not at import
