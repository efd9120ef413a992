#!/bin/bash
# Regenerates the files in this directory with the emulator (run: bash regenerate.sh).
# A scratch tree under /tmp/rec stands in for the user's home; the identity knobs make the
# output look like a real site (server pbs01.hpc.example.org, login01, node cn017, user alice).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(dirname "$HERE")/bin
rm -rf /tmp/rec && mkdir -p /tmp/rec/home/alice/project
export PBS_EMU_HOME=/tmp/rec/emu HOME=/tmp/rec/home/alice
export PBS_EMU_SERVER=pbs01.hpc.example.org PBS_EMU_FIRST_SEQ=4711 LANG=en_US.UTF-8 SHELL=/bin/bash \
       PBS_EMU_HOSTNAME=login01.hpc.example.org PBS_EMU_EXEC_HOST=cn017 PBS_EMU_USER=alice LOGNAME=alice \
       MAIL=/var/spool/mail/alice
unset PBS_EMU_JSON_STYLE PBS_EMU_VERSION PBS_EMU_WALLTIME_EXIT_STATUS PBS_EMU_NCPUS PBS_EMU_SCHED_DELAY PBS_EMU_QUEUES
export PATH=$BIN:/usr/local/bin:/usr/bin:/bin
O=$HERE
cd /tmp/rec/home/alice/project
cat > train.sh <<'EOF'
#!/bin/bash
#PBS -N train
#PBS -l select=1:ncpus=4:mem=8gb
#PBS -l walltime=02:00:00
#PBS -A proj42
cd "$PBS_O_WORKDIR"
python3 -c 'print("done")'
EOF
cat > sweep.sh <<'EOF'
#!/bin/bash
#PBS -N sweep
#PBS -l walltime=00:10:00
sleep $(( 1 + PBS_ARRAY_INDEX ))
exit $(( PBS_ARRAY_INDEX == 2 ))
EOF
F=$(qsub -v RUSH_WORKER=1 train.sh)                     # finishes with 0
K=$(qsub -N fails -- /bin/sh -c 'exit 2')              # finishes with 2
sleep 1
R=$(qsub -N worker-0 -l walltime=01:00:00 -- /bin/sleep 300)
H=$(qsub -h -N held_job -- /bin/true)
A=$(qsub -J 0-3 sweep.sh)
D=$(qsub -W depend=afterok:$R -N after -- /bin/true)
sleep 2.3
qstat -x > $O/qstat_x_table.txt
qstat -x -w > $O/qstat_xw_wide_table.txt
qstat -x -t > $O/qstat_xt_array_table.txt
qstat -f $R > $O/qstat_f_running.txt
qstat -x -f $F $K > $O/qstat_xf_finished.txt
qstat -f -t "$A" > $O/qstat_ft_array_running.txt
qstat -x -f -F json $F $R $H > $O/qstat_xf_json.json
qstat -x -t -f -F json "$A" > $O/qstat_xtf_json_array_running.json
PBS_EMU_JSON_STYLE=cjson PBS_EMU_VERSION=23.06.06 qstat -x -f -F json $F $R > $O/qstat_xf_json_cjson_23.06.json
# the error shapes
{
  for c in "qstat $F" "qstat $R 999999 $H" "qstat 999999 $R" "qstat -x -f -F json 999999" "qdel $F" "qdel 999999" \
           "qsig -s suspend $H" "qsig -s NOSUCH $R" "qrls $F" "qsub -Y" "qsub -q nosuch -- /bin/true" "qsub missing.sh" \
           "qstat -F json" "qstat 12x"; do
    echo "\$ $c"
    $c > /tmp/rec/stdout 2> /tmp/rec/stderr; rc=$?
    echo "[stdout]"; cat /tmp/rec/stdout; echo "[stderr]"; cat /tmp/rec/stderr; echo "[exit $rc]"; echo
  done
} > $O/errors.txt
qdel $R "$A" $H $D 2>/dev/null
sleep 0.5
qsig -s suspend $R > /dev/null 2>&1
sleep 4
qstat -x -t "$A" > $O/qstat_xt_array_finished_table.txt
qstat -x -t -f -F json "$A" > $O/qstat_xtf_json_array_finished.json
qstat -x -f $R $D > $O/qstat_xf_deleted.txt
# the JSON quirk
Q1=$(qsub -h -N 'C:\data' -- /bin/true)
Q2=$(qsub -h -N '"quoted"' -- /bin/true)
qstat -f -F json $Q1 $Q2 > $O/qstat_f_json_invalid_2022.txt
Q3=$(qsub -h -N 'say"hi"' -v "GREETING=it's" -- /bin/true)
PBS_EMU_JSON_STYLE=legacy qstat -f -F json $Q3 > $O/qstat_f_json_invalid_legacy.txt
qdel $Q1 $Q2 $Q3
sleep 0.5
rm -rf /tmp/rec
