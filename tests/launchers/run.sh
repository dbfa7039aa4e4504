#!/usr/bin/env bash
# The same jobs under every launcher a cluster may use: tests/launchers/launch_check (3 ranks:
# rpc_sync, rpc_async, remote, distributed autograd), examples/master_worker (2 ranks) and
# examples/parameter_server (4 ranks), each under
#   ferryrun -n N                       (the reference every other run is compared with)
#   torchrun's environment              (this script starts the ranks; no FERRY_AUTH_TOKEN, and
#                                        launch_check once more with one)
#   mpirun -np N                        (Open MPI, PMIx)
#   srun -n N, srun --mpi=pmix -n N     (a one-node Slurm cluster started here)
#   sbatch -W examples/slurm/parameter_server.sbatch
#   ferryrun --nnodes 2                 (two "hosts" in network namespaces, 2 + 1 ranks)
#   torchrun's static rendezvous        (its agent's store holding MASTER_PORT)
#   srun and mpirun across two hosts    (two_hosts.sh: a Slurm node in each namespace)
# Each run must print the same results as the ferryrun run, byte for byte, and under
# launch_check every rank must report the launcher it was really started by. Two incomplete
# torchrun environments must fail with an error naming the variable that is missing, and an
# example started as a job of another size than its own must refuse it.
# A launcher that is not installed (or needs root, or PMIx support this build lacks) prints
# "launchers: <case>: skipped (<reason>)". A failure prints the outputs; the exit status is then 1.
#
# usage: tests/launchers/run.sh [BUILD_DIR]     (the build must hold tests/launch_check)
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/common.sh"

build=$(cd "$build" 2>/dev/null && pwd) || { echo "launchers: no build directory '${1:-build}'"; exit 1; }
ferryrun=$build/bin/ferryrun lc=$build/tests/launch_check
mw=$build/examples/master_worker ps=$build/examples/parameter_server
for f in "$ferryrun" "$lc" "$mw" "$ps"; do
    [ -x "$f" ] || { echo "launchers: $f is not built (make test-launchers builds it)"; exit 1; }
done
JOB_S=30 # one job's limit; each takes about 1 s here

forget_launcher_env
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry_launchers.XXXXXX") || exit 1
chmod 755 "$tmp" # munged runs as its own user and must reach the cluster's directory inside
# The tokens of torchrun's and Slurm's jobs come from a per-user secret under HOME: a fresh HOME
# shows that nothing has to be set up by hand first.
export HOME=$tmp/home
mkdir -p "$HOME"
slurm_dir="" ns_a="" ns_b=""
cleanup() {
    [ -n "$slurm_dir" ] && bash "$here/slurm_cluster.sh" stop "$slurm_dir"
    [ -n "$ns_a" ] && ip netns del "$ns_a" 2>/dev/null
    [ -n "$ns_b" ] && ip netns del "$ns_b" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failed=0
n_ok=0 n_skipped=0
ok() { echo "launchers: $1: ok"; n_ok=$((n_ok + 1)); }
skip() { echo "launchers: $1: skipped ($2)"; n_skipped=$((n_skipped + 1)); }
bad() { # case, what went wrong, output files...
    local c=$1 why=$2 f
    shift 2
    echo "launchers: $c: FAILED: $why"
    for f in "$@"; do
        [ -r "$f" ] && sed 's/^/  | /' "$f"
    done
    failed=1
}

world_of() {
    case $1 in launch_check) echo 3 ;; master_worker) echo 2 ;; parameter_server) echo 4 ;; esac
}
path_of() {
    case $1 in launch_check) echo "$lc" ;; master_worker) echo "$mw" ;; parameter_server) echo "$ps" ;; esac
}
# The lines of a program's output that every launcher must reproduce exactly (ferryrun's
# "[rank] " prefixes taken off).
results() { # program output-file
    sed -E 's/^\[[0-9]+\] //' "$2" | case $1 in
    launch_check) grep '^launch_check: world=' ;;
    master_worker) grep -E '^(torch\.add|min|greet)\(' ;;
    parameter_server) grep -E '^(step [0-9]+ loss|loss fell from)' ;;
    esac
}

