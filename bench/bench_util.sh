# Shell helpers for the benchmark and launcher scripts (sourced, not run), beside bench_util.h,
# which holds the same port rule for the C benchmarks and examples.

# free_port [PORT...]: a TCP port on this host that nothing uses, below the kernel's ephemeral
# range (so no outgoing connection takes it meanwhile) and not among the arguments (ports
# already handed out). Fails after 200 tries.
free_port() {
    local low=32768 p tries
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
    [ "$low" -gt 21000 ] 2>/dev/null || low=32768
    for ((tries = 0; tries < 200; tries++)); do
        p=$((20000 + RANDOM % (low - 20000)))
        case " $* " in *" $p "*) continue ;; esac
        ss -Htan 2>/dev/null | awk '{print $4}' | grep -q ":$p\$" && continue
        echo "$p"
        return 0
    done
    return 1
}
