#!/usr/bin/env bash
# The upload benchmark of docs/benchmarks.md ("Uploads"): Herald (a private
# nats-server and three edges, spawned by herald-loadgen) and the peer tus
# server @tus/server (bench/peers/tus-server) measured side by side in one
# run, with the same load client. Everything runs on 127.0.0.1 and is
# stopped by PID when the run ends, also when it fails.
#
#   bench/uploads.sh [herald-loadgen uploads flags, e.g. --markdown docs/benchmarks-raw.md]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
say() { echo "bench/uploads: $*"; }

scripts/setup.sh
say "building herald-edge and herald-loadgen (release)"
cargo build --release -p herald-edge -p herald-loadgen
say "installing the peer (npm ci in bench/peers/tus-server)"
(cd bench/peers/tus-server && npm ci --no-audit --no-fund --loglevel=error)

work="$(mktemp -d)"
peer_pid=""
cleanup() {
    if [[ -n "$peer_pid" ]]; then
        kill "$peer_pid" 2>/dev/null || true
        wait "$peer_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$work/files"
node bench/peers/tus-server/server.mjs "$port" "$work/files" >"$work/peer.log" 2>&1 &
peer_pid=$!
for _ in $(seq 100); do
    grep -q "^listening" "$work/peer.log" && break
    kill -0 "$peer_pid" 2>/dev/null || { cat "$work/peer.log" >&2; exit 1; }
    sleep 0.1
done
grep -q "^listening" "$work/peer.log" || { say "the peer did not start"; cat "$work/peer.log" >&2; exit 1; }
say "@tus/server $(node -p 'require("./bench/peers/tus-server/node_modules/@tus/server/package.json").version') on port $port (pid $peer_pid)"

target/release/herald-loadgen uploads --spawn --edge-nodes 3 --edge-bin target/release/herald-edge \
    --peer-tus-url "http://127.0.0.1:$port" --peer-tus-pid "$peer_pid" "$@"