# check CASE PROGRAM OUTPUT RC LAUNCHER INIT_METHOD [HOSTS]: the run exited 0, its results equal
# the reference's, and (launch_check) every rank says LAUNCHER and INIT_METHOD; HOSTS, when
# given, lists each rank's host name in rank order.
check() {
    local c=$1 prog=$2 out=$3 rc=$4 launcher=$5 init=$6 hosts=${7-} n r host
    n=$(world_of "$prog")
    if [ "$rc" != 0 ]; then
        bad "$c" "exit status $rc$([ "$rc" = 124 ] && echo " (timed out)")" "$out"
        return
    fi
    results "$prog" "$out" > "$out.results"
    if [ ! -s "$out.results" ]; then
        bad "$c" "no results in the output" "$out"
        return
    fi
    if [ ! -f "$tmp/ref.$prog" ]; then
        bad "$c" "no reference: ferryrun -n $n $prog failed" "$out"
        return
    fi
    if ! cmp -s "$tmp/ref.$prog" "$out.results"; then
        bad "$c" "results differ from ferryrun's (diff ferryrun this-run, then the output)" \
            <(diff "$tmp/ref.$prog" "$out.results") "$out"
        return
    fi
    if [ "$prog" = launch_check ]; then
        local lines
        lines=$(sed -E 's/^\[[0-9]+\] //' "$out" | grep '^launch_check: rank ')
        if [ "$(echo "$lines" | grep -c .)" != "$n" ]; then
            bad "$c" "expected one launcher line from each of $n ranks" "$out"
            return
        fi
        for ((r = 0; r < n; r++)); do
            host='[^ ]+'
            [ -n "$hosts" ] && host=$(echo "$hosts" | cut -d' ' -f$((r + 1)))
            if ! echo "$lines" | grep -Eqx "launch_check: rank $r of $n on $host: launcher $launcher \(init_method $init\)"; then
                bad "$c" "rank $r did not detect launcher $launcher with $init${hosts:+ on $host}" "$out"
                return
            fi
        done
    fi
    ok "$c"
}

programs="launch_check master_worker parameter_server"

# ---- ferryrun -n N: the reference ----
for prog in $programs; do
    n=$(world_of "$prog") out=$tmp/ferryrun.$prog
    timeout -k 5 $JOB_S "$ferryrun" -n "$n" "$(path_of "$prog")" > "$out" 2>&1
    rc=$?
    [ $rc = 0 ] && results "$prog" "$out" > "$tmp/ref.$prog.new" && [ -s "$tmp/ref.$prog.new" ] &&
        mv "$tmp/ref.$prog.new" "$tmp/ref.$prog"
    check "ferryrun -n $n $prog" "$prog" "$out" "$rc" ferryrun 'env://'
done

# ---- torchrun's environment ----
for prog in $programs; do
    n=$(world_of "$prog") out=$tmp/torchrun.$prog
    torchrun_like "$out" "$n" "" $JOB_S "$(path_of "$prog")"
    check "torchrun env (no FERRY_AUTH_TOKEN) x$n $prog" "$prog" "$out" $? torchrun 'env://'
done
out=$tmp/torchrun_token.launch_check
torchrun_like "$out" 3 "token-$$-$RANDOM" $JOB_S "$lc"
check "torchrun env with FERRY_AUTH_TOKEN x3 launch_check" launch_check "$out" $? torchrun 'env://'

# ---- torchrun's default (static) rendezvous: its agent's own store holds MASTER_PORT ----
c="torchrun env, agent store on MASTER_PORT x3 launch_check"
if command -v perl >/dev/null; then
    port=$(free_port)
    perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1",
        LocalPort => $ARGV[0], Listen => 5, ReuseAddr => 1) or die "cannot listen: $!"; sleep 120' \
        "$port" &
    holder=$!
    out=$tmp/torchrun_agent.launch_check
    TORCHRUN_PORT=$port TORCHRUN_EXTRA="TORCHELASTIC_USE_AGENT_STORE=True" \
        torchrun_like "$out" 3 "" $JOB_S "$lc"
    check "$c" launch_check "$out" $? torchrun 'env://'
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null
else
    skip "$c" "perl is not installed (it holds the port as torchrun's agent would)"
fi

