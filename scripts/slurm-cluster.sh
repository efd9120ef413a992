#!/usr/bin/env bash
# slurm-cluster.sh -- a real 3-node SLURM cluster (with accounting) on this one machine,
# for rushhpc's tests and CI.  Debian 12, run as root.  See docs/test-cluster.md.
#
#   slurm-cluster.sh install                 apt-get install the packages if missing
#   slurm-cluster.sh start [--no-accounting] write configs, start daemons, wait until ready
#   slurm-cluster.sh stop [--cancel-jobs]    stop the daemons this script started (by pid file);
#                                            --cancel-jobs first scancels every queued/running job
#   slurm-cluster.sh status                  each daemon with its pid, sinfo, accounting on/off; exit 0
#                                            when every daemon runs under its pid file, slurmctld
#                                            answers, n1-n3 are usable and (if on) sacct answers
#   slurm-cluster.sh env                     print 'export SLURM_CONF=...' (eval it to use the cluster)
#   slurm-cluster.sh node-kill N [--with-jobs]  SIGKILL slurmd of node nN (and its jobs' processes)
#   slurm-cluster.sh node-restart N          (re)start slurmd of node nN and wait until it is back
#   slurm-cluster.sh logs [N]                print log paths and tail them (N lines, default 40)
#
# Everything lives in one folder, $RUSHHPC_TEST_CLUSTER_DIR (default /var/lib/rushhpc-test-cluster):
# configuration (SLURM_CONF=<folder>/etc/slurm.conf), state, spool, logs, pid files, its own munged
# and MariaDB.  /etc/slurm, /etc/munge and the system's daemons are never read, written or signalled.
# Ports: $RUSHHPC_TEST_CLUSTER_PORT_BASE (default 17000) + 1..3 (slurmd), +306 (MariaDB),
# +817 (slurmctld), +819 (slurmdbd).  start, stop, node-kill and node-restart hold an exclusive
# flock on <folder>/lock.
set -euo pipefail

PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

