#!/usr/bin/env bash
# The cluster's numbers (benches/cluster.rs): cross-node chat latency, chat fan-out over two
# nodes, roomAdd/roomView/roomLeave with the cluster on and off, and 42,000 idle connections
# across `--processes 3`. Every server (redis-server too) runs on free 127.0.0.1 ports and is
# stopped at the end; the idle section connects from 127.0.0.2-4 (loopback).
#
#   benches/cluster.sh [latency] [fanout] [rooms] [idle]   # all when none is named;
#                                                          # installs redis-server if missing
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/interop/lib.sh
. tests/interop/lib.sh
need redis-server redis-server
cargo bench --locked --bench cluster -- "$@"
