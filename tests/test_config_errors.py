"""Every config mistake ends in one ``ERROR:`` line naming the key, the value and what is allowed; never a traceback,
never an MLflow run for a training that did not start.

The CLI runs in this process (``main(args)``, as ``python -m <package>`` does) with a few-step budget, so that a
table row or a hypothesis example costs a fraction of a second; one row runs it as a subprocess, as users do.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import inprocess
import pytest
import yaml
from conftest import assert_refused, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inprocess import FAST


@pytest.fixture(scope="module")
def baked(project, package, tmp_path_factory) -> inprocess.Project:
    return inprocess.prepare(project, package, tmp_path_factory.mktemp("in-process"))


@pytest.fixture
def cli(baked, monkeypatch) -> inprocess.Project:
    return inprocess.enter(baked, monkeypatch)


# What users write where a number, a name or a path belongs.
BAD_VALUES = {"wrong-type": "abc", "negative": "-1", "zero": "0", "huge": "1000000000000", "empty": '""',
              "no-such-path": "/nonexistent/x.csv"}  # fmt: skip

# ---- each kind of mistake, and what the line must say -------------------------------------------------------------
MISTAKES = {
    "unknown-key": (
        ["--trainer.max_epocs", "3"],
        ["trainer.max_epocs = 3", "no such setting", "did you mean trainer.max_epochs?"],
    ),  # noqa: E501
    "unknown-model-key": (
        ["--model.init_args.hiden_size", "3"],
        ["model.init_args.hiden_size", "PriceForecaster takes", "did you mean hidden_size?"],
    ),  # noqa: E501
    "wrong-type": (["--data.init_args.lookback", "abc"], ["data.init_args.lookback = abc", "expected an int"]),
    "not-a-choice": (
        ["--model.init_args.backbone", "lstn"],
        ["model.init_args.backbone = lstn", "one of lstm, gru, transformer"],
    ),  # noqa: E501
    "negative-max-epochs": (["--trainer.max_epochs", "-3"], ["trainer.max_epochs", "-3", "non-negative integer or -1"]),  # noqa: E501
    "zero-devices": (["--trainer.devices", "0"], ["trainer.devices", "'0'"]),
    "text-devices": (["--trainer.devices", "many"], ["trainer.devices", "should be an int > 0"]),
    "huge-devices": (["--trainer.devices", "1000000000000"], ["trainer.devices is 1000000000000", "at most 4096"]),
    "bad-accelerator": (["--trainer.accelerator", "gpux"], ["trainer.accelerator", "gpux", "Available names are"]),
    "bad-precision": (["--trainer.precision", "7"], ["trainer.precision = 7", "bf16-mixed"]),
    "checkpoint-mode": (["--checkpoint.mode", "lowest"], ["checkpoint.mode", "min, max but got lowest"]),
    "negative-lr": (["--model.init_args.lr", "-1"], ["model.init_args.lr is -1.0", "positive number"]),
    "huge-hidden": (
        ["--model.init_args.hidden_size", "1000000000000"],
        ["model.init_args.hidden_size", "from 1 to 65536"],
    ),  # noqa: E501
    "huge-workers": (
        ["--data.init_args.num_workers", "1000000000000"],
        ["data.num_workers is 1000000000000", "4 per CPU"],
    ),  # noqa: E501
    "seed": (["--seed_everything", "-1"], ["seed_everything", "-1 is not in bounds"]),
    "log-every-zero": (["--trainer.log_every_n_steps", "0"], ["trainer.log_every_n_steps is 0", "1 or more"]),
}


@pytest.mark.parametrize(("args", "says"), MISTAKES.values(), ids=MISTAKES.keys())
def test_each_config_mistake_is_one_error_line_naming_key_value_and_what_is_allowed(cli, args, says):
    code, line, printed, runs = cli.fit("forecasting", *cli.data_args("forecasting"), *args)
    assert code == 1 and line.startswith("ERROR: ") and "\n" not in line, (code, line, printed[-2000:])
    assert "Traceback" not in printed and "usage:" not in printed, printed[-2000:]
    for words in says:
        assert words in line, (words, line)
    assert runs == 0, "a refused command starts no MLflow run"


def test_a_monitor_no_metric_has_is_named_after_the_first_validation(cli):
    fast = {**FAST, "trainer.max_steps": "-1"}  # the epoch ends, so validation runs and the monitor is looked up
    code, line, printed, _ = cli.fit(
        "forecasting", *cli.data_args("forecasting"), "--checkpoint.monitor", "val/mse", fast=fast
    )
    assert code == 1 and "checkpoint.monitor" in line and "val/loss" in line and "Traceback" not in printed, line


def test_help_still_prints_the_usage(cli, capsys):
    with pytest.raises(SystemExit) as done:
        cli.cli.main(["fit", "--help"])
    assert done.value.code in (0, None) and "--trainer.max_epochs" in capsys.readouterr().out


def test_an_unknown_key_in_a_real_process_is_one_line_without_usage_text(project):
    result = run_cli(project, "fit", "--config", "configs/forecasting.yaml", "--trainer.max_epocs", "3", check=False)
    assert_refused(result, "trainer.max_epocs", "did you mean trainer.max_epochs?")
    assert "usage:" not in result.stderr


# ---- the property: every key of every task's config, given a value users really write -----------------------------
def config_keys(project: Path, task: str) -> list[str]:
    """The leaves of ``configs/<task>.yaml`` (``model.init_args.lr``, ``trainer.max_epochs``), class paths left out."""
    keys: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif key != "class_path":
                keys.append(f"{prefix}{key}")

    walk(yaml.safe_load((project / "configs" / f"{task}.yaml").read_text()), "")
    return keys


BUDGET = {"forecasting": 30, "captioning": 5, "transcription": 12}  # examples: ~1.2 s, ~10 s, ~1.6 s each


@pytest.mark.parametrize("task", BUDGET)
def test_every_key_given_a_bad_value_ends_in_success_or_one_line_naming_it(cli, project, task):
    keys = config_keys(project, task)

    @settings(
        max_examples=BUDGET[task], deadline=timedelta(seconds=60), derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )  # fmt: skip
    @given(key=st.sampled_from(keys), value=st.sampled_from(sorted(BAD_VALUES.values())))
    def check(key: str, value: str) -> None:
        code, line, printed, runs = cli.fit(task, *cli.data_args(task, skip=key), f"--{key}", value)
        assert "Traceback" not in printed, printed[-3000:]
        if code == 0:
            assert runs == 1, "a training that ran is one MLflow run"
            return
        leaf = key.rpartition(".")[2]
        assert code == 1 and line.startswith("ERROR: ") and "\n" not in line and leaf in line, (key, value, line)
        if not key.startswith("checkpoint.monitor"):  # found only at the first validation, once training started
            assert runs == 0, f"--{key} {value}: refused, yet an MLflow run was created ({line})"

    check()


CONFIG_FILES = {  # a second --config as users write one, and what its one line must say
    "unknown-key": (
        "trainer:\n  max_epochz: 3\n",
        ["trainer.max_epochz: no such setting", "did you mean trainer.max_epochs?"],
    ),  # noqa: E501
    "not-yaml": ("trainer:\n  max_epochs: [3\n", ["--config: not a valid YAML file", "line 2"]),
    "missing": (None, ["--config: File does not exist", "nowhere.yaml"]),
}


@pytest.mark.parametrize(("text", "says"), CONFIG_FILES.values(), ids=CONFIG_FILES.keys())
def test_config_file_mistakes_are_one_line_too(cli, tmp_path, text, says):
    path = tmp_path / ("extra.yaml" if text is not None else "nowhere.yaml")
    if text is not None:
        path.write_text(text)
    code, line, printed, runs = cli.fit("forecasting", *cli.data_args("forecasting"), "--config", str(path))
    assert code == 1 and "\n" not in line and "Traceback" not in printed and runs == 0, (line, printed[-2000:])
    for words in says:
        assert words in line, (words, line)


def test_a_flag_without_its_value_is_named(cli):
    code, line, _, runs = cli.fit("forecasting", *cli.data_args("forecasting"), "--trainer.max_epochs")
    assert code == 1 and "trainer.max_epochs: expected one argument" in line and runs == 0, line
