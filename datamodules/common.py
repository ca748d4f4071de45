"""What every DataModule shares: the spec DataModule base, clear errors about bad input, config checks, text
decoding, skip policies, input folders and leak-free splits."""

from __future__ import annotations

import codecs
import hashlib
import logging
import math
import unicodedata
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningDataModule

from .unpack import NotText, text_bytes

log = logging.getLogger(__name__)

BadInputPolicy = Literal["error", "skip"]
SEPARATORS = (",", ";", "\t", "|")  # what spreadsheet exports use; the header tells which
# UTF-32's byte-order marks first: the little-endian one starts with UTF-16's.
WIDE_BOMS = (("utf-32", codecs.BOM_UTF32_LE), ("utf-32", codecs.BOM_UTF32_BE),
             ("utf-16", codecs.BOM_UTF16_LE), ("utf-16", codecs.BOM_UTF16_BE))  # fmt: skip


class DataError(ValueError):
    """Bad input data, with a message that names the file, row or field and says what to do."""


def existing_path(path: str | Path, what: str, hint: str = "") -> Path:
    """Return ``path`` as a Path, or explain which file is missing and how to get it."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"{what} {str(path)!r} does not exist (looked in {resolved.resolve()}). {hint}".strip())
    return resolved


class SpecDataModule(LightningDataModule):
    """The base of every task's DataModule: it makes the spec a model is configured with, follows a trained model's
    spec, keeps what it skipped, says whether it has a test split, and reads its data once per command.

    Subclasses implement ``read_splits`` (parse, check and split ``path``; set ``self.spec`` unless a model's spec
    is in use) and ``read_predict`` (the inputs of ``predict_path``), and may override ``use_spec``.
    """

    spec: Any = None  # the spec dataclass of the task: made by ``setup("fit")``, or a trained model's (``use_spec``)
    trained_settings: dict[str, Any] = {}  # noqa: RUF012  (read only) the checkpoint's data settings, when there is one

    def __init__(self) -> None:
        super().__init__()
        self.skipped: list[str] = []  # every entry dropped under on_bad_input: skip, with why
        self._done: set[str] = set()  # "splits", "predict": what setup has read already

    @property
    def has_test_split(self) -> bool:
        """Whether ``setup("test")`` has data: not with ``test_fraction: 0`` (a DataModule without that setting has
        one, or overrides this)."""
        return self.hparams.get("test_fraction") != 0

    def use_spec(self, spec: Any) -> None:
        """Follow a trained model (test, predict, resume): read the data as its checkpoint's spec says."""
        self.spec = spec

    def setup(self, stage: str) -> None:
        """Read and check the data for ``stage``, once: the CLI sets data up before a run starts (bad input is
        refused there), and Lightning calls ``setup`` again inside the command."""
        if stage == "test" and not self.has_test_split:
            raise DataError("data.test_fraction is 0, so there is no test split: set it to e.g. 0.1 to test")
        part = "predict" if stage == "predict" else "splits"
        if part not in self._done:
            self.read_predict() if part == "predict" else self.read_splits()
            self._done.add(part)

    # The position of a streamed training loader (data.prepared) in the checkpoint. Lightning saves a stateful
    # loader's state but does not give it back on resume (litData issue 775), so the DataModule carries it.
    def state_dict(self) -> dict[str, Any]:
        loader = getattr(self, "_train_loader", None)
        return {"train_loader": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loader_state = state.get("train_loader")

    def resumable(self, loader: Any) -> Any:
        """``loader`` (the training one), set to where the checkpoint being resumed stopped, and kept for the next."""
        state, self._loader_state = getattr(self, "_loader_state", None), None
        if state:
            loader.load_state_dict(state)
        self._train_loader = loader
        return loader

    def read_splits(self) -> None:
        raise NotImplementedError

    def read_predict(self) -> None:
        raise NotImplementedError


# ---- config values, checked when the DataModule is made (before any data is read or a run is started) ----------
def check_positive(**values: float) -> None:
    """Refuse sizes that are not positive numbers (``batch_size: 0``, ``lookback: -5``), naming the setting."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise DataError(f"data.{name} must be a positive number, not {value!r}")


def check_non_negative(**values: float) -> None:
    """Refuse counts below zero (``num_workers: -1``), naming the setting."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise DataError(f"data.{name} must be 0 or more, not {value!r}")


def check_policy(policy: str) -> None:
    """``on_bad_input`` must be one of the two policies."""
    if policy not in ("error", "skip"):
        raise DataError(f"data.on_bad_input must be 'error' or 'skip', not {policy!r}")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Validation and test fractions in [0, 1), some validation data, and room left for training."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise DataError(f"data.{name} is {value!r}; it must be in [0, 1), e.g. 0.1")
    if val_fraction == 0:
        raise DataError(
            "data.val_fraction is 0, but the best checkpoint is chosen on validation data: set it to e.g. 0.1"
        )
    if val_fraction + test_fraction >= 1 or math.isclose(val_fraction + test_fraction, 1):
        raise DataError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} leaves no data for training; "
            "keep the sum well below 1 (e.g. 0.1 and 0.1)"
        )


