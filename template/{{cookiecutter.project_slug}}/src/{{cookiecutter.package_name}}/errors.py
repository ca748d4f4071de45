"""How a failure that is not this project's bug reaches the user: one line, ``ERROR: <what>; <what to do>``.

Config mistakes name the key, the value and what is allowed, whichever library found them: jsonargparse reports a
bad value as a tree of every type it tried (and an unknown key with the whole usage text); Lightning raises
``MisconfigurationException`` or ``ValueError`` naming only its own argument (```max_epochs```). ``explain`` turns
each into ``trainer.max_epochs: ... You passed in -3``-like lines; the usage text stays behind ``--help``.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re
from types import TracebackType

# The classes whose settings are config sections, by the name Lightning's messages use for them.
SECTIONS = {"Trainer": "trainer", "ModelCheckpoint": "checkpoint", "PredictionWriter": "predictions"}
HELP = "`python -m {package} fit --help` lists every setting"


def explain(error: BaseException) -> str | None:
    """One line for a config mistake, or None when ``error`` is not one (a bug, which should trace)."""
    if isinstance(error, argparse.ArgumentError) or type(error).__name__ == "ArgumentError":
        return parse_error(str(error))
    if type(error).__name__ == "MisconfigurationException":
        return lightning_error(error)
    if isinstance(error, ValueError | LookupError | TypeError) and _raised_in_init(error.__traceback__):
        return lightning_error(error)
    return None


def parse_error(message: str) -> str:
    """jsonargparse's message (a tree of lines) as one line naming the full key, the value and what is allowed."""
    unknown = re.search(r"unrecognized arguments: (--)?([\w.]+)(?:[ =](.*))?", message)
    if unknown:
        key, value = unknown.group(2), (unknown.group(3) or "").strip()
        shown = f" = {value}" if value else ""
        return f"{key}{shown}: no such setting{_close_to(key)}; {HELP.format(package=_package())}"
    flat = " ".join(message.split())
    refused = re.search(r"(?:Group '([\w.]+)' )?does not accept option '([\w.]+)'", message)  # in a config file
    if refused:
        key = ".".join(k for k in refused.groups() if k)
        return f"{key}: no such setting{_close_to(key)}; {HELP.format(package=_package())}"
    if "Problems parsing config" in message:
        return f"--config: not a valid YAML file ({flat.partition(': ')[2][:240]})"
    missing = re.search(r'Parser key "config": (File does not exist: .*)', message)
    if missing:
        return f"--config: {missing.group(1)}"
    needs = re.match(r"argument --([\w.]+): (expected .*)", flat)
    if needs:
        return f"{needs.group(1)}: {needs.group(2)} (a value after --{needs.group(1)})"
    keys = re.findall(r'Parser key "([^"]+)"', message)
    if not keys:
        return flat
    key = ".".join(_join_keys(keys, message)) or "config"
    option = re.search(r"Option '([^']+)' is not accepted|Key '([^']+)' is not expected", message)
    if option:
        name = option.group(1) or option.group(2)
        key = f"{key}.{name}".replace("init_args.init_args.", "init_args.") if key != "config" else name
        return f"{key}: no such setting{_class_settings(message, name)}"
    given = [v for v in re.findall(r"(?:Given|Got) value: (.*)", message) if not v.startswith("NestedArg(")]
    value = given[0] if given else ""  # the innermost comes first
    allowed = _allowed(_innermost(message))
    path = re.search(r"Expected a path but (.*?) either not accessible or invalid", message)
    if path and not allowed:
        allowed = "an existing file"
    shown = f" = {value.strip()}" if value else ""
    return f"{key}{shown}: not allowed; expected {allowed or 'another value'} ({HELP.format(package=_package())})"


def lightning_error(error: BaseException) -> str:
    """A Lightning or model message with the config key it is about put first: ``trainer.devices: ...``."""
    message = " ".join(str(error).split())
    named = re.search(r"`?(\w+)\((\w+)=", message)  # `Trainer(devices='0')`, `ModelCheckpoint(monitor='x')`
    if named and named.group(1) in SECTIONS:
        return f"{SECTIONS[named.group(1)]}.{named.group(2)}: {message}"
    section, owner = _section(error.__traceback__)
    if section == "seed_everything":
        return f"seed_everything: {message}"
    if owner is not None:
        names = [p for p in inspect.signature(owner).parameters if p not in ("self", "args", "kwargs")]
        found = sorted(
            (m.start(), name) for name in names if (m := re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message))
        )
        if found:
            name = found[0][1]
            if re.search(rf"\b(model|data|trainer)\.(init_args\.)?{re.escape(name)}\b", message):
                return message  # it names the key already: a message of this project
            return f"{section}.{name}: {message}"
    return message


