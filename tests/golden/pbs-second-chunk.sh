#!/bin/bash
# rushhpc workers for network golden-net: array elements 4..6.
# Rendered by rushhpc; no secret is in this file (the worker reads a 0600 credentials file).
#PBS -N rushhpc-golden-net
#PBS -J 0-2
#PBS -o {RUN}/workers/
#PBS -e {RUN}/workers/
#PBS -l select=1:ncpus=1
#PBS -r n

# Live logs in the run directory (PBS stages its own -o/-e files only at the end).
exec >>{RUN}/workers/"${PBS_JOBID}.out" 2>>{RUN}/workers/"${PBS_JOBID}.err"

# Setup: any failing line ends the job at once (a failed start, with this file's stderr shown).
set -e
set +e
export RUSHHPC_WORKER_ID="w-abcd1234-$(( 4 + ${PBS_ARRAY_INDEX:-0} ))"

# The worker runs in the background so that this shell can forward TERM (qdel, qsig).
/opt/python/bin/python3 -m rushhpc worker --network golden-net --start-id 0123456789abcdef --worker-id "$RUSHHPC_WORKER_ID" --credentials {RUN}/credentials.json --signing-key {RUN}/signing.key --launcher pbs --managed &
worker=$!
trap 'kill -USR2 "$worker" 2>/dev/null' USR2
trap 'kill -TERM "$worker" 2>/dev/null' TERM
status=0
while true; do
  wait "$worker"; status=$?
  kill -0 "$worker" 2>/dev/null || break
done
exit "$status"
