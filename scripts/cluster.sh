#!/usr/bin/env bash
# The deployment topology on this machine (docs/deploy.md, "Topology"): a
# 3-server NATS JetStream cluster, three edge nodes (partitioned streams with
# 3 replicas, each edge knowing all three servers), nginx in front hashing on
# the org, and the demo publisher; all on loopback, in the background, with
# logs under .run/cluster/logs/. It uses the config files that
# docker-compose.yml and k8s/ use: nats/cluster.conf (with nats/herald.conf
# and nats/partitions.conf) and deploy/nginx/herald.conf. Prints URLs, a
# token and curl lines, then waits; Ctrl-C (or SIGTERM) stops everything it
# started.
#
#   scripts/cluster.sh                 run it
#   scripts/cluster.sh --config-files  print the repo's config files it uses, and exit
#
# Environment overrides:
#   HERALD_CLUSTER_PARTITIONS  K, the number of event streams (default 4, as
#                              in nats/partitions.conf); the edges get
#                              HERALD_PARTITIONS=K and NATS a partition(K)
#                              mapping; 1 = one stream, no mapping
#   HERALD_CLUSTER_RATE        demo events per second, all orgs together (default 5)
#   HERALD_CLUSTER_PORT        nginx's port (default 8080); the edges use the
#                              next three
#   HERALD_CLUSTER_NATS_PORT   client port of NATS server 1 (default 4222); the
#                              others use the next two, routes are 2000 above,
#                              monitoring 4000 above
#   HERALD_CLUSTER_SECRET      HS256 secret shared by edges and tokens (dev default)
#   HERALD_NATS_EDGE_PASSWORD, HERALD_NATS_PUBLISHER_PASSWORD
#                              passwords of the NATS users (dev defaults)
#   RUST_LOG                   log filter of the Rust processes (default info)
# Needs nginx (HERALD_NGINX, PATH or /usr/sbin/nginx; Debian: apt-get install
# nginx; installed here when missing and running as root). nginx runs in the foreground with its own prefix under
# .run/cluster/nginx/, never as the system service.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# The repo's config files, shared with docker-compose.yml and k8s/
# (scripts/validate-deploy.sh checks that they mount the same ones).
nats_conf="nats/cluster.conf"
nats_includes=("nats/herald.conf" "nats/partitions.conf")
nginx_conf="deploy/nginx/herald.conf"
if [[ "${1:-}" == "--config-files" ]]; then
    printf '%s\n' "$nats_conf" "${nats_includes[@]}" "$nginx_conf"
    exit 0