def _join_keys(keys: list[str], message: str) -> list[str]:
    """``data`` then ``lookback`` -> ``data.init_args.lookback``: the key as a config file or ``--`` flag spells it."""
    out: list[str] = []
    for key in keys:
        out.append(key)
        if "class_path" in message and key in ("model", "data", "optimizer", "lr_scheduler"):
            out.append("init_args")
    return out


def _innermost(message: str) -> str:
    """The lines under the last ``Parser key`` of a jsonargparse message: what the key itself allows (the outer
    lines are about the section, ``model: LightningModule | None``)."""
    lines = message.splitlines()
    last = max((i for i, line in enumerate(lines) if 'Parser key "' in line), default=-1)
    if last < 0:
        return message
    indent = len(lines[last]) - len(lines[last].lstrip())
    block = [lines[last]]
    for line in lines[last + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    return "\n".join(block)


def _allowed(message: str) -> str:
    """What the innermost errors say a value may be, once each: ``one of lstm, gru, transformer``, ``an int``."""
    choices = re.findall(r"Literal\[([^\]]+)\]", message)
    if choices:
        values = [v.strip().strip("'") for group in choices for v in group.split(",")]
        return "one of " + ", ".join(dict.fromkeys(values))
    types = re.findall(r"Expected a <class '([\w.]+)'>", message)
    types += re.findall(r"Expected a ([\w.]+\[[^\]]*\])", message)
    kinds = [t.rpartition(".")[2] for t in dict.fromkeys(types) if t != "NoneType"]
    if "NoneType" in types:
        kinds.append("null")
    return " or ".join(k if k == "null" else f"an {k}" if k[0] in "aeiou" else f"a {k}" for k in kinds)


def _close_to(key: str) -> str:
    """``; did you mean trainer.max_epochs?`` among the Trainer's and the task classes' settings, or nothing."""
    section, _, name = key.rpartition(".")
    known: list[str] = []
    if section == "trainer":
        from lightning.pytorch import Trainer

        known = list(inspect.signature(Trainer).parameters)
    match = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {section}.{match[0]}?" if match else ""


def _class_settings(message: str, name: str) -> str:
    """``; PriceForecaster takes backbone, hidden_size, ... (did you mean hidden_size?)`` from the class path."""
    found = re.search(r"given class_path '([\w.]+)'", message)
    if not found:
        return ""
    module, _, cls = found.group(1).rpartition(".")
    try:
        owner = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return ""
    names = [p for p in inspect.signature(owner).parameters if p not in ("self", "spec", "args", "kwargs")]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"; {cls} takes {', '.join(names)}{hint}"


def _section(tb: TracebackType | None) -> tuple[str, type | None]:
    """The config section whose class raised while it was made (the outermost ``__init__`` of a Trainer, model or
    DataModule): an error while training is no config mistake."""
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer

    while tb is not None:
        if tb.tb_frame.f_code.co_name == "seed_everything":  # the config's seed_everything: numpy's bounds
            return "seed_everything", None
        owner = tb.tb_frame.f_locals.get("self") if tb.tb_frame.f_code.co_name == "__init__" else None
        made = ((Trainer, "trainer"), (LightningModule, "model.init_args"), (LightningDataModule, "data.init_args"))
        for cls, section in made:
            if isinstance(owner, cls):
                return section, type(owner)
        for cls in type(owner).__mro__ if owner is not None else ():
            if cls.__name__ in SECTIONS:  # ModelCheckpoint (checkpoint:), PredictionWriter (predictions:)
                return SECTIONS[cls.__name__], type(owner)
        tb = tb.tb_next
    return "", None


def _raised_in_init(tb: TracebackType | None) -> bool:
    """Whether an error comes from building a Trainer, model or DataModule from the config, or seeding."""
    return bool(_section(tb)[0])


def _package() -> str:
    return __name__.rpartition(".")[0]


class ConfigError(ValueError):
    """A config value the model or the trainer cannot work with; reported without a traceback."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type when it has none).

    A DataLoader worker's error arrives wrapped in the worker's traceback: its own message is the last line there.
    """
    message = str(error).strip()
    if "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.partition(f"{type(error).__name__}: ")[2] or last
    return (message.splitlines() or [type(error).__name__])[0]


def innermost_value_error(error: BaseException) -> BaseException:
    """The innermost ``ValueError`` or ``LookupError`` that ``error`` was raised from: what the user's value set off
    (jsonargparse wraps what a class raised in a message of its own)."""
    found, seen = error, set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ValueError | LookupError):
            found = current
        current = current.__cause__ or current.__context__
    return found
