#!/bin/bash
# Instructions per tiny rpc_sync round trip, for the caller and the callee separately: runs
# `ferry_bench tiny N` under callgrind for two call counts and prints
# (Ir(N2) - Ir(N1)) / (N2 - N1) per process, so start-up, warm-up and shutdown cancel out. Also
# prints the same difference for the call work alone (see work_ir) and for the wire codec alone
# (encode and decode, inclusive), which do not depend on how long the progress threads spin and
# so move only when the code does.
# The totals do depend on it (a waiting thread polls the fabric, valgrind runs one thread at a
# time), so each count runs REPS times and the smallest total of each process is used.
#
# usage: bench/callgrind_tiny.sh [BUILD_DIR] [TRANSPORT]   (defaults: build, shm)
# env:   N1 (default 2000), N2 (default 4000), REPS (default 3), KEEP=1 keeps the profiles,
#        VALGRIND_OPTS_EXTRA (more valgrind options)
set -euo pipefail
build=${1:-build}
transport=${2:-shm}
n1=${N1:-2000}
n2=${N2:-4000}
bin=$build/bench/ferry_bench
[ -x "$bin" ] || { echo "callgrind_tiny: $bin not built (make $bin)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "callgrind_tiny: valgrind not found (apt-get install -y valgrind)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-callgrind.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$dir"' EXIT

# Total Ir of one callgrind file ("summary:" line), and the inclusive Ir of the wire codec's
# entry points (callgrind_annotate --inclusive lists each function's cost with its callees).
total_ir() { awk '/^summary:/ {print $2}' "$1"; }
# The work of the call itself, without the polling of a waiting thread: the inclusive Ir of
# starting calls (ferry_rpc_async), of everything done for a whole incoming message
# (ferry__agent_on_message: decode, hooks, dispatch, and on the callee running a non-blocking
# function and sending its reply) and of pool jobs (job_task). None of these nests in another.
work_ir() {
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$1" 2>/dev/null |
        awk '/:(ferry_rpc_async|ferry__agent_on_message|job_task) \[/ {gsub(",", "", $1); s += $1} END {print s + 0}'
}
wire_ir() {
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$1" 2>/dev/null |
        awk '/:ferry__wire_(encode|decode) \[/ {gsub(",", "", $1); s += $1} END {print s + 0}'
}

run() { # n rep -> $dir/<n>.<rep>.client / .server
    local n=$1 rep=$2 pid
    # shellcheck disable=SC2086
    valgrind --tool=callgrind ${VALGRIND_OPTS_EXTRA:-} --callgrind-out-file="$dir/cg.$n.%p" \
        "$bin" tiny "$n" "$transport" >"$dir/pids" 2>"$dir/log" || { cat "$dir/log" >&2; exit 1; }
    for role in client server; do
        pid=$(awk -v r=$role '$1 == r {print $2}' "$dir/pids")
        [ -s "$dir/cg.$n.$pid" ] || { echo "callgrind_tiny: no profile for the $role" >&2; exit 1; }
        mv "$dir/cg.$n.$pid" "$dir/$n.$rep.$role"
    done
    rm -f "$dir"/cg.$n.* # the launcher's own profile
}

# The run of count n with the smallest total for `role`.
best() {
    local n=$1 role=$2 f b="" bir=""
    for f in "$dir"/$n.*.$role; do
        local ir
        ir=$(total_ir "$f")
        if [ -z "$bir" ] || [ "$ir" -lt "$bir" ]; then bir=$ir; b=$f; fi
    done
    echo "$b"
}

reps=${REPS:-3}
for ((r = 0; r < reps; r++)); do
    run "$n1" $r
    run "$n2" $r
done
d=$((n2 - n1))
printf 'tiny rpc_sync on %s, instructions per call (Ir(%d) - Ir(%d)) / %d:\n' "$transport" "$n2" "$n1" "$d"
for role in client server; do
    fa=$(best "$n1" $role)
    fb=$(best "$n2" $role)
    a=$(total_ir "$fa")
    b=$(total_ir "$fb")
    wa=$(wire_ir "$fa")
    wb=$(wire_ir "$fb")
    ka=$(work_ir "$fa")
    kb=$(work_ir "$fb")
    printf '  %-6s %8d total  %6d call work  %6d in ferry__wire_encode/decode\n' "$role" \
        $(((b - a) / d)) $(((kb - ka) / d)) $(((wb - wa) / d))
done
[ "${KEEP:-0}" = 1 ] && echo "profiles kept in $dir"
exit 0
