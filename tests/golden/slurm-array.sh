#!/bin/bash
# rushhpc workers for network golden-net: array elements 0..3.
# Rendered by rushhpc; no secret is in this file (the worker reads a 0600 credentials file).
#SBATCH --job-name=rushhpc-golden-net
#SBATCH --array=0-3
#SBATCH --output={RUN}/workers/%A_%a.out
#SBATCH --error={RUN}/workers/%A_%a.err
#SBATCH --no-requeue

# Setup: any failing line ends the job at once (a failed start, with this file's stderr shown).
set -e
set +e
export RUSHHPC_WORKER_ID="w-abcd1234-$(( 0 + ${SLURM_ARRAY_TASK_ID:-0} ))"

# The worker runs in the background so that this shell can forward signals:
# USR2 (sent 60 s before the time limit) makes it finish its task and end.
/opt/python/bin/python3 -m rushhpc worker --network golden-net --start-id 0123456789abcdef --worker-id "$RUSHHPC_WORKER_ID" --credentials {RUN}/credentials.json --signing-key {RUN}/signing.key --launcher slurm --managed &
worker=$!
trap 'kill -USR2 "$worker" 2>/dev/null' USR2
trap 'kill -TERM "$worker" 2>/dev/null' TERM
status=0
while true; do
  wait "$worker"; status=$?
  kill -0 "$worker" 2>/dev/null || break
done
exit "$status"
