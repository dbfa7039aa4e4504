#!/usr/bin/env bash
# Real launchers across two hosts, on one machine. Two network namespaces joined by a veth pair
# act as the hosts ferry-node-a and ferry-node-b: each has its own host name (a UTS namespace)
# and its own /etc/hosts naming both (a mount namespace). A Slurm cluster runs on them
# (slurmctld and a slurmd on A, a slurmd on B), and from A this proves that:
#   1. srun without --mpi=pmix starts master_worker with one rank per host: env://, the store on
#      the step's first node at the port derived from the job id, the token derived from the
#      job secret, and the two hosts talk over tcp;
#   2. srun --mpi=pmix does the same through Slurm's PMIx server (pmix://, no store);
#   3. parameter_server runs as 4 ranks, 2 per host: peers on one host use shm, the others tcp;
#   4. mpirun across both hosts (its remote daemon started in B's namespaces by an rsh agent, as
#      ssh would on a cluster) runs master_worker (1 rank per host) and parameter_server (2 per
#      host) through Open MPI's PMIx servers: shm on a host, tcp across.
# Usage: tests/launchers/two_hosts.sh [BUILD]   (BUILD: the build directory, default build)
# Each case prints "two hosts: CASE: ok" or "two hosts: CASE: skipped (why)" when a tool or a
# permission is missing (not root, no iproute2 or unshare, no Slurm, no PMIx plugin, no
# mpirun). A failure prints the task output and the daemons' logs and exits 1.
set -u
build=${1:-build}
build=$(cd "$build" 2>/dev/null && pwd) ||
    { echo "two hosts: no build directory ${1:-build}"; exit 1; }
for prog in master_worker parameter_server; do
    [ -x "$build/examples/$prog" ] ||
        { echo "two hosts: $build/examples/$prog is not built"; exit 1; }
done

# Nothing of a launcher this script may itself run under reaches these jobs.
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"
forget_launcher_env
unset FERRY_INSECURE

say() { echo "two hosts: $*"; }
skip_all() {
    for c in "srun" "srun --mpi=pmix" "srun, 2 ranks per host" "mpirun"; do
        say "$c: skipped ($1)"
    done
    exit 0
}
[ "$(id -u)" = 0 ] || skip_all "needs root"
for tool in ip nsenter unshare mount timeout setsid; do
    command -v $tool >/dev/null || skip_all "needs $tool"
done
unshare --uts --mount true 2>/dev/null || skip_all "cannot create UTS and mount namespaces here"
for tool in slurmctld slurmd srun sinfo munge unmunge; do
    command -v $tool >/dev/null || skip_all "needs Slurm and munge ($tool is missing)"
done

ns_a=ferry_2h_a_$$ ns_b=ferry_2h_b_$$
net=10.79.$(( $$ % 250 ))
addr_a=$net.1 addr_b=$net.2
host_a=ferry-node-a host_b=ferry-node-b
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry_two_hosts.XXXXXX") || exit 1
munged_pid=