elif [[ $# -gt 0 ]]; then
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi

partitions="${HERALD_CLUSTER_PARTITIONS:-4}"
rate="${HERALD_CLUSTER_RATE:-5}"
lb_port="${HERALD_CLUSTER_PORT:-8080}"
nats_base="${HERALD_CLUSTER_NATS_PORT:-4222}"
secret="${HERALD_CLUSTER_SECRET:-herald-dev-secret-change-me}"
export HERALD_NATS_EDGE_PASSWORD="${HERALD_NATS_EDGE_PASSWORD:-herald-dev-edge}"
export HERALD_NATS_PUBLISHER_PASSWORD="${HERALD_NATS_PUBLISHER_PASSWORD:-herald-dev-publisher}"
export RUST_LOG="${RUST_LOG:-info}"
org="acme-hotels"
run_dir="$repo/.run/cluster"
logs="$run_dir/logs"
target="${CARGO_TARGET_DIR:-$repo/target}"

tool=cluster
# shellcheck source=lib/processes.sh
source "$repo/scripts/lib/processes.sh"

[[ "$partitions" =~ ^[0-9]+$ ]] && (( partitions >= 1 && partitions <= 1024 )) \
    || die "HERALD_CLUSTER_PARTITIONS must be a number from 1 to 1024, got '$partitions'"
[[ "$lb_port" =~ ^[0-9]+$ ]] && (( lb_port >= 1 && lb_port + 3 <= 65535 )) \
    || die "HERALD_CLUSTER_PORT must be a port number, got '$lb_port'"
[[ "$nats_base" =~ ^[0-9]+$ ]] && (( nats_base >= 1 && nats_base + 4002 <= 65535 )) \
    || die "HERALD_CLUSTER_NATS_PORT must be a port number (at most 61533), got '$nats_base'"
command -v curl >/dev/null 2>&1 || die "curl is required"

# Server i (1..3): client, route and monitoring ports; edge i: its port.
nats_port() { echo $(( nats_base + $1 - 1 )); }
route_port() { echo $(( nats_base + 2000 + $1 - 1 )); }
mon_port() { echo $(( nats_base + 4000 + $1 - 1 )); }
edge_port() { echo $(( lb_port + $1 )); }

# --- ports -------------------------------------------------------------------
ports=("$lb_port")
for i in 1 2 3; do ports+=("$(nats_port "$i")" "$(route_port "$i")" "$(mon_port "$i")" "$(edge_port "$i")"); done
busy=()
for p in "${ports[@]}"; do port_busy "$p" && busy+=("$p"); done
if (( ${#busy[@]} )); then
    echo "cluster: error: port(s) already in use on 127.0.0.1: ${busy[*]}" >&2
    command -v ss >/dev/null 2>&1 && for p in "${busy[@]}"; do ss -ltnpH "sport = :$p" 2>/dev/null | sed 's/^/cluster:   /' >&2 || true; done
    echo "cluster: stop whatever holds them (dev.sh or an earlier cluster.sh?), or set HERALD_CLUSTER_PORT and HERALD_CLUSTER_NATS_PORT" >&2
    exit 1
fi

# --- nginx -------------------------------------------------------------------
# shellcheck source=lib/nginx.sh
source "$repo/scripts/lib/nginx.sh"
find_nginx "nginx is required"

# --- build -------------------------------------------------------------------
"$repo/scripts/setup.sh" --release
nats_bin="$repo/.tools/bin/nats-server"
edge_bin="$target/release/herald-edge"
demo_bin="$target/release/herald-demo"

# An edge without partition support ignores HERALD_PARTITIONS and would read
# the mapped six-token subjects as malformed: refuse rather than run wrong.
if (( partitions > 1 )) && ! "$edge_bin" --help 2>/dev/null | grep -q 'HERALD_PARTITIONS'; then
    die "this herald-edge has no HERALD_PARTITIONS setting, so it cannot read $partitions partitioned streams; run with HERALD_CLUSTER_PARTITIONS=1"
fi

# --- config ------------------------------------------------------------------
mkdir -p "$logs" "$run_dir/nginx/tmp"

# NATS reads the repo's files through links in one directory, so that their
# relative includes resolve there. Only partitions.conf may differ: when K is
# not the repo's (4), it is written here (no mapping at all for K = 1).
conf_dir="$run_dir/nats-conf"
rm -rf "$conf_dir"
mkdir -p "$conf_dir"
ln -s "$repo/$nats_conf" "$conf_dir/cluster.conf"
ln -s "$repo/nats/herald.conf" "$conf_dir/herald.conf"
repo_k="$(sed -n 's/.*partition(\([0-9]*\),1).*/\1/p' "$repo/nats/partitions.conf")"
if [[ "$partitions" == "$repo_k" ]]; then
    ln -s "$repo/nats/partitions.conf" "$conf_dir/partitions.conf"
elif (( partitions == 1 )); then
    echo "# HERALD_CLUSTER_PARTITIONS=1: one stream, no mapping (written by scripts/cluster.sh)" >"$conf_dir/partitions.conf"
else
    sed "s/partition($repo_k,1)/partition($partitions,1)/" "$repo/nats/partitions.conf" >"$conf_dir/partitions.conf"
fi

# The streams of one K do not fit another K's subjects: start from empty
# stores when K changed since the last run.
if [[ -f "$run_dir/partitions" && "$(cat "$run_dir/partitions")" != "$partitions" ]]; then
    say "K changed from $(cat "$run_dir/partitions") to $partitions: removing the old JetStream stores"
    rm -rf "$run_dir/nats-1" "$run_dir/nats-2" "$run_dir/nats-3"
fi
echo "$partitions" >"$run_dir/partitions"

# nginx: its own prefix, pid file and temp paths; the deployment's two
# includes of deploy/nginx/herald.conf; access log with the chosen edge.
ng="$run_dir/nginx"
{
    for i in 1 2 3; do echo "server 127.0.0.1:$(edge_port "$i");"; done
} >"$ng/herald-edges.conf"
echo "listen 127.0.0.1:$lb_port;" >"$ng/herald-listen.conf"
cat >"$ng/nginx.conf" <<NGINX
# Written by scripts/cluster.sh; the Herald part is $nginx_conf.
worker_processes 1;
pid $ng/nginx.pid;
error_log stderr notice;
events {
    worker_connections 4096;
}
http {
    log_format herald '\$remote_addr [\$time_local] "\$request" \$status \$body_bytes_sent '
                      'org=\$arg_org edge=\$upstream_addr \${request_time}s';
    access_log $logs/nginx-access.log herald;
    client_body_temp_path $ng/tmp/body;
    proxy_temp_path $ng/tmp/proxy;
    fastcgi_temp_path $ng/tmp/fastcgi;
    uwsgi_temp_path $ng/tmp/uwsgi;
    scgi_temp_path $ng/tmp/scgi;
    include $repo/$nginx_conf;
}
NGINX
"$nginx_bin" -t -q -p "$ng" -c "$ng/nginx.conf" -e stderr || die "nginx rejects $ng/nginx.conf"

# --- children ----------------------------------------------------------------

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

SECONDS=0
deadline=90

routes="nats://127.0.0.1:$(route_port 1),nats://127.0.0.1:$(route_port 2),nats://127.0.0.1:$(route_port 3)"
for i in 1 2 3; do
    start "nats-$i" "$nats_bin" -c "$conf_dir/cluster.conf" \
        --server_name "nats-$i" -a 127.0.0.1 -p "$(nats_port "$i")" -m "$(mon_port "$i")" \
        --cluster "nats://127.0.0.1:$(route_port "$i")" --routes "$routes" \
        -sd "$run_dir/nats-$i"
done
# /healthz answers 200 once JetStream has a meta leader.
for i in 1 2 3; do
    wait_http "nats-$i" "${pids[$((i - 1))]}" "http://127.0.0.1:$(mon_port "$i")/healthz"
done
say "NATS cluster ready after ${SECONDS}s"

nats_urls="nats://127.0.0.1:$(nats_port 1),nats://127.0.0.1:$(nats_port 2),nats://127.0.0.1:$(nats_port 3)"
# Edge 1 first: it creates the streams, so the others find them answering.
# (Edges started together also work: a mapping probe no stream answers is
# retried for 15 s while a new stream elects its leader; this only saves
# that wait.)
for i in 1 2 3; do
    if (( i == 2 )); then
        wait_http edge-1 "${pids[3]}" "http://127.0.0.1:$(edge_port 1)/readyz"
    fi
    start "edge-$i" env \
        HERALD_LISTEN="127.0.0.1:$(edge_port "$i")" \
        HERALD_NODE_ID="edge-$i" \
        HERALD_NATS_URL="$nats_urls" \
        HERALD_NATS_USER=edge \
        HERALD_NATS_PASSWORD="$HERALD_NATS_EDGE_PASSWORD" \
        HERALD_PARTITIONS="$partitions" \
        HERALD_STREAM_REPLICAS=3 \
        HERALD_JWT_SECRET="$secret" \
        HERALD_METRICS_PUBLIC=true \
        "$edge_bin"
done
for i in 2 3; do
    wait_http "edge-$i" "${pids[$((i + 2))]}" "http://127.0.0.1:$(edge_port "$i")/readyz"
done
say "edges ready after ${SECONDS}s"

start nginx "$nginx_bin" -p "$ng" -c "$ng/nginx.conf" -e stderr -g 'daemon off;'
wait_http nginx "${pids[6]}" "http://127.0.0.1:$lb_port/readyz"

# The demo starts once the edges have created the streams: as `publisher` it
# may publish events but not create streams. Each publish expects its org's
# stream, so with K > 1 it needs to know K.
demo_note=""
if (( partitions > 1 )) && ! "$demo_bin" run --help 2>/dev/null | grep -q 'HERALD_PARTITIONS'; then
    demo_note="note: this herald-demo has no HERALD_PARTITIONS setting: its publishes expect stream HERALD_EVENTS and are refused at K=$partitions (see .run/cluster/logs/demo.log); publish with nats pub"
    say "$demo_note"
fi
start demo env NO_COLOR=1 HERALD_NATS_URL="$nats_urls" HERALD_NATS_USER=publisher \
    HERALD_NATS_PASSWORD="$HERALD_NATS_PUBLISHER_PASSWORD" HERALD_PARTITIONS="$partitions" \
    "$demo_bin" run --rate "$rate"

# --- tokens and instructions -------------------------------------------------
token="$("$demo_bin" token --secret "$secret" --org "$org" --sub dev-user)"
pub_token="$("$demo_bin" token --secret "$secret" --org "$org" --sub dev-publisher --role publisher)"
admin_token="$("$demo_bin" token --secret "$secret" --org "$org" --sub dev-admin --role admin)"
lb="http://127.0.0.1:$lb_port"
cat >"$run_dir/cluster.env" <<ENV
export HERALD_JWT_SECRET='$secret'
export TOKEN='$token'
export PUB_TOKEN='$pub_token'
export ADMIN_TOKEN='$admin_token'
export NATS_URL='$nats_urls'
export NATS_USER=publisher
export NATS_PASSWORD='$HERALD_NATS_PUBLISHER_PASSWORD'
ENV

if (( partitions > 1 )); then
    streams="streams HERALD_EVENTS_0..HERALD_EVENTS_$((partitions - 1)) (mapping partition($partitions) of nats/partitions.conf)"
else
    streams="stream HERALD_EVENTS (K=1: no mapping)"
fi

cat <<INFO

Herald cluster is up: 3 NATS servers, 3 edges, nginx, demo publishing $rate events/s
to orgs acme-hotels, globex-resorts, initech-inns; K=$partitions, $streams, 3 replicas.

  nginx     $lb          (hash \$arg_org consistent over the three edges)
  edge 1    http://127.0.0.1:$(edge_port 1)        (node edge-1; metrics http://127.0.0.1:$(edge_port 1)/v2/realtime/metrics)
  edge 2    http://127.0.0.1:$(edge_port 2)        (node edge-2)
  edge 3    http://127.0.0.1:$(edge_port 3)        (node edge-3)
  NATS      $nats_urls
            monitoring http://127.0.0.1:$(mon_port 1) :$(mon_port 2) :$(mon_port 3)
            users: publisher / $HERALD_NATS_PUBLISHER_PASSWORD (events only), edge / $HERALD_NATS_EDGE_PASSWORD (edges, admin)
  logs      .run/cluster/logs/{nats-1,nats-2,nats-3,edge-1,edge-2,edge-3,nginx,demo}.log
            .run/cluster/logs/nginx-access.log (org and chosen edge of every request)

User token (org $org, all services and properties, 24 h):
  export TOKEN='$token'
Publisher and admin tokens, the secret and the NATS URLs are in .run/cluster/cluster.env:  source .run/cluster/cluster.env

Long-poll through nginx (org= picks the node; waits for the next event, at most 25 s):
  curl -H "Authorization: Bearer \$TOKEN" "$lb/v1/realtime/poll?org=$org&services=finance,guest,tasks,staff"
A poll loop (follows the cursor):
  s=; while :; do r=\$(curl -s -H "Authorization: Bearer \$TOKEN" "$lb/v1/realtime/poll?org=$org&services=finance,guest,tasks,staff\${s:+&lastSeq=\$s}"); echo "\$r"; s=\$(echo "\$r" | sed -n 's/.*"lastSeq":\([0-9]*\).*/\1/p'); done
SSE and WebSocket through nginx:
  curl -N "$lb/v2/realtime/sse?org=$org&services=finance&token=\$TOKEN"
  ws://127.0.0.1:$lb_port/v2/realtime/stream?org=$org
Stop an edge or a NATS server (kill <pid>; pids in .run/cluster/cluster.pids, in start order
nats-1..3, edge-1..3, nginx, demo) and keep polling: nginx moves the edge's orgs to the others,
and the edges and streams (3 replicas) carry on with two NATS servers.

Publish with the NATS CLI:
  nats --server '$nats_urls' --user publisher --password '$HERALD_NATS_PUBLISHER_PASSWORD' pub herald.events.$org.finance.p1 '{"eventType":"expense.created","payload":{"amount":10}}'

Press Ctrl-C to stop everything.
INFO
[[ -n "$demo_note" ]] && echo "cluster: $demo_note"

# --- foreground: watch the children until Ctrl-C ------------------------------
# An edge or NATS server that dies is reported once and left dead: the others
# carry on, as in a deployment (try it: kill one of each). nginx or the demo
# dying stops everything.
reported=()
while :; do
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            case "${names[$i]}" in
                edge-*|nats-*)
                    if [[ " ${reported[*]} " != *" ${names[$i]} "* ]]; then
                        say "${names[$i]} (pid ${pids[$i]}) exited; the others carry on"
                        reported+=("${names[$i]}")
                    fi
                    ;;
                *)
                    echo "cluster: error: ${names[$i]} (pid ${pids[$i]}) exited unexpectedly" >&2
                    tail_log "${names[$i]}"
                    exit 1
                    ;;
            esac
        fi
    done
    sleep 1 &
    wait $! || true
done
