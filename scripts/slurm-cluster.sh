#!/usr/bin/env bash
# slurm-cluster.sh -- a real 3-node SLURM cluster (with accounting) on this one machine,
# for rushhpc's tests and CI.  Debian 12, run as root.  See docs/test-cluster.md.
#
#   slurm-cluster.sh install                 apt-get install the packages if missing
#   slurm-cluster.sh start [--no-accounting] write configs, start daemons, wait until ready
#   slurm-cluster.sh stop [--cancel-jobs]    stop the daemons this script started (by pid file);
#                                            --cancel-jobs first scancels every queued/running job
#   slurm-cluster.sh status                  daemons, sinfo, accounting on/off; exit 0 when slurmctld
#                                            answers, n1-n3 are usable and (if on) sacct answers
#   slurm-cluster.sh node-kill N [--with-jobs]  SIGKILL slurmd of node nN (and its jobs' processes)
#   slurm-cluster.sh node-restart N          (re)start slurmd of node nN and wait until it is back
#   slurm-cluster.sh logs [N]                print log paths and tail them (N lines, default 40)
#
# Everything is written to /etc/slurm/{slurm.conf,slurmdbd.conf} and /var/lib/rushhpc-slurm.
set -euo pipefail

PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

STATE=/var/lib/rushhpc-slurm
RUN=$STATE/run              # pid files of the slurm daemons + markers
LOG=$STATE/log              # all logs
SPOOL=$STATE/spool          # slurmd spool dirs, one per node
CTLD=$STATE/ctld            # slurmctld StateSaveLocation
DBDATA=$STATE/mysql         # our own MariaDB datadir (not the system's /var/lib/mysql)
DBRUN=$STATE/mysql-run      # socket + pid file of our MariaDB (owned by mysql)

SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARKER="# Written by rushhpc scripts/slurm-cluster.sh"

CLUSTER=rushhpc
NODES=(n1 n2 n3)
NODE_PORT_BASE=17000        # n1 -> 17001, n2 -> 17002, n3 -> 17003
DB_PORT=17306
DB_SOCK=$DBRUN/mysqld.sock
DB_PIDFILE=$DBRUN/mysqld.pid
DB_USER=slurm
DB_PASS=rushhpc-slurm
DB_NAME=slurm_acct_db
MUNGE_PIDFILE=/run/munge/munged.pid
MUNGE_OURS=$RUN/munged.ours # exists when this script started munged (and so may stop it)

TIMEOUT=${RUSHHPC_SLURM_TIMEOUT:-90}   # seconds allowed for each readiness wait

export DEBIAN_FRONTEND=noninteractive
export SLURM_CONF

# ---------------------------------------------------------------------------- helpers
log()  { printf '[slurm-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# show_logs [N]: tail every log under $LOG, least recently written first (the culprit ends up last).
show_logs() {
    local n=${1:-30} f
    echo "--- logs (all under $LOG) ---" >&2
    [ -d "$LOG" ] || { echo "  (no log directory yet)" >&2; return 0; }
    while IFS= read -r f; do
        f=$LOG/$f
        [ -f "$f" ] || continue
        case $f in
            *mariadb-install-db.log) echo "  $f" >&2; continue ;;
        esac
        [ -s "$f" ] || continue
        echo "=== tail -n $n $f" >&2
        tail -n "$n" "$f" >&2 || true
    done < <(ls -1tr "$LOG")
}

die() { log "ERROR: $*"; show_logs 30; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || { echo "slurm-cluster.sh: must run as root" >&2; exit 2; }; }

# pid_of PIDFILE COMM -> prints the pid if the pid file names a live process whose comm is COMM.
pid_of() {
    local pidfile=$1 comm=$2 pid c
    # the daemon may remove its pid file at any moment: read it without complaining
    pid=$(tr -dc '0-9' 2>/dev/null <"$pidfile") || return 1
    [ -n "$pid" ] || return 1
    c=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "$c" = "$comm" ] || return 1
    # a zombie is as good as dead
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
    echo "$pid"
}

running() { pid_of "$1" "$2" >/dev/null; }

# wait_until DESCRIPTION TIMEOUT CMD... : poll CMD every 0.2 s until it succeeds or the deadline passes.
wait_until() {
    local desc=$1 limit=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { log "timed out after ${limit}s waiting for: $desc"; return 1; }
        sleep 0.2
    done
}