DIR=${RUSHHPC_TEST_CLUSTER_DIR:-/var/lib/rushhpc-test-cluster}
DIR=${DIR%/}
case $DIR in
    /*) ;;
    *) echo "slurm-cluster.sh: RUSHHPC_TEST_CLUSTER_DIR must be an absolute path, got '$DIR'" >&2; exit 2 ;;
esac
# The paths go into slurm.conf unquoted and into unix socket names (at most 107 bytes).
if ! [[ $DIR =~ ^[A-Za-z0-9._/+-]+$ ]] || [ ${#DIR} -gt 64 ]; then
    echo "slurm-cluster.sh: RUSHHPC_TEST_CLUSTER_DIR must be at most 64 characters of [A-Za-z0-9._/+-], got '$DIR'" >&2
    exit 2
fi

ETC=$DIR/etc                # slurm.conf, slurmdbd.conf, ports (SLURM_CONF=$ETC/slurm.conf)
RUN=$DIR/run                # pid files of the slurm daemons
LOG=$DIR/log                # all logs
SPOOL=$DIR/spool            # slurmd spool dirs, one per node
CTLD=$DIR/ctld              # slurmctld StateSaveLocation
DBDATA=$DIR/mysql           # our own MariaDB datadir (not the system's /var/lib/mysql)
DBRUN=$DIR/mysql-run        # socket + pid file of our MariaDB (owned by mysql)
MUNGE_DIR=$DIR/munge        # our munged's key and seed (owned by munge, mode 700)
MUNGE_RUN=$DIR/munge-run    # our munged's socket and pid file (owned by munge, mode 755)
LOCKFILE=$DIR/lock

CONF=$ETC/slurm.conf
DBD_CONF=$ETC/slurmdbd.conf
PORTS_FILE=$ETC/ports
MARKER="# Written by rushhpc scripts/slurm-cluster.sh"

CLUSTER=rushhpc
NODES=(n1 n2 n3)
DB_SOCK=$DBRUN/mysqld.sock
DB_PIDFILE=$DBRUN/mysqld.pid
DB_USER=slurm
DB_PASS=rushhpc-slurm
DB_NAME=slurm_acct_db
MUNGE_SOCK=$MUNGE_RUN/munge.socket
MUNGE_PIDFILE=$MUNGE_RUN/munged.pid
MUNGE_KEY=$MUNGE_DIR/munge.key
MUNGE_LOG=$LOG/munged.log

# Ports: the environment wins, then what the last 'start' wrote, then 17000.
PORT_BASE=${RUSHHPC_TEST_CLUSTER_PORT_BASE:-}
if [ -z "$PORT_BASE" ] && [ -f "$PORTS_FILE" ]; then
    PORT_BASE=$(sed -n 's/^PORT_BASE=\([0-9][0-9]*\)$/\1/p' "$PORTS_FILE" | head -n1)
fi
PORT_BASE=${PORT_BASE:-17000}
if ! [[ $PORT_BASE =~ ^[0-9]+$ ]] || [ "$PORT_BASE" -lt 1024 ] || [ "$PORT_BASE" -gt 64000 ]; then
    echo "slurm-cluster.sh: RUSHHPC_TEST_CLUSTER_PORT_BASE must be a number from 1024 to 64000, got '$PORT_BASE'" >&2
    exit 2
fi
DB_PORT=$((PORT_BASE + 306))
CTLD_PORT=$((PORT_BASE + 817))
DBD_PORT=$((PORT_BASE + 819))
node_port() { echo $((PORT_BASE + $1)); }

TIMEOUT=${RUSHHPC_SLURM_TIMEOUT:-90}                 # seconds allowed for each readiness wait
LOCK_WAIT=${RUSHHPC_TEST_CLUSTER_LOCK_WAIT:-600}     # seconds to wait for the cluster lock

export DEBIAN_FRONTEND=noninteractive
# Every SLURM command and daemon this script runs sees the test cluster, never /etc/slurm.
export SLURM_CONF=$CONF

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
fail() { log "ERROR: $*"; exit 1; }   # without the logs (nothing was started)

need_root() { [ "$(id -u)" = 0 ] || { echo "slurm-cluster.sh: must run as root" >&2; exit 2; }; }

# wait_until DESCRIPTION TIMEOUT CMD... : poll CMD every 0.2 s until it succeeds or the deadline passes.
wait_until() {
    local desc=$1 limit=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { log "timed out after ${limit}s waiting for: $desc"; return 1; }
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------- the lock
# lock_holders: "pid (comm, READ|WRITE)" of every process holding a flock on $LOCKFILE.
lock_holders() {
    local ino out=""
    ino=$(stat -c %i "$LOCKFILE" 2>/dev/null) || return 0
    while read -r pid kind; do
        out+="${out:+, }$pid ($(cat "/proc/$pid/comm" 2>/dev/null || echo '?'), $kind)"
    done < <(awk -v ino="$ino" '$2 != "->" && $2 == "FLOCK" { n = split($6, a, ":"); if (a[n] == ino) print $5, $4 }' /proc/locks 2>/dev/null)
    echo "${out:-nobody}"
}

# take_lock: exclusive flock on $LOCKFILE for the rest of this script.  A caller that already holds
# it (a test owning the cluster) passes its descriptor in RUSHHPC_TEST_CLUSTER_LOCK_FD.
take_lock() {
    local fd=${RUSHHPC_TEST_CLUSTER_LOCK_FD:-}
    if [ -n "$fd" ]; then
        [[ $fd =~ ^[0-9]+$ ]] && [ "$(readlink -f "/proc/$$/fd/$fd" 2>/dev/null)" = "$(readlink -f "$LOCKFILE")" ] \
            || fail "RUSHHPC_TEST_CLUSTER_LOCK_FD=$fd is not an open descriptor of $LOCKFILE"
        grep -q '^lock:.*FLOCK.*WRITE' "/proc/$$/fdinfo/$fd" 2>/dev/null \
            || fail "RUSHHPC_TEST_CLUSTER_LOCK_FD=$fd does not hold the exclusive lock on $LOCKFILE"
        return 0
    fi
    [ -e "$LOCKFILE" ] || { : >>"$LOCKFILE"; chmod 644 "$LOCKFILE"; }
    exec 9<"$LOCKFILE"
    if ! flock -x -n 9; then
        log "waiting up to ${LOCK_WAIT}s for the test cluster lock $LOCKFILE (held by: $(lock_holders))"
        flock -x -w "$LOCK_WAIT" 9 || fail "the test cluster lock $LOCKFILE is still held after ${LOCK_WAIT}s by: $(lock_holders)"
    fi
}

# ---------------------------------------------------------------------------- our daemons
# Daemons: munged mariadbd slurmdbd slurmctld slurmd-n1 slurmd-n2 slurmd-n3.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd-n1 slurmd-n2 slurmd-n3)

d_pidfile() {
    case $1 in
        munged) echo "$MUNGE_PIDFILE" ;;
        mariadbd) echo "$DB_PIDFILE" ;;
        slurmdbd|slurmctld) echo "$RUN/$1.pid" ;;
        slurmd-n*) echo "$RUN/$1.pid" ;;
    esac
}
d_comm() { case $1 in slurmd-n*) echo slurmd ;; *) echo "$1" ;; esac; }
d_port() {   # TCP port the daemon listens on (none for munged: it has a socket)
    case $1 in
        mariadbd) echo "$DB_PORT" ;;
        slurmdbd) echo "$DBD_PORT" ;;
        slurmctld) echo "$CTLD_PORT" ;;
        slurmd-n*) node_port "${1#slurmd-n}" ;;
    esac
}
d_log() {
    case $1 in
        munged) echo "$MUNGE_LOG" ;;
        mariadbd) echo "$LOG/mariadb.log" ;;
        *) echo "$LOG/$1.log" ;;
    esac
}

# is_ours PID NAME: PID is a live (not zombie) process of daemon NAME of *this* cluster: the right
# executable, started with this cluster's files (a system munged/mariadbd/slurmd never matches).
is_ours() {
    local pid=$1 name=$2 comm state args env
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "$comm" = "$(d_comm "$name")" ] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "$state" != Z ] || return 1          # a zombie is as good as dead
    args=" $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) "
    case $name in
        munged)    [[ $args == *" --socket=$MUNGE_SOCK "* ]] ;;
        mariadbd)  [[ $args == *" --datadir=$DBDATA "* ]] ;;
        slurmctld) [[ $args == *" -f $CONF "* ]] ;;
        slurmd-n*) [[ $args == *" -N ${name#slurmd-} "* && $args == *" -f $CONF "* ]] ;;
        slurmdbd)  # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF from its environment
            if env=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ"); then
                grep -qxF "SLURM_CONF=$CONF" <<<"$env"
            else
                # not root: the environment is unreadable; the port tells (ss shows no pids then either)
                [ "$(id -u)" != 0 ]
            fi ;;
        *) return 1 ;;
    esac
}

# pidfile_pid NAME: the pid in NAME's pid file, if that process is NAME of this cluster.
pidfile_pid() {
    local pid
    # the daemon may remove its pid file at any moment: read it without complaining
    pid=$(tr -dc '0-9' 2>/dev/null <"$(d_pidfile "$1")") || return 1
    [ -n "$pid" ] && is_ours "$pid" "$1" || return 1
    echo "$pid"
}

# listeners PORT: "pid comm" for each process listening on TCP PORT (any address).
listeners() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -un |
            while read -r p; do echo "$p $(cat "/proc/$p/comm" 2>/dev/null || echo '?')"; done
        return 0
    fi
    # no ss: /proc/net/tcp{,6} for the socket inodes, /proc/*/fd for their owners
    local hex ino
    hex=$(printf '%04X' "$port")
    for ino in $(awk -v p="$hex" 'FNR > 1 && $4 == "0A" { n = split($2, a, ":"); if (a[n] == p) print $10 }' \
                    /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
        find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\[$ino\]" 2>/dev/null | cut -d/ -f3
    done | sort -un | while read -r p; do echo "$p $(cat "/proc/$p/comm" 2>/dev/null || echo '?')"; done
}

