#!/usr/bin/env bash
# The project's test command (README): installs what the tests need, then runs them.
#   bash scripts/test.sh [pytest args...]
# Needs: Python >= 3.10 with pip; redis-server (installed with apt-get when missing and run as root).
# SLURM tests run when the test cluster is up (scripts/slurm-cluster.sh start), and are
# required to run when RUSHHPC_REQUIRE_SLURM=1 (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
  else
    echo "redis-server is missing: install it (apt-get install redis-server, conda install redis) and retry" >&2
    exit 1
  fi
fi

python -m pip install -q -e '.[test]'
exec python -m pytest -q "$@"
