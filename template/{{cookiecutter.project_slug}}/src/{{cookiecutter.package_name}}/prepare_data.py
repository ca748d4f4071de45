"""``make prepare-data``: ``python -m <package>.prepare_data --config configs/<task>.yaml [--out DIR] [--key value]``.

Reads the config as training does (the same data settings and the same checks), then writes the data as LitData
chunks under ``--out`` (``datamodules/prepared.py``); train from them with ``--data.prepared DIR``.
"""

from __future__ import annotations

import sys

from .cli import USER_ERRORS, ConfigParser
from .datamodules.prepared import prepare
from .errors import first_line
from .quiet import quiet_terminal


def main(args: list[str] | None = None) -> None:
    quiet_terminal()
    argv = list(sys.argv[1:] if args is None else args)
    out, workers = None, None
    for flag in ("--out", "--workers"):
        if flag in argv:
            at = argv.index(flag)
            value = argv[at + 1] if at + 1 < len(argv) else ""
            del argv[at : at + 2]
            out, workers = (value, workers) if flag == "--out" else (out, int(value))
    try:
        parser = ConfigParser("fit", argv)
        data = parser.build(None).data
        out = out or f"data/prepared/{parser.task.name}"
        changed = prepare(data, out, workers)
    except USER_ERRORS as error:
        raise SystemExit(f"ERROR: {first_line(error)}") from None
    print(f"{'Prepared' if changed else 'Unchanged, nothing to do:'} {out}; train on it with --data.prepared {out}")


if __name__ == "__main__":
    main()
