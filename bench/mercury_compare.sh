#!/bin/bash
# Ferry's per-call cost beside Mercury's on the same libfabric provider, with fi_pingpong measured
# in the same run as the anchor. For tcp (tcp;ofi_rxm, Mercury's ofi+tcp) and shm (Mercury's
# ofi+shm) it runs, RUNS times each and interleaved: fi_pingpong's 64-byte ping-pong,
# `ferry_bench calls` (tiny rpc_sync round trip, rpc_async rate), and Mercury's hg_rate against
# hg_perf_server with its empty (size 0) RPC, once with one call in flight (the round trip) and
# once with as many in flight as ferry's async test keeps. It prints the medians: each round trip
# beside fi_pingpong's, and the two async rates with the ratio ferry/Mercury.
# Without MERCURY_PREFIX it says how to get a Mercury build and exits 0.
#
# usage: bench/mercury_compare.sh [BUILD_DIR]   (default: build)
# env:   MERCURY_PREFIX      a Mercury install prefix or build folder: hg_rate and hg_perf_server
#                            in its bin/ or in it (docs/performance.md builds one)
#        RUNS (default 3)    runs of every measurement; the table shows medians
#        MERCURY_OPTS_EXTRA  more options for both Mercury programs (e.g. -b to busy-poll)
set -uo pipefail
build=${1:-build}
runs=${RUNS:-3}

if [ -z "${MERCURY_PREFIX:-}" ]; then
    echo "mercury: skipped (set MERCURY_PREFIX to a Mercury build; docs/performance.md says how to build one)"
    exit 0
fi
hg_bin=""
for d in "$MERCURY_PREFIX/bin" "$MERCURY_PREFIX"; do
    if [ -x "$d/hg_rate" ] && [ -x "$d/hg_perf_server" ]; then
        hg_bin=$d
        break
    fi
done
if [ -z "$hg_bin" ]; then
    echo "mercury_compare: no hg_rate and hg_perf_server in $MERCURY_PREFIX/bin or $MERCURY_PREFIX" \
        "(configure Mercury with -DBUILD_TESTING=ON -DBUILD_TESTING_PERF=ON)" >&2
    exit 1
fi
if [ -x "$hg_bin/hg_info" ] && ! "$hg_bin/hg_info" 2>/dev/null | grep -q '^ofi '; then
    echo "mercury_compare: $hg_bin/hg_info lists no ofi protocol (configure Mercury with -DNA_USE_OFI=ON)" >&2
    exit 1
fi
# A build folder keeps its libraries beside the programs, an install prefix in lib/.
export LD_LIBRARY_PATH="$MERCURY_PREFIX/lib:$hg_bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ferry=$build/bench/ferry_bench
[ -x "$ferry" ] || { echo "mercury_compare: $ferry not built (make BUILD=$build $ferry)" >&2; exit 1; }
command -v fi_pingpong >/dev/null ||
    { echo "mercury_compare: fi_pingpong not found (apt-get install -y libfabric-bin)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-mercury.XXXXXX") || exit 1
server_pid=""
# shellcheck disable=SC2317 # run by the trap
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

# shellcheck source=bench_util.sh
. "$(dirname "$0")/bench_util.sh" # free_port

# Waits until something listens on the port (at most 10 s).
wait_listen() {
    local i
    if ! command -v ss >/dev/null; then sleep 0.5; return; fi
    for ((i = 0; i < 100; i++)); do
        [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ] && return
        sleep 0.1
    done
}

# Reaps the background server, ending it (by its pid) if it outlives its client by 10 s.
reap_server() {
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    server_pid=""
}

# fi_pingpong's round trip in us for 64 bytes: it prints usec/xfer for one direction.
fi_rt() {
    local prov=$1 port out
    port=$(free_port)
    timeout 60 fi_pingpong -p "$prov" -e rdm -I 10000 -S 64 -B "$port" >/dev/null 2>&1 &
    server_pid=$!
    wait_listen "$port"
    out=$(timeout 60 fi_pingpong -p "$prov" -e rdm -I 10000 -S 64 -P "$port" 127.0.0.1 2>/dev/null)
    reap_server
    awk '$1 == "64" && NF >= 7 {printf "%.3f\n", 2 * $7}' <<<"$out"
}

# One hg_rate run against a fresh hg_perf_server; prints "rate_per_s time_us" of the empty RPC.
hg_run() {
    local prot=$1 handles=$2 loops=$3 cfg=$dir/port.cfg out i
    rm -f "$cfg"
    # shellcheck disable=SC2086
    timeout 120 "$hg_bin/hg_perf_server" -c ofi -p "$prot" -H 127.0.0.1 -f "$cfg" \
        ${MERCURY_OPTS_EXTRA:-} >"$dir/server.log" 2>&1 &
    server_pid=$!
    for ((i = 0; i < 100; i++)); do # the server writes its address there once it listens
        [ -s "$cfg" ] && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$dir/server.log" >&2; break; }
        sleep 0.1
    done
    # shellcheck disable=SC2086
    out=$(timeout 120 "$hg_bin/hg_rate" -c ofi -p "$prot" -H 127.0.0.1 -f "$cfg" -x "$handles" \
        -l "$loops" -y 0 -z 1 ${MERCURY_OPTS_EXTRA:-} 2>"$dir/client.log")
    reap_server
    awk '$1 == "0" && NF == 3 {print $2, $3}' <<<"$out"
}

