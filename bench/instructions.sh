#!/bin/bash
# make bench-instructions: instructions per tiny round trip, ferry beside fi_pingpong, under
# callgrind, for shm and tcp. Ferry's figures come from bench/callgrind_tiny.sh; fi_pingpong's
# server and client run under callgrind the same way, for two iteration counts, and each
# process's (Ir(N2) - Ir(N1)) / (N2 - N1) is its cost per round trip, start-up, connection and
# shutdown cancelling out. Both sides of both programs poll while they wait, and under valgrind
# how long they wait depends on scheduling, so each count runs REPS times and the smallest total
# of each process is used (as callgrind_tiny.sh does). fi_pingpong's iterations are cheap, so it
# runs a wider spread of counts, which keeps its polling noise small per round trip.
#
# usage: bench/instructions.sh [BUILD_DIR]   (default: build)
# env:   N1, N2 (default 2000, 4000): ferry's call counts, given to callgrind_tiny.sh
#        FI_N1, FI_N2 (default 2000, 12000): fi_pingpong's iteration counts
#        REPS (default 3): runs of each count, for both
set -uo pipefail
build=${1:-build}
n1=${N1:-2000}
n2=${N2:-4000}
fi_n1=${FI_N1:-2000}
fi_n2=${FI_N2:-12000}
reps=${REPS:-3}
here=$(dirname "$0")

if ! command -v valgrind >/dev/null; then
    # As `make deps` does: root with apt installs what is missing, anyone else is told how.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bench-instructions: installing valgrind"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null 2>&1 ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; } >/dev/null 2>&1
    fi
    if ! command -v valgrind >/dev/null; then
        echo "bench-instructions: skipped, valgrind not found (install it: apt-get install -y valgrind)"
        exit 0
    fi
fi
command -v fi_pingpong >/dev/null ||
    { echo "bench-instructions: fi_pingpong not found (apt-get install -y libfabric-bin)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-instructions.XXXXXX") || exit 1
server_pid=""
# shellcheck disable=SC2317 # run by the trap
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

# shellcheck source=bench_util.sh
. "$(dirname "$0")/bench_util.sh" # free_port

total_ir() { awk '/^summary:/ {print $2}' "$1"; }

# One fi_pingpong pair under callgrind: $dir/fi.<net>.<n>.<rep>.server / .client
fi_run() {
    local net=$1 prov=$2 n=$3 rep=$4 port i
    port=$(free_port)
    timeout 120 valgrind --tool=callgrind --callgrind-out-file="$dir/fi.$net.$n.$rep.server" \
        fi_pingpong -p "$prov" -e rdm -I "$n" -S 64 -B "$port" >/dev/null 2>&1 &
    server_pid=$!
    # The server is ready once its control socket listens; valgrind takes a while to start it.
    for ((i = 0; i < 200; i++)); do
        if command -v ss >/dev/null; then
            [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] && break
        elif ((i >= 20)); then
            break
        fi
        sleep 0.1
    done
    timeout 120 valgrind --tool=callgrind --callgrind-out-file="$dir/fi.$net.$n.$rep.client" \
        fi_pingpong -p "$prov" -e rdm -I "$n" -S 64 -P "$port" 127.0.0.1 \
        >"$dir/fi.log" 2>&1 || { echo "fi_pingpong client on $prov failed:" >&2; tail -5 "$dir/fi.log" >&2; }
    wait "$server_pid"
    server_pid=""
}

# fi_pingpong's instructions per round trip for one process: smallest totals of each count.
fi_per_rt() { # net role
    local n a b f ir
    for n in "$fi_n1" "$fi_n2"; do
        b=""
        for f in "$dir"/fi."$1"."$n".*."$2"; do
            [ -s "$f" ] || continue
            ir=$(total_ir "$f")
            if [ -z "$b" ] || [ "$ir" -lt "$b" ]; then b=$ir; fi
        done
        [ -n "$b" ] || return
        if [ "$n" = "$fi_n1" ]; then a=$b; fi
    done
    echo $(((b - a) / (fi_n2 - fi_n1)))
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a != "" && b != "" && b > 0) printf "%.2fx", a / b; else printf "-"}'; }

nets=(shm tcp)
declare -A fabric=([tcp]="tcp;ofi_rxm" [shm]=shm)
status=0
rows=()
for net in "${nets[@]}"; do
    if ! N1=$n1 N2=$n2 REPS=$reps bash "$here/callgrind_tiny.sh" "$build" "$net" >"$dir/ferry.$net" 2>"$dir/ferry.$net.log"; then
        echo "callgrind_tiny.sh $build $net failed:" >&2
        tail -20 "$dir/ferry.$net.log" >&2
        status=1
    fi
    for ((r = 0; r < reps; r++)); do
        fi_run "$net" "${fabric[$net]}" "$fi_n1" "$r"
        fi_run "$net" "${fabric[$net]}" "$fi_n2" "$r"
    done
    st=0 sw=0 sp=0 # both processes together
    for role in client server; do
        ft=$(awk -v r=$role '$1 == r {print $2}' "$dir/ferry.$net")
        fw=$(awk -v r=$role '$1 == r {print $4}' "$dir/ferry.$net")
        pp=$(fi_per_rt "$net" $role)
        if [ -n "$pp" ] && [ "$pp" -le 0 ]; then # polling noise larger than the iterations' cost
            echo "bench-instructions: fi_pingpong $role on $net came out at $pp; rerun with a larger FI_N2 or REPS" >&2
            pp=""
        fi
        [ -n "$ft" ] && [ -n "$pp" ] || status=1
        rows+=("$net $role ${ft:--} ${fw:--} ${pp:--} $(ratio "$ft" "$pp")")
        st=$((st + ${ft:-0})) sw=$((sw + ${fw:-0})) sp=$((sp + ${pp:-0}))
    done
    rows+=("$net both $st $sw $sp $(ratio "$st" "$sp")")
done

printf 'instructions per tiny round trip under callgrind, (Ir(N2) - Ir(N1)) / (N2 - N1) per process,\n'
printf 'smallest of %d runs; ferry: empty rpc_sync, N %d and %d; fi_pingpong: 64 bytes, N %d and %d.\n' \
    "$reps" "$n1" "$n2" "$fi_n1" "$fi_n2"
printf '%s\n' "\"call work\" leaves out ferry's polling while it waits; both totals include polling."
printf '%-4s %-7s %12s %16s %12s %18s\n' net process "ferry total" "ferry call work" fi_pingpong \
    "ferry/fi_pingpong"
for row in "${rows[@]}"; do
    # shellcheck disable=SC2086 # the row's words are its columns
    printf '%-4s %-7s %12s %16s %12s %18s\n' $row
done
exit $status
