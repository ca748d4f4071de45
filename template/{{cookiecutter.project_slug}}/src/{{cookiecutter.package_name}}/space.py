"""A sweep's search space, ``configs/sweep/<task>.yaml``, read and checked before any trial starts.

Config paths (``model.init_args.lr``) map to distributions: ``{type: float, low: 0.0001, high: 0.01, log: true}``,
``{type: int, low: 16, high: 128, step: 16}``, ``{type: categorical, choices: [lstm, gru]}``. A path the trials'
config does not have, an empty range, a log scale over a non-positive bound or a value the config refuses stops
the sweep with one ``ERROR:`` line naming the file and the entry.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEYS = {"objective", "direction", "epochs", "sampler", "pruner", "args", "params"}
DEFAULT_SAMPLER = {"class": "TPESampler", "seed": 0}
DEFAULT_PRUNER = {"class": "MedianPruner", "n_startup_trials": 3, "n_warmup_steps": 1}


class SpaceError(ValueError):
    """A search space (or sweep setting) that cannot be used; reported as one line."""


@dataclass(frozen=True)
class Param:
    """One config path and the distribution its values are sampled from."""

    key: str
    type: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        suggest = trial.suggest_float if self.type == "float" else trial.suggest_int
        kwargs = {"log": self.log} if self.step is None else {"step": self.step}
        return suggest(self.key, self.low, self.high, **kwargs)

    def describe(self) -> str:
        if self.type == "categorical":
            return f"categorical {json.dumps(list(self.choices))}"
        scale = " log" if self.log else f" step {self.step}" if self.step is not None else ""
        return f"{self.type} [{self.low}, {self.high}]{scale}"

    def edges(self) -> list[Any]:
        """Values a trial may get that the config must accept: the bounds, or every choice."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class Space:
    """What a sweep searches, what it optimizes and how each trial trains."""

    path: Path
    text: str
    params: tuple[Param, ...]
    objective: str
    direction: str
    epochs: int
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    args: tuple[str, ...] = ()
    fit_args: list[str] = field(default_factory=list)  # the trials' config files and flags (before the space's)
    config_tags: dict[str, str] = field(default_factory=dict)  # tracking.tags of that config, kept in the trials

    def as_attrs(self) -> dict[str, Any]:
        """What the study keeps of its space; a sweep continued with another space is refused."""
        space = {p.key: p.describe() for p in self.params}
        return {"space": space, "objective": self.objective, "direction": self.direction, "epochs": self.epochs,
                "sampler": self.sampler, "pruner": self.pruner}  # fmt: skip

    def params_to_log(self) -> dict[str, str]:
        """The parent run's params: the space, sampler, pruner, objective (each logged once, by the parent)."""
        logged = {f"space.{p.key}": p.describe() for p in self.params}
        return {**logged, "objective": self.objective, "direction": self.direction, "epochs": str(self.epochs),
                "sampler": json.dumps(self.sampler), "pruner": json.dumps(self.pruner)}  # fmt: skip


def read_space(path: Path, fit_args: list[str], task: str | None = None) -> Space:
    """The space in ``path``, checked against the config the trials train with (``fit_args``)."""
    import yaml

    where = _shown(path)
    if not path.is_file():
        raise SpaceError(f"{where} not found: write a search space there (configs/sweep/ has one per task)")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpaceError(f"{where} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: expected a mapping with params:, objective:, epochs: ...")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise SpaceError(f"{where}: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(KEYS))}")
    parser = _parser(fit_args)
    config = parser.config
    if task is not None and parser.task.name != task:
        raise SpaceError(f"the trials' config trains {parser.task.name}, not {task}")
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise SpaceError(f"{where}: params: is missing or empty; map config paths to distributions")
    leaves = [key for key in config.keys() if not key.endswith("class_path")]  # noqa: SIM118 (dotted leaves)
    checked = tuple(_param(where, str(key), spec, config, leaves) for key, spec in params.items())
    _accepted(where, parser, fit_args, checked)
    objective = raw.get("objective", config.checkpoint.monitor)
    if not isinstance(objective, str) or not objective:
        raise SpaceError(f"{where}: objective must be a metric name such as val/loss")
    mode_direction = "maximize" if config.checkpoint.mode == "max" else "minimize"
    direction = raw.get("direction", mode_direction if objective == config.checkpoint.monitor else "minimize")
    if direction not in ("minimize", "maximize"):
        raise SpaceError(f"{where}: direction {direction!r} must be minimize or maximize")
    epochs = raw.get("epochs", config.trainer.max_epochs)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise SpaceError(f"{where}: epochs {epochs!r} must be a whole number of epochs per trial, at least 1")
    sampler = _component(where, "sampler", raw.get("sampler", DEFAULT_SAMPLER))
    pruner = _component(where, "pruner", raw.get("pruner", DEFAULT_PRUNER))
    args = raw.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise SpaceError(f"{where}: args must be a list of fit flags, e.g. [--data.init_args.num_workers, '2']")
    tags = {str(k): str(v) for k, v in (config.tracking.tags or {}).items()}
    return Space(path, text, checked, objective, direction, epochs, sampler, pruner, tuple(args), fit_args, tags)


