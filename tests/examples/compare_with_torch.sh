#!/bin/sh
# The training examples against their PyTorch twins: each example writes its initial weights and
# data (--weights-out), reference.py trains the same model on them with torch.distributed.rpc,
# and the first STEPS losses must agree to 1e-6 relative. Skips (exit 0, saying why) when
# Debian's python3 has no torch.
#
# usage: tests/examples/compare_with_torch.sh [BUILD_DIR] [EXAMPLE...]
#        (defaults: build; every example folder that has a reference.py)
set -eu
build=${1:-build}
[ $# -gt 0 ] && shift
py=${FERRY_TORCH_PYTHON:-/usr/bin/python3}
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    echo "compare_with_torch: skipped: $py cannot import torch (apt-get install -y python3-torch)"
    exit 0
fi
steps=${STEPS:-5}
examples=$*
if [ -z "$examples" ]; then
    for d in examples/*/reference.py; do
        [ -f "$d" ] && examples="$examples $(basename "$(dirname "$d")")"
    done
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-compare.XXXXXX")
trap 'rm -rf "$dir"' EXIT
status=0
for ex in $examples; do
    "$build/examples/$ex" --steps "$steps" --weights-out "$dir/$ex.safetensors" >"$dir/$ex.ferry" 2>&1 ||
        { cat "$dir/$ex.ferry"; echo "compare_with_torch: $ex failed"; status=1; continue; }
    "$py" "examples/$ex/reference.py" --steps "$steps" --weights "$dir/$ex.safetensors" \
        >"$dir/$ex.torch" 2>&1 ||
        { cat "$dir/$ex.torch"; echo "compare_with_torch: $ex/reference.py failed"; status=1; continue; }
    # Pair the "step i loss L" lines of both runs and check every pair.
    if awk -v ex="$ex" -v steps="$steps" '
        FNR == 1 { file++ }
        $1 == "step" && $3 == "loss" { loss[file, $2] = $4; n[file]++ }
        END {
            bad = 0
            for (i = 0; i < steps; i++) {
                a = loss[1, i]; b = loss[2, i]
                if (a == "" || b == "") { printf "%s: step %d missing\n", ex, i; bad = 1; continue }
                d = a - b; if (d < 0) d = -d
                m = a < 0 ? -a : a; if (m < 1e-300) m = 1e-300
                ok = d / m <= 1e-6
                printf "%s step %d: ferry %s torch %s %s\n", ex, i, a, b, ok ? "ok" : "DIFFER"
                if (!ok) bad = 1
            }
            exit bad
        }' "$dir/$ex.ferry" "$dir/$ex.torch"; then :; else status=1; fi
done
exit $status