port_in_use() {   # listening on TCP PORT, holder known or not
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p="$hex" 'FNR > 1 && $4 == "0A" { n = split($2, a, ":"); if (a[n] == p) found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# socket_listeners PATH: pids listening on unix socket PATH.
socket_listeners() {
    command -v ss >/dev/null 2>&1 || return 0
    ss -Hlxp 2>/dev/null | awk -v p="$1" '$5 == p' | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -un
}

# orphan_pid NAME: a process of this cluster's NAME found by its port (or munged by its socket)
# though its pid file is missing or stale.
orphan_pid() {
    local name=$1 pid port
    if [ "$name" = munged ]; then
        for pid in $(socket_listeners "$MUNGE_SOCK"); do
            is_ours "$pid" munged && { echo "$pid"; return 0; }
        done
        return 1
    fi
    port=$(d_port "$name")
    while read -r pid _; do
        [ -n "$pid" ] && is_ours "$pid" "$name" && { echo "$pid"; return 0; }
    done < <(listeners "$port")
    return 1
}

# find_pid NAME: pid of NAME of this cluster, by its pid file or else by its port/socket.
find_pid() { pidfile_pid "$1" || orphan_pid "$1"; }

running() { pidfile_pid "$1" >/dev/null; }

# describe PID: "comm (pid N, user U): command line" for messages.
describe() {
    local pid=$1
    printf '%s (pid %s, user %s): %s' "$(cat "/proc/$pid/comm" 2>/dev/null || echo '?')" "$pid" \
        "$(stat -c %U "/proc/$pid" 2>/dev/null || echo '?')" \
        "$(tr '\0\n' '  ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"
}

# check_port NAME: fail with a clear message when NAME's port is taken by a process not of this cluster.
check_port() {
    local name=$1 port holders="" pid comm
    port=$(d_port "$name")
    [ -n "$port" ] || return 0
    port_in_use "$port" || return 0
    while read -r pid comm; do
        [ -n "$pid" ] || continue
        holders+="${holders:+; }$(describe "$pid")"
    done < <(listeners "$port")
    fail "port $port, which this test cluster's $name needs, is in use by ${holders:-a process this user cannot see (run as root, or ss -ltnp)}. Stop that process, or give the test cluster other ports: RUSHHPC_TEST_CLUSTER_PORT_BASE=N (it uses N+1..N+3, N+306, N+817, N+819; now $PORT_BASE) $0 start"
}

# ensure_known NAME: returns 0 when NAME runs (repairing a missing pid file), 1 when it must be started
# (and its port is free).
ensure_known() {
    local name=$1 pid pf
    running "$name" && return 0
    pf=$(d_pidfile "$name")
    if pid=$(orphan_pid "$name"); then
        log "$name runs as pid $pid (found by its port/socket) but its pid file $pf was missing or stale: rewriting it"
        echo "$pid" >"$pf"
        return 0
    fi
    check_port "$name"
    return 1
}

# stop_daemon NAME : SIGTERM this cluster's NAME (by pid file, else by its port), wait up to 30 s,
# then SIGKILL.  Never signals a process that is not this cluster's.
stop_daemon() {
    local name=$1 pf pid i
    pf=$(d_pidfile "$name")
    if ! pid=$(find_pid "$name"); then
        rm -f "$pf"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do
        is_ours "$pid" "$name" || break
        sleep 0.2
    done
    if is_ours "$pid" "$name"; then
        log "$name (pid $pid) did not exit after 30 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for i in $(seq 50); do is_ours "$pid" "$name" || break; sleep 0.1; done
    fi
    rm -f "$pf"
}

# start_daemon NAME CMD... : run a self-daemonising CMD, then wait for NAME's pid file; fail fast when
# its log gets a fatal error (e.g. port in use) instead of waiting 30 s.
start_daemon() {
    local name=$1; shift
    local logfile off=0 deadline err
    logfile=$(d_log "$name")
    [ -f "$logfile" ] && off=$(stat -c %s "$logfile")
    # stdio to a file: a daemon must not inherit the caller's pipes (subprocess.run(capture_output=True)
    # would otherwise wait for the daemon to exit), nor the lock (a daemon holding it would keep the
    # cluster locked for as long as it runs)
    local lfd=${RUSHHPC_TEST_CLUSTER_LOCK_FD:-9}
    "$@" </dev/null >>"$LOG/$name.out" 2>&1 9<&- {lfd}<&- || die "$name failed to start: $*"
    deadline=$((SECONDS + 30))
    until running "$name"; do
        err=$(tail -c +$((off + 1)) "$logfile" 2>/dev/null | grep -E 'fatal|Unable to bind|\[ERROR\]|Error:' | tail -n 1 || true)
        [ -z "$err" ] || die "$name failed: $err"
        [ "$SECONDS" -lt "$deadline" ] || die "$name did not write its pid file $(d_pidfile "$name") within 30 s"
        sleep 0.1
    done
}

node_index() {  # n2 / 2 -> 2
    local n=${1#n}
    case $n in 1|2|3) echo "$n" ;; *) echo "node must be 1, 2 or 3 (or n1..n3), got '$1'" >&2; exit 2 ;; esac
}

accounting_configured() { [ -f "$CONF" ] && grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$CONF"; }

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
    tmp=$(mktemp "$ETC/.slurm.conf.XXXXXX")
    {
        echo "$MARKER -- rewritten on every 'start'; do not edit."
        echo "# The test cluster's own files: use it with SLURM_CONF=$CONF"
        echo "ClusterName=$CLUSTER"
        echo "SlurmctldHost=$host(127.0.0.1)"
        echo "SlurmctldPort=$CTLD_PORT"
        echo "SlurmUser=root"
        echo "SlurmdUser=root"
        echo "AuthType=auth/munge"
        echo "# our own munged (auth/munge and cred/munge), not the system's /run/munge/munge.socket.2"
        echo "AuthInfo=socket=$MUNGE_SOCK"
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
        echo "# no cgroups: there is no cgroup.conf next to this file (slurmd 22.05 reads it from here)"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "SelectType=select/cons_tres"
        echo "# memory is consumable so that --mem is a limit (out of memory); jobs without --mem get 1000 MB per CPU (all 4000 MB of a node for its 4 CPUs)"
        echo "SelectTypeParameters=CR_Core_Memory"
        echo "DefMemPerCPU=1000"
        echo "SchedulerType=sched/backfill"
        echo "SchedulerParameters=sched_interval=2,bf_interval=1"
        echo "PreemptType=preempt/partition_prio"
        echo "PreemptMode=REQUEUE"
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
        echo "# out of memory without cgroups: a step over its --mem is killed at the next gather (1 s)"
        echo "JobAcctGatherParams=OverMemoryKill"
        echo "JobAcctGatherFrequency=task=1"
        if [ "$acct" = 1 ]; then
            echo "AccountingStorageType=accounting_storage/slurmdbd"
            echo "AccountingStorageHost=localhost"
            echo "AccountingStoragePort=$DBD_PORT"
            echo "# connections to slurmdbd take their munge socket from here, not from AuthInfo"
            echo "AccountingStoragePass=$MUNGE_SOCK"
        else
            echo "AccountingStorageType=accounting_storage/none"
        fi
        echo "NodeName=n[1-3] NodeHostname=$host NodeAddr=127.0.0.1 Port=$(node_port 1)-$(node_port 3) CPUs=4 RealMemory=4000 State=UNKNOWN"
        echo "# preemption (tests/test_preemption_slurm.py): a job of 'urgent' requeues jobs of 'debug' it needs room from"
        echo "PartitionName=debug Nodes=n[1-3] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES PriorityTier=1"
        echo "PartitionName=urgent Nodes=n[1-3] MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF"
    } >"$tmp"
    install_conf "$tmp" "$CONF" 644
}

write_dbd_conf() {
    local tmp
    tmp=$(mktemp "$ETC/.slurmdbd.conf.XXXXXX")
    {
        echo "$MARKER -- rewritten on every 'start'; do not edit."
        echo "AuthType=auth/munge"
        echo "AuthInfo=socket=$MUNGE_SOCK"
        echo "DbdHost=localhost"
        echo "DbdPort=$DBD_PORT"
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

# install_conf TMP DEST MODE: move TMP over DEST when different; prints "changed" then.
install_conf() {
    local tmp=$1 dest=$2 mode=$3
    chmod "$mode" "$tmp"
    if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        chmod "$mode" "$dest"
        return 0
    fi
    mv -f "$tmp" "$dest"
    echo changed
}

make_dirs() {
    mkdir -p "$ETC" "$RUN" "$LOG" "$CTLD" "$DBDATA" "$DBRUN" "$MUNGE_DIR" "$MUNGE_RUN"
    chmod 755 "$DIR" "$ETC" "$LOG" "$RUN"
    local n
    for n in "${NODES[@]}"; do mkdir -p "$SPOOL/$n"; done
    chown mysql:mysql "$DBDATA" "$DBRUN"
    chmod 750 "$DBDATA"
    touch "$LOG/mariadb.log"; chown mysql:mysql "$LOG/mariadb.log"
    # munged checks its directories: key dir private, socket dir reachable by every client
    chown munge:munge "$MUNGE_DIR" "$MUNGE_RUN"
    chmod 700 "$MUNGE_DIR"
    chmod 755 "$MUNGE_RUN"
    touch "$MUNGE_LOG"; chown munge:munge "$MUNGE_LOG"; chmod 640 "$MUNGE_LOG"
}

# An older slurm-cluster.sh wrote /etc/slurm/slurm.conf; say so once per start (never touch it).
note_old_layout() {
    local f
    for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
        if [ -f "$f" ] && head -n1 "$f" 2>/dev/null | grep -qF "$MARKER"; then
            log "note: $f was written by an older slurm-cluster.sh and is no longer used (the test cluster now lives in $DIR); remove it by hand if nothing else needs it (see docs/test-cluster.md)"
        fi
    done
}

# ---------------------------------------------------------------------------- munge
munge_ok() { munge -S "$MUNGE_SOCK" -n 2>/dev/null | unmunge -S "$MUNGE_SOCK" >/dev/null 2>&1; }

ensure_munge() {
    if [ ! -s "$MUNGE_KEY" ]; then
        log "creating the test cluster's own munge key $MUNGE_KEY"
        mungekey --create --keyfile="$MUNGE_KEY"
        chown munge:munge "$MUNGE_KEY"; chmod 600 "$MUNGE_KEY"
    fi
    if ensure_known munged; then
        wait_until "munge -n | unmunge on $MUNGE_SOCK" 10 munge_ok \
            || die "munged (pid $(pidfile_pid munged)) runs but 'munge -S $MUNGE_SOCK -n | unmunge' fails; see $MUNGE_LOG"
        return 0
    fi
    log "starting munged (socket $MUNGE_SOCK)"
    start_daemon munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged \
        --socket="$MUNGE_SOCK" --pid-file="$MUNGE_PIDFILE" --key-file="$MUNGE_KEY" \
        --log-file="$MUNGE_LOG" --seed-file="$MUNGE_DIR/munged.seed"
    wait_until "munge -n | unmunge on $MUNGE_SOCK" "$TIMEOUT" munge_ok || die "munge does not work"
}

# ---------------------------------------------------------------------------- mariadb
mdb() { mariadb --no-defaults --socket="$DB_SOCK" -uroot "$@"; }
mariadb_alive() { mariadb-admin --no-defaults --socket="$DB_SOCK" -uroot ping 2>/dev/null | grep -q alive; }

ensure_mariadb() {
    if ! ensure_known mariadbd; then
        if [ ! -d "$DBDATA/mysql" ]; then
            log "initialising MariaDB datadir $DBDATA"
            mariadb-install-db --no-defaults --user=mysql --datadir="$DBDATA" \
                --auth-root-authentication-method=socket --skip-test-db \
                </dev/null >"$LOG/mariadb-install-db.log" 2>&1 9<&- || die "mariadb-install-db failed"
        fi
        log "starting mariadbd (user mysql, port $DB_PORT, socket $DB_SOCK)"
        # started directly (mariadbd does not fork: setsid -f detaches it); found again by its pid file
        start_daemon mariadbd setsid -f /usr/sbin/mariadbd \
            --no-defaults --user=mysql --datadir="$DBDATA" \
            --socket="$DB_SOCK" --pid-file="$DB_PIDFILE" \
            --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
            --log-error="$LOG/mariadb.log" \
            --innodb-buffer-pool-size=1G --innodb-lock-wait-timeout=900 \
            --innodb-flush-log-at-trx-commit=2
    fi
    wait_until "mariadbd to answer on $DB_SOCK" "$TIMEOUT" mariadb_alive || die "mariadbd did not come up"
    chmod 644 "$DB_PIDFILE" 2>/dev/null || true   # mariadbd writes it 660: let 'status' read it as any user
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
    if [ "${1:-}" = changed ] && find_pid slurmdbd >/dev/null; then
        stop_daemon slurmdbd
    fi
    if ! ensure_known slurmdbd; then
        log "starting slurmdbd (port $DBD_PORT)"
        start_daemon slurmdbd slurmdbd
    fi
    wait_until "slurmdbd to answer sacctmgr" "$TIMEOUT" sacctmgr_ok || die "slurmdbd does not answer"
    if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER in slurmdbd"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
    fi
}

ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

ensure_slurmctld() {
    if ! ensure_known slurmctld; then
        log "starting slurmctld (port $CTLD_PORT)"
        start_daemon slurmctld slurmctld -f "$CONF"
    fi
}

ensure_slurmd() {   # $1 = node index
    local i=$1
    ensure_known "slurmd-n$i" && return 0
    mkdir -p "$SPOOL/n$i"
    log "starting slurmd -N n$i (port $(node_port "$i"))"
    start_daemon "slurmd-n$i" slurmd -N "n$i" -f "$CONF"
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
                if running "slurmd-n$i"; then
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
    for i in 1 2 3; do stop_daemon "slurmd-n$i"; done
    stop_daemon slurmctld
}

stop_accounting_daemons() {
    stop_daemon slurmdbd
    stop_daemon mariadbd
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
    mkdir -p "$DIR"
    take_lock
    make_dirs
    note_old_layout
    echo "PORT_BASE=$PORT_BASE" >"$PORTS_FILE.tmp" && mv -f "$PORTS_FILE.tmp" "$PORTS_FILE"

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

    ensure_slurmctld
    wait_until "slurmctld to answer 'scontrol ping'" "$TIMEOUT" ctld_ok || die "slurmctld does not answer"

    local i
    for i in 1 2 3; do ensure_slurmd "$i"; done

    wait_nodes_up
    if [ "$acct" = 1 ]; then
        wait_until "sacct to answer" "$TIMEOUT" sacct_ok || die "sacct does not answer"
    fi
    log "cluster up in $((SECONDS - t0)) s (accounting: $([ "$acct" = 1 ] && echo on || echo off)); logs in $LOG"
    log "use it with: export SLURM_CONF=$CONF   (or: eval \"\$($0 env)\")"
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
    if [ ! -d "$DIR" ]; then
        log "nothing to stop: $DIR does not exist"
        return 0
    fi
    take_lock
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
    stop_daemon munged
    # Job processes (slurmstepd and its children) are not daemons this script started; say if any remain.
    local left
    left=$(for p in /proc/[0-9]*; do
               if [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] \
                  && tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$CONF"; then
                   echo "${p#/proc/}"
               fi
           done | tr '\n' ' ')
    [ -z "$left" ] || log "note: job step daemons still running (slurmstepd pids: $left); they belong to jobs, not to this script"
    log "stopped"
}

cmd_status() {
    local up=1 name pid pf needed acct=0 note
    if [ ! -f "$CONF" ]; then
        echo "test cluster not set up: $CONF does not exist (run: $0 start)"
        up=0
    fi
    accounting_configured && acct=1
    for name in "${DAEMONS[@]}"; do
        pf=$(d_pidfile "$name")
        needed=1
        case $name in mariadbd|slurmdbd) [ "$acct" = 1 ] || needed=0 ;; esac
        note=""
        [ "$needed" = 1 ] || note=" (not needed: accounting off)"
        if pid=$(pidfile_pid "$name"); then
            printf '%-10s running (pid %s, pid file %s)%s\n' "$name" "$pid" "$pf" "$note"
        elif [ -e "$pf" ] && [ ! -r "$pf" ]; then
            printf '%-10s unknown: its pid file %s is not readable by %s (run status as root)\n' "$name" "$pf" "$(id -un)"
            up=0
        elif pid=$(orphan_pid "$name"); then
            printf '%-10s running (pid %s, found by its port/socket) but its pid file %s is missing or stale\n' "$name" "$pid" "$pf"
            up=0
        else
            printf '%-10s not running%s\n' "$name" "$note"
            [ "$needed" = 0 ] || up=0
        fi
    done
    if [ -f "$CONF" ] && ctld_ok; then
        sinfo -N
        all_nodes_up || { echo "nodes: not all of n1-n3 are usable (idle/mixed/allocated)"; up=0; }
        if [ "$acct" = 1 ]; then
            if sacct_ok; then echo "accounting: on (slurmdbd)"; else echo "accounting: on, but sacct does not answer"; up=0; fi
        else
            echo "accounting: off (AccountingStorageType=accounting_storage/none)"
        fi
    else
        echo "slurmctld: not answering"
        up=0
    fi
    echo "config: SLURM_CONF=$CONF"
    echo "ports: slurmctld $CTLD_PORT, slurmd $(node_port 1)-$(node_port 3), slurmdbd $DBD_PORT, mariadbd $DB_PORT; munge socket $MUNGE_SOCK"
    echo "lock: $LOCKFILE (held by: $(lock_holders))"
    echo "logs: $LOG"
    [ "$up" = 1 ]
}

cmd_env() {
    echo "export SLURM_CONF=$CONF"
    echo "export RUSHHPC_TEST_CLUSTER_DIR=$DIR"
    [ -f "$CONF" ] || echo "slurm-cluster.sh: note: $CONF does not exist yet (run: $0 start)" >&2
}

cmd_node_kill() {
    need_root
    [ $# -ge 1 ] || { echo "usage: $0 node-kill N [--with-jobs]" >&2; exit 2; }
    local i with_jobs=0 pid pf
    i=$(node_index "$1"); shift
    [ "${1:-}" = --with-jobs ] && with_jobs=1
    take_lock
    pf=$(d_pidfile "slurmd-n$i")
    if pid=$(find_pid "slurmd-n$i"); then
        log "SIGKILL slurmd n$i (pid $pid)"
        kill -KILL "$pid"
        wait_until "slurmd n$i to die" 10 bash -c "! [ -d /proc/$pid ] || grep -q '^State:.*Z' /proc/$pid/status" || true
    else
        log "slurmd n$i is not running"
    fi
    rm -f "$pf"
    if [ "$with_jobs" = 1 ]; then
        # Processes of this cluster's jobs on this node carry SLURMD_NODENAME=nX and SLURM_CLUSTER_NAME;
        # also kill their parent slurmstepd.
        local p env ppid victims=()
        for p in /proc/[0-9]*; do
            env=$(tr '\0' '\n' 2>/dev/null <"$p/environ") || continue
            grep -qx "SLURMD_NODENAME=n$i" <<<"$env" || continue
            grep -q '^SLURM_JOB_ID=' <<<"$env" || continue
            grep -qx "SLURM_CLUSTER_NAME=$CLUSTER" <<<"$env" || continue
            if grep -q '^SLURM_CONF=' <<<"$env" && ! grep -qxF "SLURM_CONF=$CONF" <<<"$env"; then continue; fi
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
    local i
    i=$(node_index "$1")
    take_lock
    stop_daemon "slurmd-n$i"
    ensure_slurmd "$i"
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

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
        install)      cmd_install "$@" ;;
        start)        cmd_start "$@" ;;
        stop)         cmd_stop "$@" ;;
        status)       cmd_status "$@" ;;
        env)          cmd_env "$@" ;;
        node-kill)    cmd_node_kill "$@" ;;
        node-restart) cmd_node_restart "$@" ;;
        logs)         show_logs "${1:-40}" 2>&1 ;;
        -h|--help|help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
