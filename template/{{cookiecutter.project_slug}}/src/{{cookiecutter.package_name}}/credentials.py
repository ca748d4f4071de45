"""Secrets stay out of every output: the terminal, ``slurm-*.out``, log files, the store.

Two layers. The password of a tracking URI (``http://user:password@host``) is moved into MLflow's own variables,
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, for this process and those it starts, so that MLflow,
which words its errors with the URI as given, never has it to print. And whatever is printed on the way out (every
log record, warning and uncaught error, whoever raised it) has the known secrets and any URI's userinfo replaced by
``***``: a library's new message cannot leak what the call sites never see.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
import warnings
from urllib.parse import quote, unquote

# Variables whose value is a secret wherever it shows up.
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD")
HTTP_USERINFO = re.compile(r"^(https?://)(\S*)@([^@/\s]*(?:[/?#]\S*)?)$")  # to the last "@" before the host
USERINFO = re.compile(r"(?<=://)([^:/@\s]*):(\S*)@(?=[^@/\s]*(?:[/?#\s]|$))")
MIN_SECRET = 4  # shorter "secrets" would blank out ordinary words
_met: set[str] = set()  # secrets read from URIs in this process


def userinfo_out(uri: str) -> str:
    """``uri`` without a ``user:password@`` of an HTTP(S) server; the credentials go to MLflow's variables.

    A database URI (``postgresql://user:pw@db/mlflow``) keeps its password, which SQLAlchemy needs; it is still
    scrubbed from output.
    """
    found = HTTP_USERINFO.match(uri)
    if found is None:
        if userinfo := USERINFO.search(uri):
            _met.add(unquote(userinfo.group(2)))
        return uri
    scheme, userinfo, rest = found.groups()
    user, _, password = userinfo.partition(":")
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
    if password:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
        _met.add(unquote(password))
    plain = scheme + rest
    if os.environ.get("MLFLOW_TRACKING_URI") == uri:  # the processes this one starts (DDP ranks) inherit the same
        os.environ["MLFLOW_TRACKING_URI"] = plain
    return plain


def secrets() -> set[str]:
    """The secrets known to this process, as they may appear in text (as given and percent-encoded)."""
    values = _met | {os.environ[name] for name in SECRET_VARIABLES if os.environ.get(name)}
    return {form for value in values if len(value) >= MIN_SECRET for form in (value, quote(value, safe=""))}


def scrub(text: str) -> str:
    """``text`` with every known secret and every URI's userinfo shown as ``***``."""
    from .store import redact

    for secret in sorted(secrets(), key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact(text)


def guard_output() -> None:
    """Scrub, from now on, every log record, warning and uncaught error this process prints."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "scrubs", False):
        return

    def scrubbed_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            record.msg, record.args = scrub(record.getMessage()), ()
        except Exception:  # a library's malformed record: logging reports it as it would have
            return record
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return record

    scrubbed_record.scrubs = True
    logging.setLogRecordFactory(scrubbed_record)

    def excepthook(kind, value, tb) -> None:
        sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit:
            name = args.thread.name if args.thread else "a thread"
            text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
            sys.stderr.write(scrub(f"Exception in {name}:\n{text}"))

    sys.excepthook, threading.excepthook = excepthook, thread_excepthook
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        show(scrub(str(message)), category, filename, lineno, file, line)

    warnings.showwarning = showwarning