def _param(where: str, key: str, spec: Any, config: Any, leaves: list[str]) -> Param:
    name = f"{where}: params.{key}"
    if key not in config or hasattr(config[key], "keys"):
        near = difflib.get_close_matches(key, leaves, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SpaceError(f"{name}: no such setting in the trials' config{hint}")
    if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
        raise SpaceError(f"{name}: give type: float, int or categorical (with low/high, or choices)")
    kind = spec["type"]
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise SpaceError(f"{name}: {extra[0]!r} does not apply to a {kind} (use {', '.join(sorted(allowed))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{name}: choices must be a non-empty list")
        if not all(c is None or isinstance(c, str | int | float | bool) for c in choices):
            raise SpaceError(f"{name}: choices must be plain values (text, numbers, true/false, null)")
        return Param(key, kind, choices=tuple(choices))
    low, high = (_number(name, bound, spec.get(bound), kind) for bound in ("low", "high"))
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise SpaceError(f"{name}: log must be true or false")
    if not low < high:
        raise SpaceError(f"{name}: empty range, low {low} is not below high {high}")
    if log and low <= 0:
        raise SpaceError(f"{name}: a log scale needs low above 0, not {low}")
    if step is not None:
        step = _number(name, "step", step, kind)
        if step <= 0 or log:
            raise SpaceError(f"{name}: step must be above 0, and cannot go with log: true")
    return Param(key, kind, low, high, log, step)


def _number(name: str, what: str, value: Any, kind: str) -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpaceError(f"{name}: {what} must be a finite number, not {value!r}")
    if kind == "int":
        if value != int(value):
            raise SpaceError(f"{name}: {what} {value} must be a whole number for an int")
        return int(value)
    return float(value)


def _component(where: str, what: str, spec: Any) -> dict[str, Any]:
    """A sampler or pruner ``{class: <Optuna class>, <arguments>}``, tried out now."""
    import optuna

    module = optuna.samplers if what == "sampler" else optuna.pruners
    if not isinstance(spec, dict) or not isinstance(spec.get("class"), str):
        raise SpaceError(f"{where}: {what} must be a mapping: class: <name in optuna.{what}s>, then its arguments")
    cls = getattr(module, spec["class"], None)
    if not isinstance(cls, type):
        names = sorted(n for n in dir(module) if n[0].isupper() and not n.startswith("Base"))
        raise SpaceError(f"{where}: {what} {spec['class']!r} is not in optuna.{what}s ({', '.join(names)})")
    try:
        cls(**{k: v for k, v in spec.items() if k != "class"})
    except (TypeError, ValueError) as error:
        raise SpaceError(f"{where}: {what} {spec['class']}: {error}") from None
    return dict(spec)


def _parser(fit_args: list[str]) -> Any:
    """The trials' config, parsed as ``fit`` parses it (LightningCLI), to check paths and values against."""
    from .cli import ConfigParser

    return ConfigParser("fit", fit_args)


def _accepted(where: str, parser: Any, fit_args: list[str], params: tuple[Param, ...]) -> None:
    """Every bound and choice must be a value the config takes (a float for an int setting is refused now)."""
    parser.parser.exit_on_error = False

    def refusal(flags: list[str]) -> str | None:
        try:
            parser.parser.parse_args([*fit_args, *flags])
        except Exception as error:  # jsonargparse nests the reason in a report of every type it tried
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            said = [line for line in lines if line.startswith("Expected a") and "NoneType" not in line]
            return (said or lines or [type(error).__name__])[-1]
        return None

    rounds = [  # the low bounds (first choices) together, then the high ones: two parses in the common case
        [flag for p in params for flag in (f"--{p.key}", _flag(p.edges()[min(i, len(p.edges()) - 1)]))]
        for i in range(max(len(p.edges()) for p in params))
    ]
    if all(refusal(flags) is None for flags in rounds):
        return
    for param in params:
        for value in param.edges():
            reason = refusal([f"--{param.key}", _flag(value)])
            if reason is not None:
                raise SpaceError(f"{where}: params.{param.key}: {value!r} is refused by the config ({reason})")


def _flag(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
