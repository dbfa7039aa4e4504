#!/bin/sh
# make demo: runs the master/worker example as two processes through ferryrun.
set -e
build=${1:-build}
exec "$build/bin/ferryrun" -n 2 "$build/examples/master_worker"