# stop_pidfile PIDFILE COMM NAME : SIGTERM the process, wait up to 30 s, then SIGKILL.
stop_pidfile() {
    local pidfile=$1 comm=$2 name=$3 pid i
    if ! pid=$(pid_of "$pidfile" "$comm"); then
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do
        running "$pidfile" "$comm" || break
        sleep 0.2
    done
    if running "$pidfile" "$comm"; then
        log "$name (pid $pid) did not exit after 30 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for i in $(seq 50); do running "$pidfile" "$comm" || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
}

# start_daemon NAME PIDFILE COMM LOGFILE CMD... : run a self-daemonising CMD, then wait for its pid
# file; fail fast when LOGFILE gets a fatal error (e.g. port in use) instead of waiting 30 s.
start_daemon() {
    local name=$1 pidfile=$2 comm=$3 logfile=$4; shift 4
    local off=0 deadline err
    [ -f "$logfile" ] && off=$(stat -c %s "$logfile")
    # stdio to a file: a daemon must not inherit the caller's pipes (subprocess.run(capture_output=True)
    # would otherwise wait for the daemon to exit)
    "$@" </dev/null >>"$LOG/$name.out" 2>&1 || die "$name failed to start: $*"
    deadline=$((SECONDS + 30))
    until running "$pidfile" "$comm"; do
        err=$(tail -c +$((off + 1)) "$logfile" 2>/dev/null | grep -E 'fatal|Unable to bind' | tail -n 1 || true)
        [ -z "$err" ] || die "$name failed: $err"
        [ "$SECONDS" -lt "$deadline" ] || die "$name did not write its pid file $pidfile within 30 s"
        sleep 0.1
    done
}

node_index() {  # n2 / 2 -> 2
    local n=${1#n}
    case $n in 1|2|3) echo "$n" ;; *) echo "node must be 1, 2 or 3 (or n1..n3), got '$1'" >&2; exit 2 ;; esac
}
slurmd_pidfile() { echo "$RUN/slurmd-n$1.pid"; }

