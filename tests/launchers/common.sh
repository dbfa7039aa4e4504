# Shell helpers shared by tests/launchers/run.sh and bench/launchers.sh (sourced, not run).

# free_port: bench/bench_util.sh's, one rule for every script.
# shellcheck source=../../bench/bench_util.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../bench/bench_util.sh"

# Forgets every launcher variable this shell inherited, so that a run here (itself started by
# srun, mpirun or torchrun, say) is not taken for a rank of that outer job.
forget_launcher_env() {
    local v
    for v in $(compgen -e); do
        case $v in
        SLURM_*|SRUN_*|PMIX_*|PMI_*|OMPI_*|PRTE_*|TORCHELASTIC_*|FERRY_LAUNCHER) unset "$v" ;;
        RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|MASTER_ADDR|MASTER_PORT|FERRY_AUTH_TOKEN) unset "$v" ;;
        GROUP_RANK|GROUP_WORLD_SIZE|ROLE_RANK|ROLE_WORLD_SIZE|ROLE_NAME) unset "$v" ;;
        esac
    done
}

# torchrun_like OUT N TOKEN TIMEOUT_S PROGRAM [ARGS...]: starts N ranks of PROGRAM on this host
# (TORCHRUN_PORT: the MASTER_PORT to use; TORCHRUN_EXTRA: more VAR=value words for every rank)
# with the environment torchrun gives its workers (one node, MASTER_ADDR 127.0.0.1, a free
# MASTER_PORT) and nothing else but PATH and HOME; FERRY_AUTH_TOKEN too when TOKEN is not
# empty. Each rank's output goes to OUT, its lines prefixed "[rank] " as ferryrun does.
# Returns 0 when every rank exited with 0 within TIMEOUT_S.
torchrun_like() {
    local out=$1 n=$2 token=$3 limit=$4
    shift 4
    local port r rc=0 pids=() run_id
    port=${TORCHRUN_PORT:-$(free_port)} || return 1
    run_id=job$$-$RANDOM
    for ((r = 0; r < n; r++)); do
        env -i PATH="$PATH" HOME="$HOME" ${TMPDIR:+TMPDIR="$TMPDIR"} \
            RANK=$r LOCAL_RANK=$r WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n \
            GROUP_RANK=0 GROUP_WORLD_SIZE=1 ROLE_RANK=$r ROLE_WORLD_SIZE=$n ROLE_NAME=default \
            MASTER_ADDR=127.0.0.1 MASTER_PORT=$port TORCHELASTIC_RUN_ID=$run_id \
            TORCHELASTIC_RESTART_COUNT=0 TORCHELASTIC_MAX_RESTARTS=0 OMP_NUM_THREADS=1 \
            ${token:+FERRY_AUTH_TOKEN="$token"} ${TORCHRUN_EXTRA:-} \
            timeout -k 5 "$limit" "$@" > "$out.$r" 2>&1 &
        pids+=($!)
    done
    for ((r = 0; r < n; r++)); do
        wait "${pids[$r]}" || rc=1
    done
    : > "$out"
    for ((r = 0; r < n; r++)); do
        sed "s/^/[$r] /" "$out.$r" >> "$out"
        rm -f "$out.$r"
    done
    return $rc
}

# The slurm.conf lines every test cluster here shares: root daemons, munge, no cgroups, no
# accounting, nodes that take more tasks than cores (tests/launchers/slurm_cluster.sh and
# two_hosts.sh add their hosts, ports and directories).
slurm_conf_common() {
    cat <<EOF
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
EOF
}
