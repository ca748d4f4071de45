"""Random damage to valid input files, as hypothesis strategies: what spreadsheets, scrapers and copies do to data.

A mutation is ``(kind, a, b, payload)``; ``apply`` reads ``a`` and ``b`` modulo the sizes it meets, so any drawn
mutation applies to any file and shrinks to a small readable one. Cell operations split lines and separators of
the bytes read as Latin-1 (a lossless view of any bytes), so they apply to CSV, TSV and JSON text alike.
"""

from __future__ import annotations

import json
import random

from hypothesis import strategies as st

CELL_KINDS = [
    "drop_cell", "duplicate_cell", "swap_cells", "set_cell",
    "drop_column", "duplicate_column", "swap_columns",
    "drop_row", "duplicate_row", "swap_rows",
]  # fmt: skip
BYTE_KINDS = ["truncate", "insert_bytes", "replace_byte", "reencode", "empty"]
JSON_KINDS = ["set_json_field"]
# Values that users' files really hold where numbers, dates, names or text belong.
NASTY = [
    "", " ", "inf", "-inf", "1e999", "NaN", "nan", "-1", "0", "1e-300", "1,5", "null", "None", "N/A", "#N/A",
    "2021-02-30", "2021-13-01", "2021-03-28T02:30:00+01:00", "2021-03-28 02:30", "1616893800", "yesterday",
    "../x.png", "/etc/passwd", "café", "中文", "नमस्ते", '"', "'", "\\", "\t", "\r", "[1]", "{}", "x" * 300,
]  # fmt: skip
NASTY_JSON = [None, True, 0, -1, 1.5, 1e308, "", "../x.png", "/etc/passwd", "中文", [], [1], {}, {"a": 1}, "x" * 300]

mutation = st.tuples(
    st.sampled_from(CELL_KINDS + BYTE_KINDS + JSON_KINDS),
    st.integers(0, 2**20),
    st.integers(0, 2**20),
    st.binary(min_size=1, max_size=6),
)
mutations = st.lists(mutation, min_size=1, max_size=3)
byte_mutations = st.lists(
    st.tuples(
        st.sampled_from(BYTE_KINDS), st.integers(0, 2**20), st.integers(0, 2**20), st.binary(min_size=1, max_size=6)
    ),
    min_size=1,
    max_size=2,
)


def apply(data: bytes, changes: list[tuple[str, int, int, bytes]]) -> bytes:
    for change in changes:
        data = _apply(data, *change)
    return data


def _apply(data: bytes, kind: str, a: int, b: int, payload: bytes) -> bytes:
    if kind in BYTE_KINDS:
        return _bytes(data, kind, a, b, payload)
    if kind == "set_json_field":
        return _json(data, a, b)
    text = data.decode("latin-1")
    lines = text.split("\n")
    sep = "\t" if "\t" in lines[0] else ","
    rows = [line.split(sep) for line in lines]
    if not rows:
        return data
    i, j = a % len(rows), b % len(rows)
    if kind == "drop_row":
        del rows[i]
    elif kind == "duplicate_row":
        rows.insert(i, list(rows[i]))
    elif kind == "swap_rows":
        rows[i], rows[j] = rows[j], rows[i]
    elif kind in ("drop_column", "duplicate_column", "swap_columns"):
        width = max(len(r) for r in rows)
        c, d = a % width, b % width
        for row in rows:
            if kind == "drop_column" and c < len(row):
                del row[c]
            elif kind == "duplicate_column" and c < len(row):
                row.insert(c, row[c])
            elif kind == "swap_columns" and max(c, d) < len(row):
                row[c], row[d] = row[d], row[c]
    else:
        row = rows[i]
        c = b % len(row)
        if kind == "drop_cell":
            del row[c]
        elif kind == "duplicate_cell":
            row.insert(c, row[c])
        elif kind == "swap_cells":
            other = rows[b % len(rows)]
            d = a % len(other)
            row[c], other[d] = other[d], row[c]
        elif kind == "set_cell":
            row[c] = NASTY[(a + b) % len(NASTY)]
    return "\n".join(sep.join(r) for r in rows).encode("latin-1", errors="replace")


def _bytes(data: bytes, kind: str, a: int, b: int, payload: bytes) -> bytes:
    at = a % (len(data) + 1)
    if kind == "truncate":
        return data[:at]
    if kind == "insert_bytes":
        return data[:at] + payload + data[at:]
    if kind == "replace_byte" and data:
        at = a % len(data)
        return data[:at] + payload[:1] + data[at + 1 :]
    if kind == "reencode":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return data
        encoding = ["utf-16", "utf-16-le", "latin-1", "cp1252", "utf-8-sig", "utf-32"][b % 6]
        return text.encode(encoding, errors="replace")
    if kind == "empty":
        return b""
    return data


def _json(data: bytes, a: int, b: int) -> bytes:
    """Set one field of one object in a JSON document (or of one JSON line) to an odd value."""
    lines = data.split(b"\n") if data.count(b"\n") > 1 else [data]
    i = a % len(lines)
    try:
        document = json.loads(lines[i])
    except ValueError:
        return data
    objects = [document] if isinstance(document, dict) else []
    for value in document.values() if isinstance(document, dict) else []:
        objects += [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
    if not objects:
        return data
    target = random.Random(a).choice(objects)
    keys = [*target, "extra"]
    target[keys[b % len(keys)]] = NASTY_JSON[(a // 7 + b) % len(NASTY_JSON)]
    lines[i] = json.dumps(document, ensure_ascii=b % 2 == 0).encode()  # ``target`` was changed in place
    return b"\n".join(lines)
