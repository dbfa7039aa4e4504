#!/usr/bin/env bash
# Several hosts on one machine: two network namespaces joined by a veth pair, each with its own
# host name, run the master/worker example and the parameter-server example as if on two
# machines (tcp chosen automatically between "hosts", the interface picked from MASTER_ADDR).
# Needs root and iproute2; prints "netns: skipped (...)" and succeeds when they are missing.
set -u
build=${1:-build}
ns_a=ferry_test_a_$$ ns_b=ferry_test_b_$$
addr_a=10.77.$(( $$ % 200 )).1 addr_b=10.77.$(( $$ % 200 )).2

skip() { echo "netns: skipped ($1)"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root"
command -v ip >/dev/null && command -v unshare >/dev/null || skip "needs iproute2 and unshare"
unshare --uts true 2>/dev/null || skip "cannot create UTS namespaces here"

cleanup() {
    ip netns del "$ns_a" 2>/dev/null
    ip netns del "$ns_b" 2>/dev/null
}
trap cleanup EXIT
ip netns add "$ns_a" 2>/dev/null || skip "cannot create network namespaces here"
ip netns add "$ns_b" || exit 1
ip link add "va$$" netns "$ns_a" type veth peer name "vb$$" netns "$ns_b" || exit 1
ip -n "$ns_a" addr add "$addr_a/24" dev "va$$" && ip -n "$ns_a" link set "va$$" up &&
    ip -n "$ns_a" link set lo up || exit 1
ip -n "$ns_b" addr add "$addr_b/24" dev "vb$$" && ip -n "$ns_b" link set "vb$$" up &&
    ip -n "$ns_b" link set lo up || exit 1

port=$(( 20000 + $$ % 20000 ))
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')

# run_pair PROGRAM [ENV...]: rank 0 on host A, rank 1 on host B, both with the extra ENV
# assignments; both must succeed. Prints both outputs.
run_pair() {
    local prog=$1 out_a out_b rc_a rc_b
    shift
    local extra="$*"
    out_a=$(mktemp) out_b=$(mktemp)
    ip netns exec "$ns_a" unshare --uts sh -c "hostname ferry-host-a; \
        MASTER_ADDR=$addr_a MASTER_PORT=$port RANK=0 WORLD_SIZE=2 FERRY_AUTH_TOKEN=$token \
        $extra exec timeout 90 $prog" >"$out_a" 2>&1 &
    local pid_a=$!
    ip netns exec "$ns_b" unshare --uts sh -c "hostname ferry-host-b; \
        MASTER_ADDR=$addr_a MASTER_PORT=$port RANK=1 WORLD_SIZE=2 FERRY_AUTH_TOKEN=$token \
        FERRY_LOG=debug $extra exec timeout 90 $prog" >"$out_b" 2>&1
    rc_b=$?
    wait "$pid_a"
    rc_a=$?
    if [ $rc_a != 0 ] || [ $rc_b != 0 ]; then
        echo "netns: $prog failed (host A: $rc_a, host B: $rc_b)"
        sed 's/^/  A: /' "$out_a"
        sed 's/^/  B: /' "$out_b"
        rm -f "$out_a" "$out_b"
        return 1
    fi
    cat "$out_a" "$out_b"
    rm -f "$out_a" "$out_b"
    port=$((port + 1))
}

out=$(run_pair "$build/examples/master_worker") || { echo "$out"; exit 1; }
echo "$out" | grep -q 'torch.add(torch.ones(2), 3) = tensor(\[4., 4.\])' &&
    echo "$out" | grep -q 'min(1, 2) = 1' || { echo "netns: unexpected output:"; echo "$out"; exit 1; }
echo "$out" | grep -q "worker 'master' (rank 0) is reached over tcp" ||
    { echo "netns: the hosts did not talk over tcp:"; echo "$out" | grep "reached over"; exit 1; }
echo "netns: master/worker across two hosts over tcp: ok"

# A worker on the other host dies mid-call: the heartbeat must notice it.
out=$(run_pair "$build/tests/netns_peer_death") || { echo "$out"; exit 1; }
echo "$out" | grep "^peer_death: the call failed" || { echo "$out"; exit 1; }
echo "netns: a dead worker on another host is detected: ok"

# A worker on the other host dies during its part of a distributed backward pass: the pass
# fails on the initiator within the heartbeat's time, naming it.
out=$(run_pair "$build/tests/netns_dist_peer_death") || { echo "$out"; exit 1; }
echo "$out" | grep "^dist_peer_death: backward failed" || { echo "$out"; exit 1; }
echo "netns: a worker on another host dying mid-backward fails the pass: ok"

# A worker on the other host is stopped for 3 s (SIGSTOP): with a 0.5 s x 3 heartbeat it is
# taken for unreachable while stopped, and comes back after SIGCONT.
out=$(run_pair "$build/tests/netns_peer_stop" FERRY_HEARTBEAT_PERIOD_S=0.5 \
    FERRY_HEARTBEAT_MISSES=3) || { echo "$out"; exit 1; }
echo "$out" | grep "^peer_stop:" || { echo "$out"; exit 1; }
echo "netns: a stopped worker on another host comes back after SIGCONT: ok"
# With the default heartbeat (1 s x 3) the same 3 s stop is only slowness: the call waits.
out=$(run_pair "$build/tests/netns_peer_stop") || { echo "$out"; exit 1; }
echo "$out" | grep "^peer_stop:" || { echo "$out"; exit 1; }
echo "netns: a 3 s stop under the default heartbeat: ok"

# ferryrun on each host: node 1 starts first and waits at node 0's endpoint; nobody sets a
# token, both derive it from the per-user secret in the home directory the hosts share.
home=$(mktemp -d) out_a=$(mktemp) out_b=$(mktemp)
ferryrun_node() { # namespace host-name node-rank [ENV...]
    local ns=$1 name=$2 rank=$3
    shift 3
    ip netns exec "$ns" unshare --uts sh -c "hostname $name; unset FERRY_AUTH_TOKEN; \
        HOME=$home $* exec timeout 90 $build/bin/ferryrun --nnodes 2 --node-rank $rank \
        --rdzv-endpoint $addr_a:$port --rdzv-timeout 60 -n 1 $build/examples/master_worker"
}
ferryrun_node "$ns_b" ferry-host-b 1 FERRY_LOG=debug >"$out_b" 2>&1 &
pid_b=$!
ferryrun_node "$ns_a" ferry-host-a 0 >"$out_a" 2>&1
rc_a=$?
wait "$pid_b"
rc_b=$?
if [ $rc_a != 0 ] || [ $rc_b != 0 ] ||
    ! grep -q '^\[1\] min(1, 2) = 1' "$out_b" ||
    ! grep -q "worker 'master' (rank 0) is reached over tcp" "$out_b"; then
    echo "netns: ferryrun across two hosts failed (host A: $rc_a, host B: $rc_b)"
    sed 's/^/  A: /' "$out_a"
    sed 's/^/  B: /' "$out_b"
    rm -rf "$home" "$out_a" "$out_b"
    exit 1
fi
rm -rf "$home" "$out_a" "$out_b"
port=$((port + 1))
echo "netns: ferryrun on two hosts, meeting at node 0's endpoint with a derived token: ok"

# A bad link: 20 ms delay and 1% loss each way (tc netem). Where the kernel has no netem, 1%
# of the packets each namespace receives are dropped by nftables instead (no delay then), and
# where neither is there the same calls run over the plain link; the run says which.
drop_1pct() { # namespace
    ip netns exec "$1" nft add table inet ferry_loss &&
        ip netns exec "$1" nft add chain inet ferry_loss in '{ type filter hook input priority 0; }' &&
        ip netns exec "$1" nft add rule inet ferry_loss in numgen random mod 100 '<' 1 drop
}
link="20 ms delay + 1% loss"
if ! ip netns exec "$ns_a" tc qdisc add dev "va$$" root netem delay 20ms loss 1% 2>/dev/null ||
    ! ip netns exec "$ns_b" tc qdisc add dev "vb$$" root netem delay 20ms loss 1% 2>/dev/null; then
    if command -v nft >/dev/null && drop_1pct "$ns_a" 2>/dev/null && drop_1pct "$ns_b" 2>/dev/null; then
        link="1% loss each way (nftables; tc netem is not available here, so no added delay)"
    else
        link="the plain link (neither tc netem nor nftables is available here: the bad link is skipped)"
    fi
fi
out=$(run_pair "$build/tests/netns_netem_echo") || { echo "$out"; exit 1; }
echo "$out" | grep "^netem_echo:" || { echo "$out"; exit 1; }
if echo "$out" | grep -q "is unreachable"; then
    echo "netns: a false death:"; echo "$out" | grep "is unreachable"; exit 1
fi
echo "netns: echo calls over $link, values correct, no false death: ok"
