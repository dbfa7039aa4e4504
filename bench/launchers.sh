#!/usr/bin/env bash
# make bench: what starting and ending a job costs under each launcher found here (ferryrun,
# torchrun's environment, mpirun, srun, srun --mpi=pmix), for 3, 16 and 64 ranks on this host:
# rank 0's time in ferry_init_rpc and in a graceful ferry_shutdown (tests/launchers/launch_time),
# and the wall time and CPU time (user + system) of the whole launching command. CPU time counts
# the processes the command waits for, so it is "-" for srun, whose tasks slurmd starts; on a
# machine shared with other work it is the steadier figure. Each figure is the median of 3 runs. The
# Slurm rows run on a one-node cluster this script starts and stops
# (tests/launchers/slurm_cluster.sh, root only); a launcher that is missing gets a row saying so.
#
# usage: bench/launchers.sh [BUILD_DIR]
#   env: BENCH_LAUNCH_RUNS (default 3), BENCH_LAUNCH_RANKS (default "3 16 64")
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
launchers_dir=$here/../tests/launchers
. "$launchers_dir/common.sh"
runs=${BENCH_LAUNCH_RUNS:-3}
rank_counts=${BENCH_LAUNCH_RANKS:-3 16 64}
build=$(cd "$build" 2>/dev/null && pwd) || { echo "bench/launchers: no build '${1:-build}'"; exit 1; }
prog=$build/tests/launch_time ferryrun=$build/bin/ferryrun
for f in "$prog" "$ferryrun"; do
    [ -x "$f" ] || { echo "bench/launchers: $f is not built"; exit 1; }
done
LIMIT_S=60

forget_launcher_env
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry_bench_launch.XXXXXX") || exit 1
chmod 755 "$tmp" # the cluster's munged runs as its own user
export HOME=$tmp/home # the per-user secret the torchrun and Slurm tokens come from
mkdir -p "$HOME"
slurm_dir=""
cleanup() {
    [ -n "$slurm_dir" ] && bash "$launchers_dir/slurm_cluster.sh" stop "$slurm_dir"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# User + system seconds of the waited-for children in the output of `times` (run in this
# shell, not a subshell, which would start from zero) saved in file $1.
child_cpu() { tail -n 1 "$1" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.3f\n", t }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }

# launch KIND N OUT: one run of launch_time with N ranks under launcher KIND, its output in OUT.
launch() {
    local kind=$1 n=$2 out=$3
    case $kind in
    ferryrun) timeout -k 5 $LIMIT_S "$ferryrun" -n "$n" "$prog" > "$out" 2>&1 ;;
    torchrun) torchrun_like "$out" "$n" "" $LIMIT_S "$prog" ;;
    mpirun) timeout -k 5 $LIMIT_S mpirun --allow-run-as-root --oversubscribe -np "$n" "$prog" \
        > "$out" 2>&1 ;;
    srun) timeout -k 5 $LIMIT_S srun -O -K1 --mpi=none -n "$n" "$prog" > "$out" 2>&1 ;;
    srun_pmix) timeout -k 5 $LIMIT_S srun -O -K1 --mpi=pmix -n "$n" "$prog" > "$out" 2>&1 ;;
    esac
}

label_of() {
    case $1 in
    ferryrun) echo "ferryrun -n N" ;; torchrun) echo "torchrun env" ;;
    mpirun) echo "mpirun -np N" ;; srun) echo "srun -n N" ;; srun_pmix) echo "srun --mpi=pmix -n N" ;;
    esac
}

# Why a launcher cannot be measured here, or nothing.
why_not() {
    case $1 in
    mpirun)
        command -v mpirun >/dev/null || { echo "mpirun not found"; return; }
        ldd "$prog" 2>/dev/null | grep -q libpmix || echo "this ferry build has no PMIx support" ;;
    srun | srun_pmix)
        [ -n "$slurm_skip" ] && { echo "$slurm_skip"; return; }
        [ $1 = srun_pmix ] && ! srun --mpi=list 2>&1 | grep -qw pmix && echo "this Slurm has no pmix plugin" ;;
    esac
}

slurm_skip=""
[ "$(id -u)" = 0 ] || slurm_skip="a test Slurm cluster needs root"
for tool in srun slurmctld slurmd munged; do
    [ -z "$slurm_skip" ] && ! command -v $tool >/dev/null && slurm_skip="$tool not found"
done
if [ -z "$slurm_skip" ]; then
    slurm_dir=$tmp/slurm
    if conf=$(bash "$launchers_dir/slurm_cluster.sh" start "$slurm_dir" 2> "$tmp/slurm.log"); then
        export SLURM_CONF=$conf
    else
        slurm_skip="the test Slurm cluster did not start"
        sed 's/^/  /' "$tmp/slurm.log"
    fi
fi

printf '%-22s %6s %10s %12s %10s %8s\n' "launcher" "ranks" "init s" "shutdown s" "wall s" "cpu s"
for kind in ferryrun torchrun mpirun srun srun_pmix; do
    reason=$(why_not $kind)
    for n in $rank_counts; do
        if [ -n "$reason" ]; then
            printf '%-22s %6s %s\n' "$(label_of $kind)" "$n" "skipped ($reason)"
            continue
        fi
        : > "$tmp/init" ; : > "$tmp/shutdown" ; : > "$tmp/wall" ; : > "$tmp/cpu"
        failures=0
        for ((i = 0; i < runs; i++)); do
            out=$tmp/run.$kind.$n.$i
            t0=$(now)
            times > "$tmp/times0"
            if launch $kind "$n" "$out"; then
                t1=$(now)
                times > "$tmp/times1"
                c0=$(child_cpu "$tmp/times0") c1=$(child_cpu "$tmp/times1")
                line=$(sed -E 's/^\[[0-9]+\] //' "$out" | grep "^launch_time: world=$n ")
                if [ -n "$line" ]; then
                    echo "$line" | sed -E 's/.* init_s=([0-9.]+).*/\1/' >> "$tmp/init"
                    echo "$line" | sed -E 's/.* shutdown_s=([0-9.]+).*/\1/' >> "$tmp/shutdown"
                    echo "$t0 $t1" | awk '{ printf "%.3f\n", $2 - $1 }' >> "$tmp/wall"
                    echo "$c0 $c1" | awk '{ printf "%.3f\n", $2 - $1 }' >> "$tmp/cpu"
                    continue
                fi
            fi
            failures=$((failures + 1))
            last_failure=$out
        done
        if [ $failures = 0 ]; then
            cpu=$(median < "$tmp/cpu")
            case $kind in srun | srun_pmix) cpu=- ;; esac
            printf '%-22s %6s %10.4f %12.4f %10.3f %8s\n' "$(label_of $kind)" "$n" \
                "$(median < "$tmp/init")" "$(median < "$tmp/shutdown")" "$(median < "$tmp/wall")" \
                "$cpu"
        else
            printf '%-22s %6s %s\n' "$(label_of $kind)" "$n" "failed ($failures of $runs runs)"
            tail -n 5 "$last_failure" | sed 's/^/    /'
        fi
    done
done