# ---- text files as users save them --------------------------------------------------------------------------------
def read_text(path: Path) -> str:
    """The text of ``path``: UTF-8 with or without a byte-order mark, or UTF-16/32 with one (Excel's "Unicode text"),
    also when compressed or zipped; a binary file is named as such (``unpack.py``).

    Other encodings are refused with the line and byte where decoding failed, rather than guessed: a wrong
    guess would turn names and captions into different words without a sign.
    """
    try:
        data = text_bytes(path, path.read_bytes())
    except OSError as error:  # a folder, no permission, a broken link
        raise DataError(
            f"{str(path)!r} cannot be read ({error.strerror or error}); it must be a readable file"
        ) from None
    except NotText as error:
        raise DataError(f"{path.name} {error}") from None
    wide = next((e for e, bom in WIDE_BOMS if data.startswith(bom)), None)
    if wide:
        try:
            text = data.decode(wide)
        except UnicodeDecodeError as error:
            raise DataError(
                f"{path.name}: starts like {wide.upper()} but is not valid {wide} ({error.reason})"
            ) from None
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise DataError(
                f"{path.name} line {line}: byte 0x{data[error.start]:02X} is not UTF-8 (a file saved as "
                "Windows-1252/Latin-1?); save it as UTF-8 (in Excel: 'CSV UTF-8')"
            ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(
            f"{path.name} line {line}: contains a NUL byte: UTF-16/32 text without a byte-order mark, or not a text "
            "file; save it as UTF-8"
        )
    return text


def sniff_separator(header: str) -> str:
    """The separator of a delimited file from its header line: the most frequent of ``, ; tab |`` (comma on ties)."""
    counts = {sep: header.count(sep) for sep in SEPARATORS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def refuse_duplicates(where: str, header: Sequence[str], wanted: Sequence[str]) -> None:
    """Refuse a header that names a column the data needs twice (a second ``Close``): which one holds it is a guess,
    and readers differ (pandas takes the first, ``csv.DictReader`` the last)."""
    names = [str(h).strip() for h in header]
    for name in dict.fromkeys(wanted):
        at = [i + 1 for i, h in enumerate(names) if h == name]
        if len(at) > 1:
            raise DataError(
                f"{where}: column {name!r} appears {len(at)} times (columns {', '.join(map(str, at[:-1]))} and "
                f"{at[-1]}); rename or remove all but one, so that it is clear which one to use"
            )


def word_characters(text: str) -> str:
    """``text`` (NFKC-normalized, lower case) with every character that is not a letter, combining mark or digit of
    some script, or an apostrophe, turned into a space.

    Combining marks stay: Hindi, Thai or Vietnamese words are letters plus marks, and dropping the marks
    changes the words.
    """
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    return "".join(c if c == "'" or unicodedata.category(c)[0] in "LMN" else " " for c in text)


# ---- bad entries: refused, or skipped and listed --------------------------------------------------------------------
class SkipLog:
    """Collects bad items under the ``skip`` policy, or raises at the first one under ``error``.

    Skipping is never silent: ``report()`` logs how many items were dropped and lists every one; the DataModule
    keeps the list (``skipped``) and the CLI saves it as ``skipped_inputs.txt`` in the run.
    """

    def __init__(self, policy: BadInputPolicy, what: str) -> None:
        check_policy(policy)
        self.policy = policy
        self.what = what
        self.reasons: list[str] = []

    def bad(self, reason: str) -> None:
        if self.policy == "error":
            raise DataError(f"{reason}. Fix or remove it, or set on_bad_input: skip to drop such {self.what}.")
        self.reasons.append(reason)

    def report(self, total: int) -> None:
        if not self.reasons:
            return
        log.warning("skipped %d of %d %s:\n  %s", len(self.reasons), total, self.what, "\n  ".join(self.reasons))
        if len(self.reasons) >= total:
            shown = "; ".join(self.reasons[:3]) + (" ..." if len(self.reasons) > 3 else "")
            raise DataError(f"all {total} {self.what} were bad and skipped: {shown}")


def list_inputs(path: Path, suffixes: Iterable[str], what: str) -> list[Path]:
    """The files to predict for: ``path`` itself, or the files under a folder with one of ``suffixes`` (the others
    are left out with a warning that names their kinds)."""
    if not path.is_dir():
        return [path]
    suffixes = set(suffixes)
    found = sorted(p for p in path.rglob("*") if p.is_file())
    files = [p for p in found if p.suffix.lower() in suffixes]
    if len(found) > len(files):
        others = sorted({p.suffix or p.name for p in found} - {p.suffix for p in files})
        log.warning("%s: %d file(s) that are not %s are left out (%s)", path, len(found) - len(files), what,
                    ", ".join(others[:8]))  # fmt: skip
    if not files:
        raise DataError(f"no {what} ({', '.join(sorted(suffixes))}) under {str(path)!r}")
    return files


def data_file_in(folder: Path, suffixes: dict[str, str], expected: str) -> Path:
    """The one data file (by suffix: ``{".json": "COCO captions"}``) at the top of ``folder``, which ``data.path``
    names instead of the file: a folder that holds ``captions.json`` is read as that file, and one that holds
    several candidates or none is refused with what it does hold."""
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if len(found) == 1:
        log.info("%s is a folder: reading %s (%s)", folder, found[0].name, suffixes[found[0].suffix.lower()])
        return found[0]
    kinds = ", ".join(f"{s} ({what})" for s, what in suffixes.items())
    if found:
        names = ", ".join(p.name for p in found[:6])
        raise DataError(f"data.path {str(folder)!r} holds several data files ({names}): set data.path to one of them")
    present = sorted({p.suffix or p.name for p in folder.iterdir()})[:8]
    raise DataError(
        f"data.path {str(folder)!r} is not {expected} and holds no data file ({kinds}); it holds "
        f"{', '.join(present) or 'nothing'}. Set data.path to your data file"
    )


def split_by_group(groups: Sequence[Hashable], fractions: Sequence[float], seed: int = 0) -> list[list[int]]:
    """Split item indices into parts so that all items of one group land in the same part.

    The assignment hashes each group with the seed, so it is deterministic across runs, processes and
    machines (unlike ``random``), and adding data moves few existing groups between parts.
    """
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions {list(fractions)} must be at least 0 and add up to 1")
    unique = sorted({str(g) for g in groups})
    ranked = sorted(unique, key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
    bounds, acc = [], 0.0
    for fraction in fractions:
        acc += fraction
        bounds.append(round(acc * len(ranked)))
    part_of: dict[str, int] = {}
    start = 0
    for part, end in enumerate(bounds):
        for g in ranked[start:end]:
            part_of[g] = part
        start = end
    parts: list[list[int]] = [[] for _ in fractions]
    for index, group in enumerate(groups):
        parts[part_of[str(group)]].append(index)
    return parts
