#!/usr/bin/env bash
# PostgreSQL's server programs (initdb, postgres, pg_dump) for tests/test_postgres.py, from Debian's packages when
# they are missing (CI step). Starts nothing: each test starts a server of its own in a temporary folder.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ERROR: PostgreSQL is not installed and installing it needs root: apt-get install postgresql" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Installing the package starts a cluster of its own on port 5432 where systemd runs; the tests use none of it.
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
