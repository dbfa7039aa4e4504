#!/bin/bash
# The checks that need a real GPU, in one short run (under 8 minutes on a machine with a GPU and
# a few cores): builds with CUDA, runs the device tests of the unit and integration suites on
# the real devices (FERRY_EMULATE_DEVICES unset, so the CUDA backend and the NCCL channel are
# what runs), then the device bench rows beside raw NCCL, and prints a summary of what passed,
# failed or could not run. Run from the repository root:
#
#   tools/gpu_check.sh [BUILD_DIR]      (build-gpu by default)
#
# env: JOBS (make -j, default: the cores), GPU_TEST_FILTERS (Criterion --filter globs, default
# the device and CUDA suites), GPU_CHECK_BUDGET_S (the whole run, 460 s by default: each step
# gets at most what is left), CUDA_HOME. Exits non-zero when a step failed.
set -u
build=${1:-build-gpu}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 4)}
filters=${GPU_TEST_FILTERS:-"*device*/*"}
log=$build/gpu_check.log
start=$(date +%s)
budget=${GPU_CHECK_BUDGET_S:-460} # the whole run, under 8 minutes
unset FERRY_EMULATE_DEVICES FERRY_DEVICE_PATH
mkdir -p "$build"
: > "$log"
summary=()
failed=0

# step NAME SECONDS COMMAND...: runs it under a time limit, output to the log and the terminal.
step() {
    local name=$1 limit=$2 t0 rc dt why left
    shift 2
    t0=$(date +%s)
    left=$((budget - (t0 - start)))
    if [ "$left" -lt 10 ]; then
        summary+=("SKIP  $name (the ${budget}s budget is spent)")
        failed=1
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    dt=$(($(date +%s) - t0))
    if [ "$rc" = 0 ]; then
        summary+=("PASS  $name (${dt}s)")
    else
        [ "$rc" = 124 ] && why="timed out after ${limit}s" || why="exit $rc"
        summary+=("FAIL  $name (${dt}s, $why)")
        failed=1
    fi
    return "$rc"
}

# tests NAME SECONDS COMMAND...: a Criterion run; one that matched no test says so.
tests() {
    local name=$1 mark
    mark=$(wc -l < "$log")
    step "$@"
    if tail -n +"$((mark + 1))" "$log" | grep -q "Tested: 0 "; then
        unset 'summary[${#summary[@]}-1]'
        summary+=("NONE  $name (no test matched)")
    fi
}

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader |
        sed 's/^/gpu: /' | tee -a "$log"
else
    echo "gpu: nvidia-smi not found" | tee -a "$log"
fi

mk=(make BUILD="$build" FERRY_WITH_CUDA=1 -j"$jobs")
if step "build (CUDA)" 240 "${mk[@]}" all "$build/tests/unit_tests" \
        "$build/tests/integration_tests" "$build/bench/device_bench"; then
    for f in $filters; do
        tests "unit $f" 60 "$build/tests/unit_tests" --filter "$f" --jobs 4
        tests "integration $f" 120 "$build/tests/integration_tests" --filter "$f" --jobs 1
    done
    step "bench device_bench (shm)" 120 "$build/bench/device_bench" shm
    step "bench device_bench hooks (shm)" 60 "$build/bench/device_bench" hooks shm
else
    summary+=("SKIP  tests and bench (the build failed; see $log)")
fi

echo
echo "gpu_check summary ($(($(date +%s) - start))s, log in $log):"
for line in "${summary[@]}"; do
    echo "  $line"
done
grep -E "^(path|staged|direct|channel|nccl|size) |^device_bench|^ *[0-9]+ MiB" "$log" |
    sed 's/^/  bench: /'
exit "$failed"
