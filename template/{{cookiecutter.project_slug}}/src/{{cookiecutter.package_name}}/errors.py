"""How a failure that is not this project's bug reaches the user: one line, ``ERROR: <what>; <what to do>``."""

from __future__ import annotations


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
