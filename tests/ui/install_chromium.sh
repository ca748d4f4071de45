#!/usr/bin/env bash
# Debian's headless-capable Chromium for tests/test_mlflow_ui.py; installs it with apt-get only when missing.
# Never downloads a browser from anywhere else.
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ERROR: chromium is not installed and installing it needs root: apt-get install chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium
