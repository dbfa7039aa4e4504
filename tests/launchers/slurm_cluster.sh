#!/usr/bin/env bash
# A one-node Slurm cluster for tests, with all of its state under one directory:
#   slurm_cluster.sh start DIR   starts munged, slurmctld and slurmd, waits until the node is
#                                idle and prints the path to export as SLURM_CONF
#   slurm_cluster.sh stop DIR    stops the daemons that `start DIR` started (by their pid files)
# The node claims 8 CPUs whatever the machine has (SlurmdParameters=config_overrides) and the
# partition oversubscribes, so a 2-core machine can run a 16-task step. The daemons get their own
# munge socket and free ports, so the cluster never touches /etc/slurm, a system munged or a
# second test cluster running beside it. Needs root (slurmd runs the tasks as their owner).
# Exit status: 0, 1 when something failed (start stops what it had started and prints the logs),
# 2 for bad usage.
set -u

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# = 2 ] || usage
cmd=$1 dir=$2
[ -n "$dir" ] || usage

. "$(dirname "$0")/common.sh" # free_port, slurm_conf_common

# Whether pid $1 is a live process whose command is $2 (pid 1 reaps late here: a defunct
# daemon still answers kill -0, so the state is read instead).
is_running() {
    local pid=$1 name=$2 stat state
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [ "$state" != Z ] && [ "$state" != X ]
}

# stop_daemon PIDFILE NAME: SIGTERM, up to 10 s for it to go, then SIGKILL.
stop_daemon() {
    local pidfile=$1 name=$2 pid i
    [ -f "$pidfile" ] || return 0
    pid=$(tr -dc 0-9 < "$pidfile")
    if is_running "$pid" "$name"; then
        kill -TERM "$pid" 2>/dev/null
        for i in $(seq 100); do
            is_running "$pid" "$name" || break
            sleep 0.1
        done
        if is_running "$pid" "$name"; then
            echo "slurm_cluster: $name ($pid) did not stop on SIGTERM; killed" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$pidfile"
}

# Cancels every job of this cluster and waits up to 5 s for their steps to end: a job step
# outlives slurmd (its slurmstepd keeps the tasks), so stopping the daemons alone could leave a
# hung test's tasks running.
cancel_jobs() {
    local jobs i
    [ -f "$dir/slurm.conf" ] && [ -f "$dir/run/slurmctld.pid" ] || return 0
    export SLURM_CONF=$dir/slurm.conf
    jobs=$(timeout 5 squeue -h -o %A 2>/dev/null)
    [ -n "$jobs" ] || return 0
    timeout 5 scancel $jobs 2>/dev/null
    for i in $(seq 50); do
        [ -z "$(timeout 5 squeue -h -o %A 2>/dev/null)" ] && return 0
        sleep 0.1
    done
}

# The slurmstepd processes of this cluster's slurmd (they inherit its SLURM_CONF) still alive.
own_stepds() {
    local p pid
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        is_running "$pid" slurmstepd || continue
        tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$dir/slurm.conf" && echo "$pid"
    done
}

stop() {
    cancel_jobs
    # slurmd, then the controller, then munge; then any step that survived its job.
    stop_daemon "$dir/run/slurmd.pid" slurmd
    stop_daemon "$dir/run/slurmctld.pid" slurmctld
    stop_daemon "$dir/munge/munged.pid" munged
    local pid
    for pid in $(own_stepds); do
        echo "slurm_cluster: a job step outlived its job; killed slurmstepd $pid" >&2
        kill -KILL "$pid" 2>/dev/null
    done
}

show_logs() {
    local f
    for f in "$dir"/log/*.log "$dir"/log/*.out "$dir"/munge/munged.log "$dir"/munge/munged.out; do
        [ -s "$f" ] || continue
        echo "--- $f" >&2
        tail -n 20 "$f" >&2
    done
}

fail_start() {
    echo "slurm_cluster: $1" >&2
    show_logs
    stop
    exit 1
}

# Runs "$@" detached (setsid) in the background and writes its pid to $pidfile: the daemons run
# in the foreground (-D, -F), so the pid is theirs, and no test's process group holds them.
spawn() {
    local pidfile=$1 log=$2
    shift 2
    setsid "$@" > "$log" 2>&1 < /dev/null &
    echo $! > "$pidfile"
}

start() {
    [ "$(id -u)" = 0 ] || { echo "slurm_cluster: needs root" >&2; exit 1; }
    local tool
    for tool in munged slurmctld slurmd sinfo munge unmunge setpriv ss; do
        command -v "$tool" >/dev/null || { echo "slurm_cluster: $tool not found" >&2; exit 1; }
    done
    local host
    host=$(hostname -s)
    mkdir -p "$dir"/{munge,run,log,state,spool} || exit 1
    # munged runs as the munge user and checks that no one else can write its directories.
    chmod 755 "$dir" "$dir/munge" || exit 1
    chown munge:munge "$dir/munge" || exit 1
    setpriv --reuid=munge --regid=munge --init-groups test -x "$dir/munge" ||
        { echo "slurm_cluster: the munge user cannot reach $dir (a parent directory is closed)" >&2; exit 1; }
    if [ -r /etc/munge/munge.key ]; then
        install -o munge -g munge -m 600 /etc/munge/munge.key "$dir/munge/munge.key" || exit 1
    else
        setpriv --reuid=munge --regid=munge --init-groups mungekey -c -k "$dir/munge/munge.key" || exit 1
    fi
    local sock=$dir/munge/munge.socket
    spawn "$dir/munge/munged.pid" "$dir/munge/munged.out" \
        setpriv --reuid=munge --regid=munge --init-groups munged -F --socket="$sock" --key-file="$dir/munge/munge.key" \
        --log-file="$dir/munge/munged.log" --pid-file="$dir/munge/munged.pid" \
        --seed-file="$dir/munge/munged.seed"
    local i
    for i in $(seq 50); do
        [ -S "$sock" ] && munge -S "$sock" -n 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1 &&
            break
        sleep 0.1
    done
    munge -S "$sock" -n 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1 ||
        fail_start "munged did not answer on $sock"

    local ctld_port slurmd_port
    ctld_port=$(free_port) && slurmd_port=$(free_port "$ctld_port") ||
        fail_start "no free port"
    cat > "$dir/slurm.conf" <<EOF
ClusterName=ferrytest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
$(slurm_conf_common)
AuthInfo=socket=$sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host CPUs=8 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
    export SLURM_CONF=$dir/slurm.conf
    # The pid files the daemons write themselves are the ones `stop` reads; the spawned pid is
    # the same process (foreground mode) and is written first so a failed start still stops it.
    spawn "$dir/run/slurmctld.pid" "$dir/log/slurmctld.out" slurmctld -D -c -f "$SLURM_CONF"
    spawn "$dir/run/slurmd.pid" "$dir/log/slurmd.out" slurmd -D -f "$SLURM_CONF"
    local state=""
    for i in $(seq 150); do # 15 s
        state=$(timeout 5 sinfo -h -o %T 2>/dev/null)
        [ "$state" = idle ] && break
        sleep 0.1
    done
    [ "$state" = idle ] || fail_start "the node is '${state:-not reported}', not idle, after 15 s"
    echo "$SLURM_CONF"
}

case $cmd in
start) start ;;
stop) stop ;;
*) usage ;;
esac
