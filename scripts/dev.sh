#!/usr/bin/env bash
# Local Herald playground: one nats-server with JetStream, two edge nodes, the
# demo publisher and the browser SDK's demo page (clients/js/demo, when node
# and npm are installed), all in the background with logs under .run/logs/.
# Prints URLs, a ready-made token and curl lines, then waits; Ctrl-C stops
# everything it started.
#
# Environment overrides:
#   HERALD_DEV_RATE       demo events per second, all orgs together (default 5)
#   HERALD_DEV_PORT_BASE  port of edge 1; edge 2 uses the next one (default 8080)
#   HERALD_DEV_DEMO_PORT  port of the demo page (default 8090)
#   HERALD_DEV_SECRET     HS256 secret shared by edges and tokens (dev default)
#   HERALD_NATS_EDGE_PASSWORD, HERALD_NATS_PUBLISHER_PASSWORD
#                         passwords of the NATS users `edge` and `publisher`
#                         (nats/herald.conf; dev defaults)
#   RUST_LOG              log filter of the Rust processes (default info)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

rate="${HERALD_DEV_RATE:-5}"
base="${HERALD_DEV_PORT_BASE:-8080}"
secret="${HERALD_DEV_SECRET:-herald-dev-secret-change-me}"
# NATS runs with the shipped users (nats/herald.conf): edges log in as `edge`,
# the demo and `nats pub` as `publisher` (events only).
export HERALD_NATS_EDGE_PASSWORD="${HERALD_NATS_EDGE_PASSWORD:-herald-dev-edge}"
export HERALD_NATS_PUBLISHER_PASSWORD="${HERALD_NATS_PUBLISHER_PASSWORD:-herald-dev-publisher}"
nats_port=4222
nats_mon=8222
edge1_port="$base"
edge2_port="$((base + 1))"
demo_port="${HERALD_DEV_DEMO_PORT:-8090}"
org="acme-hotels"
run_dir="$repo/.run"
logs="$run_dir/logs"
export RUST_LOG="${RUST_LOG:-info}"

tool=dev
# shellcheck source=lib/processes.sh
source "$repo/scripts/lib/processes.sh"

[[ "$base" =~ ^[0-9]+$ ]] && (( base >= 1 && base < 65535 )) || die "HERALD_DEV_PORT_BASE must be a port number, got '$base'"
[[ "$demo_port" =~ ^[0-9]+$ ]] && (( demo_port >= 1 && demo_port <= 65535 )) || die "HERALD_DEV_DEMO_PORT must be a port number, got '$demo_port'"
command -v curl >/dev/null 2>&1 || die "curl is required"

# The demo page needs node and npm (and the SDK sources in clients/js/src);
# without them everything else still runs.
demo_dir="$repo/clients/js/demo"
demo_page=0
if [[ -f "$demo_dir/package.json" && -f "$repo/clients/js/src/index.ts" ]] && command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    demo_page=1
fi

# --- ports -------------------------------------------------------------------
busy=()
ports=("$nats_port" "$nats_mon" "$edge1_port" "$edge2_port")
(( demo_page )) && ports+=("$demo_port")
for p in "${ports[@]}"; do
    port_busy "$p" && busy+=("$p")
