#!/usr/bin/env bash
# The side-by-side benchmark of docs/benchmarks.md ("Peers side by side"):
# Herald (a private nats-server and one edge) beside Nchan, Pushpin and NATS
# over WebSocket (bench/peers), one load client for all, each system fresh
# for each scenario and stopped by PID before the next starts. Everything
# runs on 127.0.0.1.
#
#   bench/compare.sh [herald-loadgen compare flags, e.g. --markdown docs/benchmarks-raw.md]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
say() { echo "bench/compare: $*"; }

scripts/setup.sh
say "installing the peers (Debian packages unpacked into .tools/peers)"
bench/peers/peers.sh install
say "building herald-edge and herald-loadgen (release)"
cargo build --release -p herald-edge -p herald-loadgen
bench/peers/peers.sh versions
target/release/herald-loadgen compare --edge-bin target/release/herald-edge "$@"
