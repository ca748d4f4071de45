#!/usr/bin/env bash
# One short GPU check for a device machine: each task trains ~1 minute in bf16-mixed on one GPU;
# prints samples/s and peak GPU memory per task. Needs the test environment: make venv (or VENV=...).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PYTHONUNBUFFERED=1 "$VENV/bin/python" bench/gpu_check.py --seconds "${SECONDS_PER_TASK:-60}"
