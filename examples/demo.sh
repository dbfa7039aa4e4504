#!/bin/sh
# make demo: runs the master/worker example as two processes through ferryrun, then the
# distributed RNN example (it starts its own three ranks) for a few steps.
set -e
build=${1:-build}
"$build/bin/ferryrun" -n 2 "$build/examples/master_worker"
exec "$build/examples/model_parallel_rnn" --steps 10