median() { # numbers on stdin -> their median (empty input -> nothing)
    sort -g | awk '{v[NR] = $1} END {if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}

# Appends a figure to its file, or reports what failed (with the log that says why).
record() { # file value what [log]
    if [ -n "$2" ]; then
        echo "$2" >>"$1"
    else
        echo "mercury_compare: $3 failed" >&2
        [ -n "${4:-}" ] && cat "$4" >&2
    fi
}

nets=(tcp shm)
declare -A fabric=([tcp]="tcp;ofi_rxm" [shm]=shm) hg_prot=([tcp]=tcp [shm]=shm)
window=""
status=0
for ((r = 0; r < runs; r++)); do
    for net in "${nets[@]}"; do
        record "$dir/fi_rt.$net" "$(fi_rt "${fabric[$net]}")" "fi_pingpong on ${fabric[$net]}"
        out=$("$ferry" calls "$net" 2>"$dir/ferry.log")
        record "$dir/ferry_rt.$net" "$(awk '$1 == "rt_us" {print $2}' <<<"$out")" \
            "ferry_bench calls $net" "$dir/ferry.log"
        record "$dir/ferry_user.$net" "$(awk '$1 == "user_rt_us" {print $2}' <<<"$out")" \
            "ferry_bench calls $net (user function)"
        record "$dir/ferry_rate.$net" "$(awk '$1 == "async_per_s" {print $2}' <<<"$out")" \
            "ferry_bench calls $net (async)"
        if [ -z "$window" ]; then # Mercury's rate run keeps as many calls in flight as ferry's
            window=$(awk '$1 == "async_window" {print $2}' <<<"$out")
            calls=$(awk '$1 == "async_calls" {print $2}' <<<"$out")
        fi
        [ -n "$window" ] || continue
        v=$(hg_run "${hg_prot[$net]}" 1 10000)
        record "$dir/hg_rt.$net" "${v#* }" "hg_rate on ofi+${hg_prot[$net]}" "$dir/client.log"
        v=$(hg_run "${hg_prot[$net]}" "$window" $(((calls + window - 1) / window)))
        record "$dir/hg_rate.$net" "${v%% *}" "hg_rate -x $window on ofi+${hg_prot[$net]}" \
            "$dir/client.log"
    done
done

med() { [ -s "$1" ] && median <"$1"; }
ratio() { # a b -> a/b as "1.23x", or "-" when either is missing
    awk -v a="$1" -v b="$2" 'BEGIN {if (a != "" && b != "" && b > 0) printf "%.2fx", a / b; else printf "-"}'
}
num() { # value format -> formatted, or "failed"
    # shellcheck disable=SC2059 # the format is the caller's
    if [ -n "$1" ]; then printf "$2" "$1"; else printf failed; fi
}

printf 'ferry beside Mercury on one libfabric provider, two processes on 127.0.0.1; fi_pingpong\n'
printf 'measured in the same run; medians of %d runs. Round trips in us of an empty call (fi_pingpong:\n' "$runs"
printf '64 bytes), with the ratio to fi_pingpong; async calls/s with %s calls in flight. "ferry rt" is\n' "${window:-?}"
printf 'a function registered non-blocking (run where it is read), "ferry user" an ordinary one.\n'
printf '%-4s %-12s %11s %18s %18s %18s %12s %12s %13s\n' net provider fi_pingpong "ferry rt" \
    "ferry user" "mercury rt" "ferry /s" "mercury /s" ferry/mercury
for net in "${nets[@]}"; do
    fi=$(med "$dir/fi_rt.$net")
    frt=$(med "$dir/ferry_rt.$net")
    fu=$(med "$dir/ferry_user.$net")
    hrt=$(med "$dir/hg_rt.$net")
    fr=$(med "$dir/ferry_rate.$net")
    hr=$(med "$dir/hg_rate.$net")
    for v in "$fi" "$frt" "$fu" "$hrt" "$fr" "$hr"; do [ -n "$v" ] || status=1; done
    printf '%-4s %-12s %11s %18s %18s %18s %12s %12s %13s\n' "$net" "${fabric[$net]}" \
        "$(num "$fi" '%.1f us')" \
        "$(num "$frt" '%.1f us') ($(ratio "$frt" "$fi"))" \
        "$(num "$fu" '%.1f us') ($(ratio "$fu" "$fi"))" \
        "$(num "$hrt" '%.1f us') ($(ratio "$hrt" "$fi"))" \
        "$(num "$fr" '%.0f')" "$(num "$hr" '%.0f')" "$(ratio "$fr" "$hr")"
done
exit $status