done
if (( ${#busy[@]} )); then
    echo "dev: error: port(s) already in use on 127.0.0.1: ${busy[*]}" >&2
    command -v ss >/dev/null 2>&1 && for p in "${busy[@]}"; do ss -ltnpH "sport = :$p" 2>/dev/null | sed 's/^/dev:   /' >&2 || true; done
    echo "dev: stop whatever holds them (an earlier dev.sh?), or set HERALD_DEV_PORT_BASE for the edges and HERALD_DEV_DEMO_PORT for the demo page (NATS needs $nats_port and $nats_mon)" >&2
    exit 1
fi

# --- build -------------------------------------------------------------------
"$repo/scripts/setup.sh" --release
if (( demo_page )); then
    say "installing the demo page's packages (npm ci in clients/js/demo)"
    if ! (cd "$demo_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
        say "warning: npm ci in clients/js/demo failed; running without the demo page"
        demo_page=0
    fi
else
    say "note: no demo page (needs node, npm and clients/js/src/index.ts)"
fi

nats_bin="$repo/.tools/bin/nats-server"
edge_bin="$repo/target/release/herald-edge"
demo_bin="$repo/target/release/herald-demo"

# --- children ----------------------------------------------------------------
mkdir -p "$logs" "$run_dir/nats"

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

SECONDS=0
deadline=60

start nats "$nats_bin" -c "$repo/nats/herald.conf" -js -a 127.0.0.1 -p "$nats_port" -m "$nats_mon" -sd "$run_dir/nats"
wait_http nats "${pids[0]}" "http://127.0.0.1:$nats_mon/healthz"

nats_url="nats://127.0.0.1:$nats_port"
cors="http://127.0.0.1:$demo_port,http://localhost:$demo_port"
for n in 1 2; do
    port=$(( n == 1 ? edge1_port : edge2_port ))
    start "edge-$n" env \
        HERALD_LISTEN="127.0.0.1:$port" \
        HERALD_NODE_ID="edge-$n" \
        HERALD_NATS_URL="$nats_url" \
        HERALD_NATS_USER=edge \
        HERALD_NATS_PASSWORD="$HERALD_NATS_EDGE_PASSWORD" \
        HERALD_JWT_SECRET="$secret" \
        HERALD_METRICS_PUBLIC=true \
        HERALD_CORS_ORIGINS="$cors" \
        "$edge_bin"
done
if (( demo_page )); then
    # The demo page's server mints tokens with the edges' secret (dev only).
    start demo-page env \
        HERALD_DEMO_LISTEN="127.0.0.1:$demo_port" \
        HERALD_DEMO_EDGES="http://127.0.0.1:$edge1_port,http://127.0.0.1:$edge2_port" \
        HERALD_DEMO_ORG="$org" \
        HERALD_JWT_SECRET="$secret" \
        node "$demo_dir/server.mjs"
fi
printf '%s\n' "${pids[@]}" >"$run_dir/dev.pids"

wait_http edge-1 "${pids[1]}" "http://127.0.0.1:$edge1_port/readyz"
wait_http edge-2 "${pids[2]}" "http://127.0.0.1:$edge2_port/readyz"
say "both edges ready after ${SECONDS}s"
# The demo starts once the edges have created the stream: as `publisher` it
# may publish events but not create streams.
start demo env NO_COLOR=1 HERALD_NATS_URL="$nats_url" HERALD_NATS_USER=publisher \
    HERALD_NATS_PASSWORD="$HERALD_NATS_PUBLISHER_PASSWORD" "$demo_bin" run --rate "$rate"
printf '%s\n' "${pids[@]}" >"$run_dir/dev.pids"
if (( demo_page )); then
    wait_http demo-page "${pids[3]}" "http://127.0.0.1:$demo_port/api/config"
    demo_line="  Demo page: http://127.0.0.1:$demo_port/   (browser SDK: live feeds, leader/follower tabs, publish button)"
else
    demo_line="  Demo page: not started (needs node, npm and clients/js/src)"
fi

# --- tokens and instructions -------------------------------------------------
token="$("$demo_bin" token --secret "$secret" --org "$org" --sub dev-user)"
pub_token="$("$demo_bin" token --secret "$secret" --org "$org" --sub dev-publisher --role publisher)"
admin_token="$("$demo_bin" token --secret "$secret" --org "$org" --sub dev-admin --role admin)"
e1="http://127.0.0.1:$edge1_port"
e2="http://127.0.0.1:$edge2_port"
cat >"$run_dir/dev.env" <<ENV
export HERALD_JWT_SECRET='$secret'
export TOKEN='$token'
export PUB_TOKEN='$pub_token'
export ADMIN_TOKEN='$admin_token'
export NATS_USER=publisher
export NATS_PASSWORD='$HERALD_NATS_PUBLISHER_PASSWORD'
ENV

if command -v nats >/dev/null 2>&1; then nats_note="(NATS CLI found)"; else nats_note="(NATS CLI not installed; see https://github.com/nats-io/natscli)"; fi

cat <<INFO

Herald dev stack is up (demo publishing $rate events/s to orgs acme-hotels, globex-resorts, initech-inns).

$demo_line
  edge 1    $e1        (node edge-1)
  edge 2    $e2        (node edge-2)
  metrics   $e1/v2/realtime/metrics   (Prometheus: $e1/metrics)
  NATS      $nats_url          (monitoring http://127.0.0.1:$nats_mon)
            users: publisher / $HERALD_NATS_PUBLISHER_PASSWORD (events only), edge / $HERALD_NATS_EDGE_PASSWORD (edges, admin)
  logs      .run/logs/{nats,edge-1,edge-2,demo,demo-page}.log

User token (org $org, all services and properties, 24 h):
  export TOKEN='$token'
Publisher and admin tokens, and the secret, are in .run/dev.env:  source .run/dev.env

Long-poll (waits for the next event, at most 25 s):
  curl -H "Authorization: Bearer \$TOKEN" "$e1/v1/realtime/poll?services=finance,guest,tasks,staff"
Then resume from the answer's lastSeq, on either node:
  curl -H "Authorization: Bearer \$TOKEN" "$e2/v1/realtime/poll?services=finance,guest,tasks,staff&lastSeq=<lastSeq from the previous answer>"
A poll loop (follows the cursor):
  s=; while :; do r=\$(curl -s -H "Authorization: Bearer \$TOKEN" "$e1/v1/realtime/poll?services=finance,guest,tasks,staff\${s:+&lastSeq=\$s}"); echo "\$r"; s=\$(echo "\$r" | sed -n 's/.*"lastSeq":\([0-9]*\).*/\1/p'); done

Publish with the NATS CLI $nats_note:
  nats --server $nats_url --user publisher --password '$HERALD_NATS_PUBLISHER_PASSWORD' pub herald.events.$org.finance.p1 '{"eventType":"expense.created","payload":{"amount":10}}'
Publish over HTTP with a publisher token:
  curl -X POST -H "Authorization: Bearer \$PUB_TOKEN" -H 'Content-Type: application/json' \\
    -d '{"service":"finance","propertyId":"p1","eventType":"expense.created","payload":{"amount":10}}' \\
    $e1/v2/realtime/publish

Press Ctrl-C to stop everything.
INFO

# --- foreground: watch the children until Ctrl-C ------------------------------
while :; do
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "dev: error: ${names[$i]} (pid ${pids[$i]}) exited unexpectedly" >&2
            tail_log "${names[$i]}"
            exit 1
        fi
    done
    sleep 1 &
    wait $! || true
done
