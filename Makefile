# cookiecutter-lightning-tasks: `make demo` and `make test` set up everything they need on a fresh machine.
VENV ?= .venv
BASE_PYTHON ?= $(shell command -v python3.11 || command -v python3)
PYTHON := $(abspath $(VENV))/bin/python
DEMO_DIR ?= build/demo
PYTEST_ARGS ?=
# Two pytest workers (pytest-xdist), a test file each at a time, the longest files first (tests/conftest.py): many
# tests wait on subprocesses, servers and installs, so two take about 70% of the time of one on a 2-core machine
# (three took longer: 25 min 15 s). PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help venv lock demo test test-fast lint bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

# .venv is exactly requirements.lock (hashes checked), installed by uv: it links the ~6 GB of wheels from its cache in
# parallel (bench/install.py: pip vs uv). The generated projects' make install works the same way, with their own lock.
LOCK_SCRIPT := template/{{cookiecutter.project_slug}}/scripts/lock.py
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes
# uv writes no bytecode, nor does Python where PYTHONDONTWRITEBYTECODE is set: each command of the suite would then
# compile torch, Lightning and MLflow again (an import of 19 s instead of 6 s here). make venv writes what they import:
# the test zygote's preload list, and the sweeps' and prepared data's libraries.
WARM_IMPORTS := import sys; sys.path.insert(0, "tests"); import zygote; zygote.preload(); import optuna, litdata

$(VENV)/.installed: pyproject.toml requirements.lock
	$(BASE_PYTHON) $(LOCK_SCRIPT) check --group test
	test -x $(PYTHON) || $(BASE_PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/uv || { $(PYTHON) $(LOCK_SCRIPT) pin uv > $(VENV)/uv.txt && \
		$(PYTHON) -m pip install --quiet --require-hashes --no-deps -r $(VENV)/uv.txt; }
	@echo "Installing the locked PyTorch, Lightning, MLflow and test tools into $(VENV) (a few minutes the first time)"
	$(VENV)/bin/uv pip sync --quiet --python $(PYTHON) --require-hashes requirements.lock
	env -u PYTHONDONTWRITEBYTECODE $(PYTHON) -c '$(WARM_IMPORTS)'
	touch $@

venv: $(VENV)/.installed ## Create .venv with the generated projects' dependencies and the test tools

# With the .venv you have (its uv and cookiecutter), also after editing pyproject.toml: then make venv installs it.
lock: ## Regenerate requirements.lock and the generated projects' lock from the pyproject files (package index)
	@test -x $(VENV)/bin/uv || { echo "ERROR: make lock uses $(VENV)'s uv and cookiecutter: run make venv first" >&2; exit 1; }
	$(VENV)/bin/uv pip compile --quiet pyproject.toml --group test $(LOCK_FLAGS) -o requirements.lock
	$(PYTHON) $(LOCK_SCRIPT) stamp --group test
	rm -rf build/lock && $(VENV)/bin/cookiecutter --no-input --output-dir build/lock . project_name="Lock Project"
	$(MAKE) --no-print-directory -C build/lock/lock-project VENV=$(abspath $(VENV)) lock
	$(PYTHON) .ci/lock_template.py build/lock/lock-project/requirements.lock lock-project 3.11

# The demo project runs in .venv (it has every task's dependencies) through its Makefile's VENV variable; its
# `make demo` trains each task on the budget of its configs/demo/<task>.yaml. VERBOSE=1 shows the libraries' chatter.
demo: venv ## Bake a project with every task, train each until it beats its baseline, list the MLflow runs
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(VENV)/bin/cookiecutter --no-input --output-dir $(DEMO_DIR) . project_name="Demo Project"
	$(MAKE) --no-print-directory -C $(DEMO_DIR)/demo-project VENV=$(abspath $(VENV)) demo
	@echo "Browse them: make -C $(DEMO_DIR)/demo-project VENV=$(abspath $(VENV)) mlflow-ui  (docs/mlflow-run.png shows where to look)"

test: venv ## Run the whole test suite (bakes projects, trains briefly, checks MLflow)
	$(PYTHON) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS) tests; status=$$?; \
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
	for script in bench/forecasting.py bench/captioning.py bench/transcription.py bench/overhead.py bench/pretrained.py \
		bench/sweep.py; do \
		$(PYTHON) $$script || exit 1; done
	@echo "GPU figures: bash bench/gpu_check.sh on a machine with a GPU"

clean: ## Remove build output and caches (keeps .venv)
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