accounting_configured() { [ -f "$SLURM_CONF" ] && grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$SLURM_CONF"; }

# ---------------------------------------------------------------------------- install
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

cmd_install() {
    need_root
    local missing=() p
    for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    if [ ${#missing[@]} -eq 0 ]; then
        log "packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    log "installing: ${missing[*]}"
    # DPkg::Lock::Timeout: wait for another running apt/dpkg instead of failing.
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${PACKAGES[@]}"
}

check_installed() {
    local p
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || { echo "package $p is not installed: run '$0 install' first" >&2; exit 1; }
    done
}

# ---------------------------------------------------------------------------- configs
write_slurm_conf() {   # $1 = 1 for accounting, 0 without. Prints "changed" when the file changed.
    local acct=$1 host tmp
    host=$(hostname)
    tmp=$(mktemp)
    {
        echo "$MARKER -- rewritten on every 'start'; do not edit."
        echo "ClusterName=$CLUSTER"
        echo "SlurmctldHost=$host(127.0.0.1)"
        echo "SlurmUser=root"
        echo "SlurmdUser=root"
        echo "AuthType=auth/munge"
        echo "StateSaveLocation=$CTLD"
        echo "SlurmctldPidFile=$RUN/slurmctld.pid"
        echo "SlurmctldLogFile=$LOG/slurmctld.log"
        echo "SlurmctldDebug=info"
        echo "# several slurmd on one host: per-node files via %n, start each with 'slurmd -N nX'"
        echo "SlurmdParameters=config_overrides"
        echo "SlurmdPidFile=$RUN/slurmd-%n.pid"
        echo "SlurmdSpoolDir=$SPOOL/%n"
        echo "SlurmdLogFile=$LOG/slurmd-%n.log"
        echo "SlurmdDebug=info"
        echo "# no cgroups: there must be no cgroup.conf either"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_Core"
        echo "SchedulerType=sched/backfill"
        echo "SchedulerParameters=sched_interval=2,bf_interval=1"
        echo "MpiDefault=none"
        echo "SwitchType=switch/none"
        echo "MailProg=/bin/true"
        echo "JobCompType=jobcomp/none"
        echo "InactiveLimit=0"
        echo "SlurmdTimeout=10"
        echo "KillWait=2"
        echo "ReturnToService=2"
        echo "MinJobAge=300"
        echo "MaxArraySize=1001"
        echo "JobAcctGatherType=jobacct_gather/linux"
        if [ "$acct" = 1 ]; then
            echo "AccountingStorageType=accounting_storage/slurmdbd"
            echo "AccountingStorageHost=localhost"
        else
            echo "AccountingStorageType=accounting_storage/none"
        fi
        echo "NodeName=n[1-3] NodeHostname=$host NodeAddr=127.0.0.1 Port=$((NODE_PORT_BASE + 1))-$((NODE_PORT_BASE + 3)) CPUs=4 RealMemory=4000 State=UNKNOWN"
        echo "PartitionName=debug Nodes=n[1-3] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
    } >"$tmp"
    install_conf "$tmp" "$SLURM_CONF" 644
}

write_dbd_conf() {
    local tmp
    tmp=$(mktemp)
    {
        echo "$MARKER -- rewritten on every 'start'; do not edit."
        echo "AuthType=auth/munge"
        echo "DbdHost=localhost"
        echo "SlurmUser=root"
        echo "LogFile=$LOG/slurmdbd.log"
        echo "PidFile=$RUN/slurmdbd.pid"
        echo "DebugLevel=info"
        echo "StorageType=accounting_storage/mysql"
        echo "StorageHost=127.0.0.1"
        echo "StoragePort=$DB_PORT"
        echo "StorageUser=$DB_USER"
        echo "StoragePass=$DB_PASS"
        echo "StorageLoc=$DB_NAME"
    } >"$tmp"
    install_conf "$tmp" "$DBD_CONF" 600
}

# install_conf TMP DEST MODE: move TMP over DEST when different (backing up a foreign DEST once).
install_conf() {
    local tmp=$1 dest=$2 mode=$3
    chmod "$mode" "$tmp"
    if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        chmod "$mode" "$dest"
        return 0
    fi
    if [ -f "$dest" ] && ! head -n1 "$dest" | grep -qF "$MARKER" && [ ! -e "$dest.rushhpc-orig" ]; then
        log "backing up existing $dest to $dest.rushhpc-orig"
        cp -p "$dest" "$dest.rushhpc-orig"
    fi
    mv -f "$tmp" "$dest"
    chown root:root "$dest"
    chmod "$mode" "$dest"
    echo changed
}

make_dirs() {
    mkdir -p /etc/slurm "$RUN" "$LOG" "$CTLD" "$DBDATA" "$DBRUN"
    chmod 755 "$STATE" "$LOG"
    local n
    for n in "${NODES[@]}"; do mkdir -p "$SPOOL/$n"; done
    chown mysql:mysql "$DBDATA" "$DBRUN"
    chmod 750 "$DBDATA"
    touch "$LOG/mariadb.log"; chown mysql:mysql "$LOG/mariadb.log"
    if [ -e /etc/slurm/cgroup.conf ]; then
        # proctrack/linuxproc + task/none here; a cgroup.conf (e.g. CgroupPlugin=disabled) breaks slurmd 22.05
        log "moving /etc/slurm/cgroup.conf aside to /etc/slurm/cgroup.conf.rushhpc-disabled"
        mv -f /etc/slurm/cgroup.conf /etc/slurm/cgroup.conf.rushhpc-disabled
    fi
}

# ---------------------------------------------------------------------------- munge
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge() {
    if munge_ok; then return 0; fi
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    if running "$MUNGE_PIDFILE" munged; then
        die "munged is running (pid $(pid_of "$MUNGE_PIDFILE" munged)) but 'munge -n | unmunge' fails; see /var/log/munge/munged.log"
    fi
    log "starting munged"
    start-stop-daemon --start --chuid munge --exec /usr/sbin/munged -- --force \
        </dev/null >>"$LOG/munged.out" 2>&1 || die "munged failed to start (see $LOG/munged.out, /var/log/munge/munged.log)"
    touch "$MUNGE_OURS"
    wait_until "munge -n | unmunge" "$TIMEOUT" munge_ok || die "munge does not work"
}

# ---------------------------------------------------------------------------- mariadb
mdb() { mariadb --no-defaults --socket="$DB_SOCK" -uroot "$@"; }
mariadb_alive() { mariadb-admin --no-defaults --socket="$DB_SOCK" -uroot ping 2>/dev/null | grep -q alive; }

ensure_mariadb() {
    if ! running "$DB_PIDFILE" mariadbd; then
        if [ ! -d "$DBDATA/mysql" ]; then
            log "initialising MariaDB datadir $DBDATA"
            mariadb-install-db --no-defaults --user=mysql --datadir="$DBDATA" \
                --auth-root-authentication-method=socket --skip-test-db \
                </dev/null >"$LOG/mariadb-install-db.log" 2>&1 || die "mariadb-install-db failed"
        fi
        log "starting mariadbd (user mysql, port $DB_PORT, socket $DB_SOCK)"
        start-stop-daemon --start --background --chuid mysql --exec /usr/sbin/mariadbd -- \
            --no-defaults --user=mysql --datadir="$DBDATA" \
            --socket="$DB_SOCK" --pid-file="$DB_PIDFILE" \
            --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
            --log-error="$LOG/mariadb.log" \
            --innodb-buffer-pool-size=1G --innodb-lock-wait-timeout=900 \
            --innodb-flush-log-at-trx-commit=2 \
            </dev/null >>"$LOG/mariadbd.out" 2>&1 || die "could not start mariadbd"
    fi
    wait_until "mariadbd to answer on $DB_SOCK" "$TIMEOUT" mariadb_alive || die "mariadbd did not come up"
    wait_until "mariadbd pid file" 10 running "$DB_PIDFILE" mariadbd || die "mariadbd pid file $DB_PIDFILE missing"
    mdb -e "
        CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
        CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON \`$DB_NAME\`.* TO '$DB_USER'@'localhost';
        GRANT ALL ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1';" \
        || die "could not create the MariaDB user for slurmdbd"
}

# ---------------------------------------------------------------------------- slurm daemons
sacctmgr_ok() { sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }

ensure_slurmdbd() {   # $1 = "changed" when slurmdbd.conf changed
    if [ "${1:-}" = changed ] && running "$RUN/slurmdbd.pid" slurmdbd; then
        stop_pidfile "$RUN/slurmdbd.pid" slurmdbd slurmdbd
    fi
    if ! running "$RUN/slurmdbd.pid" slurmdbd; then
        log "starting slurmdbd"
        start_daemon slurmdbd "$RUN/slurmdbd.pid" slurmdbd "$LOG/slurmdbd.log" slurmdbd
    fi
    wait_until "slurmdbd to answer sacctmgr" "$TIMEOUT" sacctmgr_ok || die "slurmdbd does not answer"
    if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER in slurmdbd"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
    fi
}

ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_slurmctld() {
    log "starting slurmctld"
    start_daemon slurmctld "$RUN/slurmctld.pid" slurmctld "$LOG/slurmctld.log" slurmctld
}

start_slurmd() {   # $1 = node index
    local i=$1
    mkdir -p "$SPOOL/n$i"
    log "starting slurmd -N n$i (port $((NODE_PORT_BASE + i)))"
    start_daemon "slurmd-n$i" "$(slurmd_pidfile "$i")" slurmd "$LOG/slurmd-n$i.log" slurmd -N "n$i"
}

# node_state NODE -> long state as sinfo prints it (e.g. idle, mixed, down*, drained)
node_state() { sinfo -h -N -n "$1" -o '%T' 2>/dev/null | head -n1; }

node_up() {   # responding and usable
    local s
    s=$(node_state "$1")
    case $s in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac
}

all_nodes_up() {
    local n
    for n in "${NODES[@]}"; do node_up "$n" || return 1; done
}

# Nodes that are down/drained although their slurmd runs and responds: resume them once.
resume_stuck_nodes() {
    local i s
    for i in 1 2 3; do
        s=$(node_state "n$i")
        case $s in
            *'*'*|'') ;;   # not responding (yet): registration will fix it (ReturnToService=2)
            down*|drain*|fail*)
                if running "$(slurmd_pidfile "$i")" slurmd; then
                    log "node n$i is '$s' with a live slurmd: scontrol update state=resume"
                    scontrol update nodename="n$i" state=resume 2>/dev/null || true
                fi ;;
        esac
    done
}

wait_nodes_up() {
    local deadline=$((SECONDS + TIMEOUT)) resumed=0
    until all_nodes_up; do
        if [ "$resumed" = 0 ] && [ "$SECONDS" -gt $((deadline - TIMEOUT + 3)) ]; then
            resume_stuck_nodes; resumed=1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            sinfo -N >&2 || true
            die "nodes did not all become idle within ${TIMEOUT}s"
        fi
        sleep 0.2
    done
}

sacct_ok() { sacct -n -X -S now >/dev/null 2>&1; }

stop_slurm_nodes_and_ctld() {
    local i
    for i in 1 2 3; do stop_pidfile "$(slurmd_pidfile "$i")" slurmd "slurmd n$i"; done
    stop_pidfile "$RUN/slurmctld.pid" slurmctld slurmctld
}

stop_accounting_daemons() {
    stop_pidfile "$RUN/slurmdbd.pid" slurmdbd slurmdbd
    stop_pidfile "$DB_PIDFILE" mariadbd mariadbd
}

# ---------------------------------------------------------------------------- start / stop / status
cmd_start() {
    need_root
    local acct=1
    while [ $# -gt 0 ]; do
        case $1 in
            --no-accounting) acct=0 ;;
            *) echo "start: unknown option $1" >&2; exit 2 ;;
        esac
        shift
    done
    check_installed
    local t0=$SECONDS
    make_dirs

    local conf_changed dbd_changed=""
    conf_changed=$(write_slurm_conf "$acct")
    [ "$acct" = 1 ] && dbd_changed=$(write_dbd_conf)

    ensure_munge

    # A changed slurm.conf (e.g. accounting switched on/off) needs a restart of slurmctld and slurmd.
    if [ -n "$conf_changed" ]; then
        log "slurm.conf changed: restarting slurmctld and slurmd (if running)"
        stop_slurm_nodes_and_ctld
    fi

    if [ "$acct" = 1 ]; then
        ensure_mariadb
        ensure_slurmdbd "$dbd_changed"
    else
        stop_accounting_daemons
    fi

    running "$RUN/slurmctld.pid" slurmctld || start_slurmctld
    wait_until "slurmctld to answer 'scontrol ping'" "$TIMEOUT" ctld_ok || die "slurmctld does not answer"

    local i
    for i in 1 2 3; do
        running "$(slurmd_pidfile "$i")" slurmd || start_slurmd "$i"
    done

    wait_nodes_up
    if [ "$acct" = 1 ]; then
        wait_until "sacct to answer" "$TIMEOUT" sacct_ok || die "sacct does not answer"
    fi
    log "cluster up in $((SECONDS - t0)) s (accounting: $([ "$acct" = 1 ] && echo on || echo off)); logs in $LOG"
    sinfo -N
}

cmd_stop() {
    need_root
    local cancel=0
    while [ $# -gt 0 ]; do
        case $1 in
            --cancel-jobs) cancel=1 ;;
            *) echo "stop: unknown option $1" >&2; exit 2 ;;
        esac
        shift
    done
    if [ "$cancel" = 1 ] && ctld_ok; then
        local jobs
        jobs=$(squeue -h -o '%A' 2>/dev/null | sort -un | tr '\n' ' ')
        if [ -n "${jobs// /}" ]; then
            log "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            # shellcheck disable=SC2016
            wait_until "jobs to leave squeue" 30 bash -c '[ -z "$(squeue -h -o %A 2>/dev/null)" ]' \
                || log "some jobs are still listed by squeue"
        fi
    fi
    stop_slurm_nodes_and_ctld
    stop_accounting_daemons
    if [ -e "$MUNGE_OURS" ]; then
        stop_pidfile "$MUNGE_PIDFILE" munged munged
        rm -f "$MUNGE_OURS"
    fi
    # Job processes (slurmstepd and its children) are not daemons this script started; say if any remain.
    local left
    left=$(for p in /proc/[0-9]*; do
               if [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ]; then echo "${p#/proc/}"; fi
           done | tr '\n' ' ')
    [ -z "$left" ] || log "note: job step daemons still running (slurmstepd pids: $left); they belong to jobs, not to this script"
    log "stopped"
}

cmd_status() {
    local up=0 i pid name pf comm
    for name in munged mariadbd slurmdbd slurmctld n1 n2 n3; do
        case $name in
            munged)    pf=$MUNGE_PIDFILE; comm=munged ;;
            mariadbd)  pf=$DB_PIDFILE; comm=mariadbd ;;
            slurmdbd)  pf=$RUN/slurmdbd.pid; comm=slurmdbd ;;
            slurmctld) pf=$RUN/slurmctld.pid; comm=slurmctld ;;
            n*)        pf=$(slurmd_pidfile "${name#n}"); comm=slurmd; name="slurmd $name" ;;
        esac
        if pid=$(pid_of "$pf" "$comm"); then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s not running\n' "$name"
        fi
    done
    if ctld_ok; then
        up=1
        sinfo -N
        all_nodes_up || { echo "nodes: not all of n1-n3 are usable (idle/mixed/allocated)"; up=0; }
        if accounting_configured; then
            if sacct_ok; then echo "accounting: on (slurmdbd)"; else echo "accounting: on, but sacct does not answer"; up=0; fi
        else
            echo "accounting: off (AccountingStorageType=accounting_storage/none)"
        fi
    else
        echo "slurmctld: not answering"
    fi
    echo "logs: $LOG"
    [ "$up" = 1 ]
}

cmd_node_kill() {
    need_root
    [ $# -ge 1 ] || { echo "usage: $0 node-kill N [--with-jobs]" >&2; exit 2; }
    local i with_jobs=0 pid pf
    i=$(node_index "$1"); shift
    [ "${1:-}" = --with-jobs ] && with_jobs=1
    pf=$(slurmd_pidfile "$i")
    if pid=$(pid_of "$pf" slurmd); then
        log "SIGKILL slurmd n$i (pid $pid)"
        kill -KILL "$pid"
        wait_until "slurmd n$i to die" 10 bash -c "! [ -d /proc/$pid ] || grep -q '^State:.*Z' /proc/$pid/status" || true
    else
        log "slurmd n$i is not running"
    fi
    rm -f "$pf"
    if [ "$with_jobs" = 1 ]; then
        # Processes of jobs on this node carry SLURMD_NODENAME=nX; also kill their parent slurmstepd.
        local p env ppid victims=()
        for p in /proc/[0-9]*; do
            env=$(tr '\0' '\n' 2>/dev/null <"$p/environ") || continue
            grep -qx "SLURMD_NODENAME=n$i" <<<"$env" || continue
            grep -q '^SLURM_JOB_ID=' <<<"$env" || continue
            victims+=("${p#/proc/}")
            ppid=$(awk '/^PPid:/{print $2}' "$p/status" 2>/dev/null || true)
            [ -n "$ppid" ] && [ "$(cat "/proc/$ppid/comm" 2>/dev/null)" = slurmstepd ] && victims+=("$ppid")
        done
        if [ ${#victims[@]} -gt 0 ]; then
            mapfile -t victims < <(printf '%s\n' "${victims[@]}" | sort -un)
            log "SIGKILL job processes of n$i: ${victims[*]}"
            kill -KILL "${victims[@]}" 2>/dev/null || true
        else
            log "no job processes found on n$i"
        fi
    fi
}

cmd_node_restart() {
    need_root
    [ $# -ge 1 ] || { echo "usage: $0 node-restart N" >&2; exit 2; }
    local i pf
    i=$(node_index "$1")
    pf=$(slurmd_pidfile "$i")
    running "$pf" slurmd && stop_pidfile "$pf" slurmd "slurmd n$i"
    start_slurmd "$i"
    local deadline=$((SECONDS + TIMEOUT)) resumed=0
    until node_up "n$i"; do
        # ReturnToService=2 brings a DOWN node back on registration; a drained one needs a resume.
        if [ "$resumed" = 0 ] && [ "$SECONDS" -gt $((deadline - TIMEOUT + 3)) ]; then
            resume_stuck_nodes; resumed=1
        fi
        [ "$SECONDS" -lt "$deadline" ] || { sinfo -N >&2; die "node n$i did not come back within ${TIMEOUT}s"; }
        sleep 0.2
    done
    log "node n$i is $(node_state "n$i")"
}

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
        install)      cmd_install "$@" ;;
        start)        cmd_start "$@" ;;
        stop)         cmd_stop "$@" ;;
        status)       cmd_status "$@" ;;
        node-kill)    cmd_node_kill "$@" ;;
        node-restart) cmd_node_restart "$@" ;;
        logs)         show_logs "${1:-40}" 2>&1 ;;
        -h|--help|help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