# ---- an incomplete launcher environment fails and names what is missing ----
negative() { # case, variable the error must name, environment assignments...
    local c=$1 var=$2 out=$tmp/negative.$RANDOM rc
    shift 2
    env -i PATH="$PATH" HOME="$HOME" "$@" timeout -k 5 20 "$lc" > "$out" 2>&1
    rc=$?
    if [ $rc = 0 ] || [ $rc = 124 ] || [ $rc = 137 ]; then
        bad "$c" "expected a failure naming $var, got exit status $rc" "$out"
    elif ! grep -q "init_rpc failed.*$var" "$out"; then
        bad "$c" "the init_rpc error does not name $var" "$out"
    else
        ok "$c"
    fi
}
port=$(free_port)
negative "incomplete env: RANK without WORLD_SIZE" WORLD_SIZE \
    RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" TORCHELASTIC_RUN_ID=x
negative "incomplete env: RANK and WORLD_SIZE without MASTER_ADDR" MASTER_ADDR \
    RANK=0 WORLD_SIZE=1 MASTER_PORT="$port" TORCHELASTIC_RUN_ID=x

# An example started as a job of the wrong size refuses it and says so.
out=$tmp/negative.size
timeout -k 5 $JOB_S "$ferryrun" -n 3 "$mw" > "$out" 2>&1
rc=$?
c="ferryrun -n 3 master_worker (a 2-rank example)"
if [ $rc = 0 ] || [ $rc = 124 ] || [ $rc = 137 ]; then
    bad "$c" "expected a refusal, got exit status $rc" "$out"
elif ! grep -q "runs as exactly 2 ranks" "$out"; then
    bad "$c" "the refusal does not say the example's size" "$out"
else
    ok "$c"
fi

# ---- PMIx: is it built in? ----
# A build with PMIx support links libpmix; without it mpirun's ranks cannot meet (Open MPI gives
# no store address), and srun --mpi=pmix falls back to Slurm's variables (env://).
has_pmix=0
ldd "$lc" 2>/dev/null | grep -q 'libpmix' && has_pmix=1
pmix_init=env://
[ $has_pmix = 1 ] && pmix_init=pmix://

# ---- mpirun -np N ----
if ! command -v mpirun >/dev/null; then
    for prog in $programs; do skip "mpirun $prog" "mpirun not found"; done
elif [ $has_pmix = 0 ]; then
    for prog in $programs; do skip "mpirun $prog" "this ferry build has no PMIx support"; done
else
    for prog in $programs; do
        n=$(world_of "$prog") out=$tmp/mpirun.$prog
        timeout -k 5 $JOB_S mpirun --allow-run-as-root --oversubscribe -np "$n" \
            "$(path_of "$prog")" > "$out" 2>&1
        check "mpirun -np $n $prog" "$prog" "$out" $? openmpi 'pmix://'
    done
fi

# ---- Slurm: srun, srun --mpi=pmix, sbatch ----
slurm_skip=""
[ "$(id -u)" = 0 ] || slurm_skip="a test Slurm cluster needs root"
for tool in srun sbatch sinfo slurmctld slurmd munged; do
    [ -z "$slurm_skip" ] && ! command -v $tool >/dev/null && slurm_skip="$tool not found"
done
if [ -z "$slurm_skip" ]; then
    slurm_dir=$tmp/slurm
    if conf=$(bash "$here/slurm_cluster.sh" start "$slurm_dir" 2> "$tmp/slurm_start.log"); then
        export SLURM_CONF=$conf
    else
        bad "starting a one-node Slurm cluster" "slurm_cluster.sh start failed" "$tmp/slurm_start.log"
        slurm_skip="the test Slurm cluster did not start"
    fi
fi
srun_job() { # out n mpi program
    timeout -k 5 $JOB_S srun -O -K1 -n "$2" --mpi="$3" "$4" > "$1" 2>&1
}
for mpi in none pmix; do
    label="srun"
    [ $mpi = pmix ] && label="srun --mpi=pmix"
    reason=$slurm_skip
    if [ -z "$reason" ] && [ $mpi = pmix ] && ! srun --mpi=list 2>&1 | grep -qw pmix; then
        reason="this Slurm has no pmix plugin"
    fi
    init=env://
    [ $mpi = pmix ] && init=$pmix_init
    for prog in $programs; do
        n=$(world_of "$prog")
        if [ -n "$reason" ]; then
            skip "$label -n $n $prog" "$reason"
            continue
        fi
        out=$tmp/srun_$mpi.$prog
        srun_job "$out" "$n" $mpi "$(path_of "$prog")"
        check "$label -n $n $prog" "$prog" "$out" $? slurm "$init"
    done
