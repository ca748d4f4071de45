# cookiecutter-lightning-tasks: `make demo` and `make test` set up everything they need on a fresh machine.
VENV ?= .venv
BASE_PYTHON ?= $(shell command -v python3.11 || command -v python3)
PYTHON := $(abspath $(VENV))/bin/python
DEMO_DIR ?= build/demo
PYTEST_ARGS ?=
# Two pytest workers (pytest-xdist), a test file each at a time: many tests wait on subprocesses, servers and
# installs, so two take about 70% of the time of one on a 2-core machine. PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-fast lint bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || $(BASE_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	@echo "Installing PyTorch, Lightning, MLflow and the test tools into $(VENV) (a few minutes the first time)"
	$(PYTHON) -m pip install --quiet --group test
	touch $@

venv: $(VENV)/.installed ## Create .venv with the generated projects' dependencies and the test tools

# The demo project runs in .venv (it has every task's dependencies) through its Makefile's VENV variable; its
# `make demo` trains each task on the budget of its configs/demo/<task>.yaml. VERBOSE=1 shows the libraries' chatter.
demo: venv ## Bake a project with every task, train each until it beats its baseline, list the MLflow runs
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(VENV)/bin/cookiecutter --no-input --output-dir $(DEMO_DIR) . project_name="Demo Project"
	$(MAKE) --no-print-directory -C $(DEMO_DIR)/demo-project VENV=$(abspath $(VENV)) demo
	@echo "Browse them: make -C $(DEMO_DIR)/demo-project VENV=$(abspath $(VENV)) mlflow-ui  (docs/mlflow-run.png shows where to look)"

test: venv ## Run the whole test suite (bakes projects, trains briefly, checks MLflow)
	$(PYTHON) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests; status=$$?; \
		if [ $$status -eq 5 ]; then echo "ERROR: pytest collected no tests" >&2; exit 1; fi; exit $$status

test-fast: venv ## Run the tests not marked slow
	$(MAKE) test PYTEST_ARGS="-m 'not slow' $(PYTEST_ARGS)"

lint: venv ## ruff on the template's code and on a freshly baked project
	$(VENV)/bin/ruff check tasks datamodules tests bench
	$(VENV)/bin/ruff format --check tasks datamodules tests bench
	rm -rf build/lint && $(VENV)/bin/cookiecutter --no-input --output-dir build/lint . project_name="Lint Project"
	$(VENV)/bin/ruff check --config build/lint/lint-project/pyproject.toml build/lint/lint-project
	$(VENV)/bin/ruff format --check --config build/lint/lint-project/pyproject.toml build/lint/lint-project

bench: venv ## Run the benchmarks (ratios against baselines measured in the same run)
	for script in bench/forecasting.py bench/captioning.py bench/transcription.py bench/overhead.py bench/sweep.py; do \
		$(PYTHON) $$script || exit 1; done
	@echo "GPU figures: bash bench/gpu_check.sh on a machine with a GPU"

clean: ## Remove build output and caches (keeps .venv)
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
