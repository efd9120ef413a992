#!/usr/bin/env bash
# The project's test command (README): installs what the tests need, then runs them.
#   bash scripts/test.sh [pytest args...]
# Needs: Python >= 3.10 with pip; redis-server (installed with apt-get when missing and run as root).
# Backends that need more run when it is there and are skipped with the reason otherwise (the reasons
# are printed at the end):
#   SLURM  the project's test cluster: as root, scripts/slurm-cluster.sh install && scripts/slurm-cluster.sh start
#          (its own folder, SLURM_CONF, daemons and ports; found through 'slurm-cluster.sh env')
#   SSH    /usr/sbin/sshd and ssh (apt-get install openssh-server openssh-client); the tests start their own sshd
#   PBS    nothing: an emulator ships in tests/pbs_emulator
# RUSHHPC_REQUIRE_SLURM=1 / RUSHHPC_REQUIRE_PBS=1 / RUSHHPC_REQUIRE_SSH=1 turn such a skip into a failure (CI sets them).
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
# -rfEs: after the dots, one line per failure, error and skip, each skip with its reason
exec python -m pytest -q -rfEs "$@"