done
if [ -n "$slurm_skip" ]; then
    skip "sbatch -W examples/slurm/parameter_server.sbatch" "$slurm_skip"
else
    out=$tmp/sbatch.parameter_server
    (cd "$root" && FERRY_EXAMPLE="$ps" timeout -k 5 60 sbatch -W -o "$out" -e "$out" \
        examples/slurm/parameter_server.sbatch > "$tmp/sbatch.log" 2>&1)
    rc=$?
    [ -f "$out" ] || : > "$out"
    cat "$tmp/sbatch.log" >> "$out"
    check "sbatch -W examples/slurm/parameter_server.sbatch" parameter_server "$out" $rc slurm env://
fi

# ---- ferryrun --nnodes 2 on two "hosts" (network namespaces), node 0 -n 2, node 1 -n 1 ----
c="ferryrun --nnodes 2 (2 + 1 ranks on two hosts) launch_check"
netns_skip=""
[ "$(id -u)" = 0 ] || netns_skip="needs root"
[ -z "$netns_skip" ] && { command -v ip >/dev/null && command -v unshare >/dev/null ||
    netns_skip="needs iproute2 and unshare"; }
[ -z "$netns_skip" ] && { "$ferryrun" --help 2>&1 | grep -q -- '--rdzv-endpoint' ||
    netns_skip="this ferryrun has no --rdzv-endpoint"; }
[ -z "$netns_skip" ] && { unshare --uts true 2>/dev/null || netns_skip="no UTS namespaces here"; }
if [ -z "$netns_skip" ]; then
    ns_a=ferry_launch_a_$$ ns_b=ferry_launch_b_$$
    addr_a=10.78.$(( $$ % 200 )).1 addr_b=10.78.$(( $$ % 200 )).2
    if ! ip netns add "$ns_a" 2>/dev/null; then
        ns_a=""
        netns_skip="cannot create network namespaces here"
    elif ! { ip netns add "$ns_b" &&
        ip link add "la$$" netns "$ns_a" type veth peer name "lb$$" netns "$ns_b" &&
        ip -n "$ns_a" addr add "$addr_a/24" dev "la$$" && ip -n "$ns_a" link set "la$$" up &&
        ip -n "$ns_a" link set lo up &&
        ip -n "$ns_b" addr add "$addr_b/24" dev "lb$$" && ip -n "$ns_b" link set "lb$$" up &&
        ip -n "$ns_b" link set lo up; }; then
        bad "$c" "could not set up the two namespaces"
        netns_skip=failed
    fi
fi
if [ "$netns_skip" = failed ]; then
    :
elif [ -n "$netns_skip" ]; then
    skip "$c" "$netns_skip"
else
    port=$(free_port)
    node() { # namespace host node-rank nproc out
        ip netns exec "$1" unshare --uts sh -c "hostname $2 && exec timeout -k 5 $JOB_S \
            '$ferryrun' --nnodes 2 --node-rank $3 --rdzv-endpoint $addr_a:$port -n $4 '$lc'" \
            > "$5" 2>&1
    }
    node "$ns_a" ferry-node-a 0 2 "$tmp/nodes.a" &
    pid_a=$!
    node "$ns_b" ferry-node-b 1 1 "$tmp/nodes.b"
    rc_b=$?
    wait $pid_a
    rc_a=$?
    cat "$tmp/nodes.a" "$tmp/nodes.b" > "$tmp/nodes"
    rc=0
    [ $rc_a = 0 ] && [ $rc_b = 0 ] || rc="$rc_a (node 0), $rc_b (node 1)"
    check "$c" launch_check "$tmp/nodes" "$rc" ferryrun 'env://' "ferry-node-a ferry-node-a ferry-node-b"
fi

# ---- srun and mpirun across two hosts (namespaces with Slurm nodes of their own) ----
two_hosts_out=$(bash "$here/two_hosts.sh" "$build" 2>&1)
two_hosts_rc=$?
echo "$two_hosts_out"
n_ok=$((n_ok + $(echo "$two_hosts_out" | grep -cE ': ok( |$)')))
n_skipped=$((n_skipped + $(echo "$two_hosts_out" | grep -c ': skipped (')))
[ $two_hosts_rc = 0 ] || failed=1

echo "launchers: $n_ok passed, $n_skipped skipped$([ $failed = 1 ] && echo ", some FAILED")"
exit $failed
