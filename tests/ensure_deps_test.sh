#!/bin/sh
# The dependency check that runs before every build (tools/ensure_deps.sh): quiet and quick when
# everything is there; when a package is missing and we are not root, make stops before
# building anything and prints the exact apt-get line, never a compiler or "command not found"
# error. (Installing as root is what `.ci/run` and a fresh machine exercise.)
set -u
fail() { echo "ensure_deps_test: $*" >&2; exit 1; }
script=tools/ensure_deps.sh

out=$(sh "$script" "cc pkg-config" "libfabric" "libfabric-dev" 2>&1) || fail "a complete machine failed: $out"
[ -z "$out" ] || fail "a complete machine printed: $out"

out=$(FERRY_DEPS_AS_USER=1 sh "$script" "cc ferry-no-such-tool" "libfabric" \
    "libfabric-dev ferry-no-such-package" 2>&1) && fail "a missing tool passed"
echo "$out" | grep -q "apt-get update && apt-get install -y ferry-no-such-package$" ||
    fail "no install line for the missing package: $out"
echo "$out" | grep -q "libfabric-dev" && fail "an installed package was named: $out"

out=$(FERRY_DEPS_AS_USER=1 make --no-print-directory -n all PROTOC_C=ferry-no-such-protoc \
    DEB_PKGS="make ferry-no-such-package" 2>&1) && fail "make went on without protoc-c"
echo "$out" | grep -q "apt-get install -y ferry-no-such-package" ||
    fail "make did not print the install line: $out"
echo "$out" | grep -q "build dependencies are missing" || fail "make did not stop: $out"
echo "$out" | grep -q "command not found" && fail "make ran a missing tool: $out"
echo "ensure_deps_test: a missing package stops make with the apt-get line to run"