# Ends what this script started: the daemons by their pid files, then every process still in
# one of the two network namespaces (job steps, stray tasks), then the namespaces.
proc_gone() { # pid: exited (a zombie counts: PID 1 may reap it late)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) } # the state follows the command name, which may hold spaces
    [ -z "$stat" ] || [ "${stat%% *}" = Z ]
}
stop_pids() { # pid...: TERM, up to 5 s, then KILL
    local p left
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null
    for _ in $(seq 50); do
        left=
        for p in "$@"; do proc_gone "$p" || left="$left $p"; done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null
}
cleanup() {
    local daemons="" f ns
    for f in "$work"/slurmctld.pid "$work"/slurmd.*.pid; do
        [ -s "$f" ] && daemons="$daemons $(cat "$f")"
    done
    # shellcheck disable=SC2086
    stop_pids $daemons
    for ns in "$ns_a" "$ns_b"; do
        # shellcheck disable=SC2046
        stop_pids $(ip netns pids "$ns" 2>/dev/null)
        ip netns del "$ns" 2>/dev/null
    done
    [ -n "$munged_pid" ] && stop_pids "$munged_pid"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# ---- the two hosts ---------------------------------------------------------------------------
ip netns add "$ns_a" 2>/dev/null || skip_all "cannot create network namespaces here"
ip netns add "$ns_b" || exit 1
ip link add "fa$$" netns "$ns_a" type veth peer name "fb$$" netns "$ns_b" || exit 1
ip -n "$ns_a" addr add "$addr_a/24" dev "fa$$" && ip -n "$ns_a" link set "fa$$" up &&
    ip -n "$ns_a" link set lo up || exit 1
ip -n "$ns_b" addr add "$addr_b/24" dev "fb$$" && ip -n "$ns_b" link set "fb$$" up &&
    ip -n "$ns_b" link set lo up || exit 1
cat >"$work/hosts" <<EOF
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
$addr_a $host_a
$addr_b $host_b
EOF

# on a|b COMMAND...: runs COMMAND on host A or B (its network namespace, a UTS namespace with
# the host's name and a mount namespace whose /etc/hosts names both hosts). Written as a script
# too, so that mpirun's rsh agent can use it. nsenter, not `ip netns exec`: that one mounts a
# fresh /sys, without the cgroup file systems slurmd reads at start.
cat >"$work/on" <<EOF
#!/bin/sh
# on a|b COMMAND...
case "\$1" in a) ns=$ns_a name=$host_a ;; b) ns=$ns_b name=$host_b ;; *) exit 2 ;; esac
shift
exec nsenter --net=/run/netns/"\$ns" unshare --uts --mount sh -c \
    'mount --bind "\$0" /etc/hosts && hostname "\$1" && shift && exec "\$@"' \
    "$work/hosts" "\$name" "\$@"
EOF
chmod +x "$work/on"
on() { "$work/on" "$@"; }
on b sh -c "[ \"\$(hostname)\" = $host_b ] && getent hosts $host_a >/dev/null" ||
    skip_all "cannot give a network namespace its own host name and hosts file"

# ---- munge: the running daemon when there is one, else one of ours on a private socket -------
auth_info=
if ! { timeout 5 munge -n | timeout 5 unmunge; } >/dev/null 2>&1; then
    command -v munged >/dev/null || skip_all "no munged running and none installed"
    [ -r /etc/munge/munge.key ] || skip_all "no munged running and no munge key"
    # munged run by root wants a key root owns, and a socket every user can reach.
    chmod 711 "$work" && install -d -m 755 "$work/munge" && install -d -m 700 "$work/munged" &&
        install -m 600 /etc/munge/munge.key "$work/munged/key" || exit 1
    setsid munged -F --socket="$work/munge/socket" --key-file="$work/munged/key" \
        --log-file="$work/munged/log" --pid-file="$work/munged/pid" \
        --seed-file="$work/munged/seed" </dev/null >"$work/munged/out" 2>&1 &
    munged_pid=$!
    for _ in $(seq 50); do
        timeout 2 munge -S "$work/munge/socket" -n 2>/dev/null |
            timeout 2 unmunge -S "$work/munge/socket" >/dev/null 2>&1 && break
        sleep 0.1
    done
    timeout 2 munge -S "$work/munge/socket" -n 2>/dev/null |
        timeout 2 unmunge -S "$work/munge/socket" >/dev/null 2>&1 ||
        { cat "$work/munged/out"; say "munged did not start"; exit 1; }
    auth_info="AuthInfo=socket=$work/munge/socket"
fi

# ---- the cluster -----------------------------------------------------------------------------
mkdir -p "$work/state" "$work/spool/$host_a" "$work/spool/$host_b" "$work/tmp/$host_a" \
    "$work/tmp/$host_b" && install -d -m 700 "$work/secret" || exit 1
# The ports are this cluster's own (each host is a network namespace of its own anyway). Each
# node has its own spool and TmpFS: the two hosts share one file system, and Slurm's PMIx plugin
# makes a directory named by job and step under TmpFS on every node.
export SLURM_CONF=$work/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=ferry2h
SlurmctldHost=$host_a($addr_a)
SlurmctldPort=7017
SlurmdPort=7018
$(slurm_conf_common)
$auth_info
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool/%n
TmpFS=$work/tmp/%n
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.%n.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host_a NodeAddr=$addr_a CPUs=8 RealMemory=1000 State=UNKNOWN
NodeName=$host_b NodeAddr=$addr_b CPUs=8 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$host_a,$host_b Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF

show_logs() {
    local f
    for f in "$work"/slurmctld.log "$work"/slurmd.*.log; do
        [ -f "$f" ] || continue
        echo "--- ${f##*/} (last 40 lines)"
        tail -n 40 "$f"
    done
}
fail() { # what [output file]
    say "$1: FAILED"
    if [ -n "${2:-}" ]; then echo "--- task output"; cat "$2"; fi
    show_logs
    exit 1
}

on a setsid slurmctld -D -c -f "$SLURM_CONF" </dev/null >"$work/slurmctld.out" 2>&1 &
on a setsid slurmd -D -f "$SLURM_CONF" </dev/null >"$work/slurmd.a.out" 2>&1 &
on b setsid slurmd -D -f "$SLURM_CONF" </dev/null >"$work/slurmd.b.out" 2>&1 &
started=$(date +%s)
until [ "$(on a timeout 5 sinfo -h -N -o '%N %T' 2>/dev/null | sort | tr '\n' ' ')" = \
        "$host_a idle $host_b idle " ]; do
    if [ $(( $(date +%s) - started )) -gt 30 ]; then
        on a timeout 5 sinfo -N 2>&1
        cat "$work"/*.out
        fail "the cluster (both nodes idle within 30 s)"
    fi
    sleep 0.5
done

# The tasks' environment: the job secret in the scratch directory (both hosts see it, as nodes
# of a cluster share home directories) and ferry's debug log, which names each peer's provider.
export FERRY_SECRET_FILE=$work/secret/secret FERRY_LOG=debug

# run_case NAME OUTPUT COMMAND...: runs COMMAND on host A within 60 s; fails on a non-zero exit.
run_case() {
    local name=$1 out=$2 rc t0
    shift 2
    t0=$EPOCHREALTIME
    # In the background, so that a signal to this script ends it (and cleans up) at once.
    on a timeout 60 "$@" >"$out" 2>&1 &
    wait $!
    rc=$?
    if [ $rc != 0 ]; then
        [ $rc = 124 ] && echo "(timed out after 60 s)" >>"$out"
        fail "$name (exit $rc)" "$out"
    fi
    case_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
}
# expect NAME OUTPUT PATTERN...: each extended regular expression must match a line of OUTPUT.
expect() {
    local name=$1 out=$2 p
    shift 2
    for p in "$@"; do
        grep -Eq -- "$p" "$out" || { echo "--- expected a line matching: $p"; fail "$name" "$out"; }
    done
}
master_worker_lines() { # NAME OUTPUT: the example's results, and tcp between the two hosts
    expect "$1" "$2" 'torch\.add\(torch\.ones\(2\), 3\) = tensor\(\[4\., 4\.\]\)' \
        'min\(1, 2\) = 1' \
        "worker 'master' \(rank 0\) is reached over tcp" \
        "worker 'worker' \(rank 1\) is reached over tcp"
}

# 1. srun, no PMIx: env:// with the store on the step's first node and a derived token.
out=$work/srun.out
run_case "srun" "$out" srun -l -N 2 -n 2 --ntasks-per-node=1 -O "$build/examples/master_worker"
master_worker_lines "srun" "$out"
expect "srun" "$out" "^0: .*store debug\] serving on $host_a:[0-9]+ with auth" \
    "^1: .*rank 1 of 2 joined as worker"
[ -s "$FERRY_SECRET_FILE" ] || fail "srun (the job secret $FERRY_SECRET_FILE was not made)" "$out"
say "srun: ok (master_worker, 1 rank per host, tcp; ${case_s} s)"

# 2. srun --mpi=pmix: pmix://.
if ! on a timeout 10 srun --mpi=list 2>&1 | grep -q pmix; then
    say "srun --mpi=pmix: skipped (this Slurm has no PMIx plugin: srun --mpi=list)"
else
    out=$work/srun_pmix.out
    run_case "srun --mpi=pmix" "$out" srun -l --mpi=pmix -N 2 -n 2 --ntasks-per-node=1 -O \
        "$build/examples/master_worker"
    master_worker_lines "srun --mpi=pmix" "$out"
    expect "srun --mpi=pmix" "$out" "^0: .*rank 0 of 2 joined through PMIx as master" \
        "^1: .*rank 1 of 2 joined through PMIx as worker"
    say "srun --mpi=pmix: ok (master_worker, 1 rank per host, tcp; ${case_s} s)"
fi

# 3. 4 ranks, 2 per host (block distribution: ranks 0 and 1 on A, 2 and 3 on B).
out=$work/srun_4.out
run_case "srun, 2 ranks per host" "$out" srun -l -N 2 -n 4 --ntasks-per-node=2 -O \
    "$build/examples/parameter_server" --steps 3
expect "srun, 2 ranks per host" "$out" '^0: loss fell from' \
    "^0: .*worker 'trainer1' \(rank 1\) is reached over shm" \
    "^0: .*worker 'trainer2' \(rank 2\) is reached over tcp" \
    "^0: .*worker 'trainer3' \(rank 3\) is reached over tcp" \
    "^2: .*worker 'ps' \(rank 0\) is reached over tcp" \
    "^2: .*worker 'trainer1' \(rank 1\) is reached over tcp" \
    "^2: .*worker 'trainer3' \(rank 3\) is reached over shm"
say "srun, 2 ranks per host: ok (parameter_server, 4 ranks, shm on a host, tcp across; ${case_s} s)"

# 4. mpirun on A with a host on each side. Its rsh agent starts the remote daemon (orted) on B,
# as ssh would on a cluster; the daemon reaches mpirun over tcp.
if ! command -v mpirun >/dev/null || ! command -v orted >/dev/null; then
    say "mpirun: skipped (needs Open MPI's mpirun and orted)"
    exit 0
fi
cat >"$work/rsh" <<AGENT
#!/bin/sh
# rsh agent: [options] HOST COMMAND...; the command is a shell line, as ssh runs it.
while [ \$# -gt 0 ]; do case "\$1" in -*) shift ;; *) break ;; esac; done
case "\$1" in
$host_a) node=a ;;
$host_b) node=b ;;
*) echo "rsh: unknown host \$1" >&2; exit 255 ;;
esac
shift
exec "$work/on" \$node sh -c "\$*"
AGENT
chmod +x "$work/rsh"
out=$work/mpirun.out
run_case "mpirun" "$out" mpirun --allow-run-as-root --oversubscribe --tag-output \
    --host "$host_a,$host_b" -np 2 --mca plm_rsh_agent "$work/rsh" -x FERRY_LOG \
    "$build/examples/master_worker"
master_worker_lines "mpirun" "$out"
expect "mpirun" "$out" '^\[1,0\]<stderr>:.*rank 0 of 2 joined through PMIx as master' \
    '^\[1,1\]<stderr>:.*rank 1 of 2 joined through PMIx as worker'
mw_s=$case_s
out=$work/mpirun_4.out
run_case "mpirun, 2 ranks per host" "$out" mpirun --allow-run-as-root --oversubscribe \
    --tag-output --host "$host_a:2,$host_b:2" -np 4 --mca plm_rsh_agent "$work/rsh" \
    -x FERRY_LOG "$build/examples/parameter_server" --steps 3
expect "mpirun, 2 ranks per host" "$out" '^\[1,0\]<stdout>:loss fell from' \
    "^\\[1,0\\]<stderr>:.*worker 'trainer1' \\(rank 1\\) is reached over shm" \
    "^\\[1,0\\]<stderr>:.*worker 'trainer2' \\(rank 2\\) is reached over tcp" \
    "^\\[1,3\\]<stderr>:.*worker 'ps' \\(rank 0\\) is reached over tcp" \
    "^\\[1,3\\]<stderr>:.*worker 'trainer2' \\(rank 2\\) is reached over shm"
say "mpirun: ok (master_worker, 1 rank per host, tcp, ${mw_s} s; parameter_server, 2 ranks" \
    "per host, shm on a host, tcp across, ${case_s} s)"
