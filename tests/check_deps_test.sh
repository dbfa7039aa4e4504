#!/bin/sh
# Tests tools/check_deps.sh: on a scratch copy of the sources it passes unchanged and fails,
# naming the file, on each planted upward include (a public header of a higher module, an
# internal header of a higher module, a module's private header, a sub-folder module's header
# from its parent, an unmapped public header). Run from the repository root.
set -u
root=$(pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT INT TERM
failures=0

# A fresh copy of what the checker reads, in $scratch/tree.
fresh_copy() {
    rm -rf "$scratch/tree"
    mkdir "$scratch/tree"
    for d in core tensor transport autograd rpc rref optim include tools; do
        [ -d "$root/$d" ] && cp -R "$root/$d" "$scratch/tree/"
    done
}

run_checker() {
    (cd "$scratch/tree" && sh tools/check_deps.sh) >"$scratch/out" 2>&1
}

# expect_fail NAME FILE TEXT: plants TEXT at the top of FILE (created if missing) in a fresh
# copy; the checker must fail and name FILE.
expect_fail() {
    name=$1 file=$2 text=$3
    fresh_copy
    mkdir -p "$scratch/tree/${file%/*}"
    { echo "$text"; [ -f "$scratch/tree/$file" ] && cat "$scratch/tree/$file"; } >"$scratch/new"
    mv "$scratch/new" "$scratch/tree/$file"
    if run_checker; then
        echo "FAIL $name: check-deps passed"
        failures=$((failures + 1))
    elif ! grep -q "check-deps: $file " "$scratch/out"; then
        echo "FAIL $name: check-deps failed without naming $file:"
        cat "$scratch/out"
        failures=$((failures + 1))
    else
        echo "ok   $name"
    fi
}

fresh_copy
if run_checker; then
    echo "ok   unchanged sources pass"
else
    echo "FAIL unchanged sources: check-deps failed:"
    cat "$scratch/out"
    failures=$((failures + 1))
fi

expect_fail "core includes a tensor public header" core/value.c '#include "ferry/tensor.h"'
expect_fail "core includes the autograd public header" core/future.c '#include "ferry/autograd.h"'
expect_fail "tensor includes the autograd public header" tensor/tensor.c '#include "ferry/autograd.h"'
expect_fail "a public header includes a higher one" include/ferry/value.h '#include "ferry/tensor.h"'
expect_fail "rpc includes an rref internal header" rpc/serve.c '#include "rref/rref_impl.h"'
expect_fail "rpc includes the rref public header" rpc/call.c '#include "ferry/rref.h"'
expect_fail "rref includes rpc's private agent header" rref/remote.c '#include "rpc/agent_impl.h"'
expect_fail "a module includes the umbrella header" rref/rref.c '#include "ferry/ferry.h"'
expect_fail "rref includes its sub-module rref/object" rref/rref.c '#include "rref/object/object.h"'
expect_fail "autograd/dist includes optim" autograd/dist/context.c '#include "optim/optim.h"'
expect_fail "a file in a folder that is no module" tensor/cuda/kernels.c '#include "core/error.h"'
expect_fail "a public header no module claims" include/ferry/extra.h '#include "ferry/error.h"'

if [ $failures -ne 0 ]; then
    echo "check_deps_test: $failures case(s) failed"
    exit 1
fi
echo "check_deps_test: check-deps refuses every planted upward include"
