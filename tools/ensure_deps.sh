#!/bin/sh
# Makes sure the build's dependencies are there before make builds anything, so that on a fresh
# Debian machine `make demo` and `make test` work as the first commands: when something is
# missing it installs the Debian packages (as root, with apt-get) or, when not root, stops and
# prints the exact command to run. A missing tool then never shows up as a compiler or
# "command not found" error halfway through the build.
#
# usage: tools/ensure_deps.sh "TOOLS" "PKG_CONFIG_MODULES" "DEBIAN_PACKAGES"
#   The quick check (every tool on PATH, every pkg-config module found) costs a few
#   milliseconds and is all that runs on a machine that has everything.
# env: FERRY_DEPS_AS_USER=1 acts as if not root (tests); APT_UPDATED=1 skips apt-get update.
tools=$1
modules=$2
debs=$3

ok=1
for t in $tools; do
    command -v "$t" >/dev/null 2>&1 || ok=0
done
if [ $ok = 1 ] && command -v pkg-config >/dev/null 2>&1; then
    # shellcheck disable=SC2086 # one module per word
    pkg-config --exists $modules 2>/dev/null && exit 0
fi

missing=""
for p in $debs; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
missing=${missing# }
if [ -z "$missing" ]; then
    echo "ferry: every Debian package the build needs is installed, yet a tool or library is" >&2
    echo "ferry: still missing (tools: $tools; pkg-config modules: $modules): check PATH and" >&2
    echo "ferry: PKG_CONFIG_PATH" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ] || [ "${FERRY_DEPS_AS_USER:-0}" = 1 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ferry: the build needs Debian packages that are not installed. Run, as root:" >&2
    echo "  apt-get update && apt-get install -y $missing" >&2
    exit 1
fi
echo "ferry: installing the Debian packages the build needs: $missing" >&2
if [ "${APT_UPDATED:-}" != 1 ]; then
    apt-get update -qq >&2 || exit 1
fi
# shellcheck disable=SC2086 # one package per word
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2 || exit 1
