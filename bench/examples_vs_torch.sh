#!/bin/sh
# make bench: time per training step of each training example beside its PyTorch twin
# (reference.py, torch.distributed.rpc with the TensorPipe agent), both measured in this run on
# this machine, with the ratio. The rows are skipped when Debian's python3 has no torch.
#
# usage: bench/examples_vs_torch.sh [BUILD_DIR]   env: BENCH_STEPS (default 20)
set -eu
build=${1:-build}
steps=${BENCH_STEPS:-20}
py=${FERRY_TORCH_PYTHON:-/usr/bin/python3}
has_torch=0
"$py" -c 'import torch' >/dev/null 2>&1 && has_torch=1
step_ms() { awk '$1 == "step_ms" { v = $2 } END { if (v == "") exit 1; print v }'; }
printf '%-22s %14s %14s %8s\n' "training step" "ferry ms" "pytorch ms" "faster"
for ref in examples/*/reference.py; do
    [ -f "$ref" ] || continue
    ex=$(basename "$(dirname "$ref")")
    [ -x "$build/examples/$ex" ] || continue
    f=$("$build/examples/$ex" --bench "$steps" 2>/dev/null | step_ms) || f=""
    t=""
    [ $has_torch = 1 ] && { t=$("$py" "$ref" --bench "$steps" 2>/dev/null | step_ms) || t=""; }
    if [ -n "$f" ] && [ -n "$t" ]; then
        printf '%-22s %14.2f %14.2f %7.2fx\n' "$ex" "$f" "$t" "$(echo "$t $f" | awk '{print $1 / $2}')"
    else
        printf '%-22s %14s %14s %8s\n' "$ex" "${f:-failed}" \
            "$([ $has_torch = 1 ] && echo "${t:-failed}" || echo "no torch")" "-"
    fi
done
