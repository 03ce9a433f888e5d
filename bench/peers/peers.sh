#!/usr/bin/env bash
# The peer servers of the side-by-side benchmark (issue 13): Nchan (nginx
# with the nchan module), Pushpin (with zurl and a GRIP origin) and NATS over
# WebSocket, installed project-locally and run on 127.0.0.1, never as system
# services. bench/peers/README.md describes URLs, wire formats and resume.
#
#   bench/peers/peers.sh install                       unpack the Debian packages into .tools/peers/
#   bench/peers/peers.sh start PEER PORT WORKDIR       start PEER (nchan, pushpin or nats-ws) in the
#                                                      background; prints its PIDs and URLs, which it
#                                                      also writes to WORKDIR/pids and WORKDIR/urls.env
#   bench/peers/peers.sh stop WORKDIR                  stop what `start` recorded in WORKDIR, by PID
#   bench/peers/peers.sh check [PEER...]               smoke check (default: all three); exits non-zero on failure
#   bench/peers/peers.sh versions                      print the installed versions
#
# Ports: nchan uses PORT; nats-ws PORT (WebSocket) and PORT+1 (NATS clients,
# for publishing); pushpin PORT (clients), PORT+1 (publish) and PORT+2 (the
# GRIP origin). Logs, configs, sockets and temp files all go to WORKDIR.
#
# `install` is idempotent. It downloads nginx, libnginx-mod-nchan, pushpin,
# zurl and condure, and those of their dependencies that dpkg does not list
# as installed, with `apt-get download`, and unpacks each with `dpkg-deb -x`
# into .tools/peers/<package>/ (nothing is installed; the unpacked libraries
# are found through LD_LIBRARY_PATH). nats-server comes from scripts/setup.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$repo/bench/peers"
tools="$repo/.tools"
peers_dir="$tools/peers"

# Always unpacked, whatever the machine has, so every run uses these builds.
main_pkgs=(nginx libnginx-mod-nchan pushpin zurl condure)

nginx_bin="$peers_dir/nginx/usr/sbin/nginx"
nchan_so="$peers_dir/libnginx-mod-nchan/usr/lib/nginx/modules/ngx_nchan_module.so"
pushpin_bin="$peers_dir/pushpin/usr/bin"
condure_bin="$peers_dir/condure/usr/bin/condure"
zurl_bin="$peers_dir/zurl/usr/bin/zurl"
nats_bin="$tools/bin/nats-server"

say() { echo "peers: $*"; }
die() { echo "peers: error: $*" >&2; exit 1; }
usage() { sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# --- install -----------------------------------------------------------------

is_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

# The library directories of every unpacked package, for LD_LIBRARY_PATH.
lib_path() {
    local dirs=() d
    for d in "$peers_dir"/*/usr/lib/*-linux-gnu "$peers_dir"/*/lib/*-linux-gnu; do
        [[ -d "$d" ]] && dirs+=("$d")
    done
    local IFS=:
    echo "${dirs[*]}"
}

peer_env() {
    local libs
    libs="$(lib_path)"
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# Prints the packages to unpack: the main ones, then every package that
# `apt-get install` would have to add for them (resolved by apt, alternatives
# included) and that dpkg does not list as installed.
wanted_packages() {
    local sim
    if ! sim="$(apt-get -s install --no-install-recommends "${main_pkgs[@]}" 2>&1)"; then
        [[ "$(id -u)" == 0 ]] || die "apt-get cannot resolve ${main_pkgs[*]} (run 'sudo apt-get update' once): $sim"
        say "apt-get update (the package lists are missing or old)" >&2
        apt-get update -qq >/dev/null || die "apt-get update failed"
        sim="$(apt-get -s install --no-install-recommends "${main_pkgs[@]}" 2>&1)" \
            || die "apt-get cannot resolve ${main_pkgs[*]}: $sim"
    fi
    printf '%s\n' "${main_pkgs[@]}"
    local pkg
    # "Inst NAME (VERSION ...)" is a new package; "Inst NAME [OLD] (NEW ...)"
    # an upgrade of one that is there, which is skipped.
    awk '/^Inst / && $3 !~ /^\[/ { sub(/:.*/, "", $2); print $2 }' <<<"$sim" | while read -r pkg; do
        [[ " ${main_pkgs[*]} " == *" $pkg "* ]] && continue
        is_installed "$pkg" && continue
        echo "$pkg"
    done
}

unpack_package() {
    local pkg="$1" dl deb
    dl="$(mktemp -d)"
    # apt-get warns when it downloads as root into a directory _apt cannot
    # write; that is harmless.
    if ! (cd "$dl" && apt-get download "$pkg" >"$dl/apt.log" 2>&1); then
        cat "$dl/apt.log" >&2
        rm -rf "$dl"
        die "apt-get download $pkg failed"
    fi
    deb="$(ls "$dl"/*.deb)"
    rm -rf "${peers_dir:?}/$pkg"
    mkdir -p "$peers_dir/$pkg"
    dpkg-deb -x "$deb" "$peers_dir/$pkg" || { rm -rf "$dl"; die "dpkg-deb -x $deb failed"; }
    dpkg-deb -f "$deb" Package Version | tr '\n' ' ' | sed 's/ $/\n/' >"$peers_dir/$pkg/.deb"
    rm -rf "$dl"
    say "unpacked $(sed 's/Package: //; s/ Version: / /' "$peers_dir/$pkg/.deb") into .tools/peers/$pkg"
}

# Every binary the peers run must find all its libraries.
check_libraries() {
    peer_env
    local f missing=""
    for f in "$nginx_bin" "$nchan_so" "$pushpin_bin/pushpin" "$pushpin_bin/pushpin-proxy" \
        "$pushpin_bin/pushpin-handler" "$condure_bin" "$zurl_bin"; do
        [[ -e "$f" ]] || die "$f is missing after unpacking"
        local out
        out="$(ldd "$f" 2>&1 | grep 'not found' || true)"
        [[ -n "$out" ]] && missing+="$f:"$'\n'"$out"$'\n'
    done
    [[ -z "$missing" ]] || die "libraries not found (unpack their packages into .tools/peers too):"$'\n'"$missing"
}

cmd_install() {
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
        die "apt-get and dpkg-deb are needed (Debian or Ubuntu)"
    fi
    command -v node >/dev/null 2>&1 || die "Node.js is needed (the Pushpin GRIP origin and the checks)"
    if [[ ! -x "$nats_bin" ]]; then
        "$repo/scripts/setup.sh" >/dev/null || die "scripts/setup.sh (nats-server) failed"
    fi
    mkdir -p "$peers_dir"
    local pkgs pkg new=0
    pkgs="$(wanted_packages)"
    for pkg in $pkgs; do
        if [[ -f "$peers_dir/$pkg/.deb" ]]; then
            continue
        fi
        unpack_package "$pkg"
        new=$((new + 1))
    done
    # Every package ever unpacked here, for the record (README, versions).
    for pkg in "$peers_dir"/*/.deb; do cat "$pkg"; done | sed 's/Package: //; s/ Version: / /' | sort >"$peers_dir/packages.txt"
    check_libraries
    [[ $new -eq 0 ]] && say "all present in .tools/peers ($(wc -l <"$peers_dir/packages.txt") packages)"
    say "installed; versions:"
    cmd_versions | sed 's/^/  /'
}

cmd_versions() {
    [[ -x "$nginx_bin" ]] || die "not installed: run bench/peers/peers.sh install"
    peer_env
    echo "nginx              $("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //') (Debian $(pkg_version nginx))"
    echo "nchan              $(pkg_version libnginx-mod-nchan) (Debian libnginx-mod-nchan)"
    echo "pushpin            $("$pushpin_bin/pushpin" --version 2>&1 | head -1) (Debian $(pkg_version pushpin))"
    echo "condure            $("$condure_bin" --version 2>&1 | head -1) (Debian $(pkg_version condure))"
    echo "zurl               $("$zurl_bin" --version 2>&1 | head -1) (Debian $(pkg_version zurl))"
    echo "nats-server        $("$nats_bin" --version 2>&1 | head -1)"
    echo "node (origin)      $(node --version)"
}

pkg_version() {
    sed 's/.* Version: //' "$peers_dir/$1/.deb" 2>/dev/null || echo "?"
}

# --- start / stop ------------------------------------------------------------

# Raises the open-files limit as far as the hard limit allows (the hard limit
# itself only as root with CAP_SYS_RESOURCE) and prints it.
raise_nofile() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    local n
    n="$(ulimit -n)"
    [[ "$n" == unlimited || "$n" -gt 65536 ]] && n=65536
    echo "$n"
}

# render TEMPLATE OUT KEY=VALUE...: replaces every @KEY@ in TEMPLATE.
render() {
    local template="$1" out="$2" kv args=()
    shift 2
    for kv in "$@"; do
        args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${args[@]}" "$template" >"$out"
}

# The start time of a process (field 22 of /proc/PID/stat), recorded with
# its PID so that `stop` never signals a process that merely reused the PID.
start_time() {
    [[ -r "/proc/$1/stat" ]] || return 1
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $20 }'
}

# record WORKDIR PID NAME [PARENT]: one line "PID START-TIME NAME [PARENT]"
# of WORKDIR/pids; PARENT is set for processes that a recorded process
# started (and stops) itself.
record() {
    local st
    st="$(start_time "$2")" || die "$3 (pid $2) is not running"
    echo "$2 $st $3${4:+ $4}" >>"$1/pids"
}

# record_children WORKDIR PID: records the children of PID, waiting up to
# 2 s for the first one to appear.
record_children() {
    local pid name kids=""
    for _ in $(seq 20); do
        kids="$(children_of "$2")"
        [[ -n "$kids" ]] && break
        sleep 0.1
    done
    [[ -n "$kids" ]] || die "pid $2 started no processes"
    while read -r pid name; do
        record "$1" "$pid" "$name" "$2"
    done <<<"$kids"
}

# The children of PID, as "pid name" lines.
children_of() {
    ps -o pid=,comm= --ppid "$1" 2>/dev/null || true
}

# wait_port PORT PID LOG: until 127.0.0.1:PORT accepts, or fail when PID dies.
wait_port() {
    local port="$1" pid="$2" log="$3"
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -20 "$log" >&2 || true
            die "pid $pid exited before port $port opened (log $log)"
        fi
        sleep 0.1
    done
    tail -20 "$log" >&2 || true
    die "port $port did not open within 10 s (log $log)"
}

start_nchan() {
    local port="$1" work="$2" nofile="$3"
    mkdir -p "$work/tmp"
    render "$here/nchan/nginx.conf.in" "$work/nginx.conf" \
        WORKDIR="$work" PORT="$port" NCHAN_MODULE="$nchan_so" NOFILE="$nofile"
    "$nginx_bin" -t -q -p "$work/" -c "$work/nginx.conf" -e "$work/error.log" \
        || die "nginx rejects $work/nginx.conf"
    setsid "$nginx_bin" -p "$work/" -c "$work/nginx.conf" -e "$work/error.log" >"$work/nginx.out" 2>&1 &
    local master=$!
    record "$work" "$master" nginx-master
    wait_port "$port" "$master" "$work/error.log"
    record_children "$work" "$master"
    cat >"$work/urls.env" <<EOF
PEER=nchan
SUB_WS=ws://127.0.0.1:$port/sub/{channel}
SUB_SSE=http://127.0.0.1:$port/sub/{channel}
SUB_POLL=http://127.0.0.1:$port/sub/{channel}
PUB_HTTP=http://127.0.0.1:$port/pub/{channel}
STATUS=http://127.0.0.1:$port/nchan_status
EOF
}

start_pushpin() {
    local port="$1" work="$2"
    local publish_port=$((port + 1)) origin_port=$((port + 2))
    local run="$work/run"
    mkdir -p "$run" "$work/log"
    # ZeroMQ ipc paths are limited to about 100 bytes.
    [[ ${#run} -le 70 ]] || die "WORKDIR is too long for ZeroMQ ipc socket paths: $work"
    render "$here/pushpin/zurl.conf.in" "$work/zurl.conf" RUNDIR="$run"
    render "$here/pushpin/pushpin.conf.in" "$work/pushpin.conf" \
        WORKDIR="$work" RUNDIR="$run" PORT="$port" PUBLISH_PORT="$publish_port" CONDURE_BIN="$condure_bin"
    # Every request goes to the origin; WebSocket connections as
    # WebSocket-over-HTTP.
    echo "* 127.0.0.1:$origin_port,over_http" >"$work/routes"

    setsid node "$here/pushpin/origin.mjs" "$origin_port" >"$work/origin.log" 2>&1 &
    local origin=$!
    record "$work" "$origin" grip-origin
    wait_port "$origin_port" "$origin" "$work/origin.log"

    setsid "$zurl_bin" --config="$work/zurl.conf" >"$work/zurl.log" 2>&1 &
    local zurl=$!
    record "$work" "$zurl" zurl

    # The runner finds pushpin-proxy and pushpin-handler on PATH.
    PATH="$pushpin_bin:$PATH" setsid "$pushpin_bin/pushpin" --config="$work/pushpin.conf" \
        >"$work/pushpin.log" 2>&1 &
    local runner=$!
    record "$work" "$runner" pushpin-runner
    wait_port "$port" "$runner" "$work/pushpin.log"
    wait_port "$publish_port" "$runner" "$work/pushpin.log"
    record_children "$work" "$runner"
    cat >"$work/urls.env" <<EOF
PEER=pushpin
SUB_WS=ws://127.0.0.1:$port/sub/{channel}
SUB_SSE=http://127.0.0.1:$port/sub/{channel}
SUB_POLL=http://127.0.0.1:$port/sub/{channel}
PUB_HTTP=http://127.0.0.1:$publish_port/publish/
ORIGIN=http://127.0.0.1:$origin_port
EOF
}

start_nats_ws() {
    local port="$1" work="$2"
    local client_port=$((port + 1))
    render "$here/nats-ws/nats.conf.in" "$work/nats.conf" WORKDIR="$work" PORT="$port" CLIENT_PORT="$client_port"
    setsid "$nats_bin" -c "$work/nats.conf" >"$work/nats-server.out" 2>&1 &
    local pid=$!
    record "$work" "$pid" nats-server
    wait_port "$port" "$pid" "$work/nats-server.log"
    wait_port "$client_port" "$pid" "$work/nats-server.log"
    cat >"$work/urls.env" <<EOF
PEER=nats-ws
SUB_WS=ws://127.0.0.1:$port
PUB_NATS=nats://127.0.0.1:$client_port
EOF
}

cmd_start() {
    [[ $# -eq 3 ]] || { usage >&2; exit 2; }
    local peer="$1" port="$2" work="$3"
    [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1024 && "$port" -le 65533 ]] || die "bad port: $port"
    mkdir -p "$work"
    work="$(cd "$work" && pwd)"
    [[ -s "$work/pids" ]] && die "$work/pids exists: a peer is running there (bench/peers/peers.sh stop $work)"
    [[ -x "$nginx_bin" && -x "$zurl_bin" ]] || die "not installed: run bench/peers/peers.sh install"
    peer_env
    local nofile
    nofile="$(raise_nofile)"
    local nports
    case "$peer" in
        nchan) nports=1 ;;
        pushpin) nports=3 ;;
        nats-ws) nports=2; [[ -x "$nats_bin" ]] || die "no $nats_bin: run scripts/setup.sh" ;;
        *) die "unknown peer: $peer (nchan, pushpin or nats-ws)" ;;
    esac
    # A server already there would answer wait_port for the new one.
    local p
    for ((p = port; p < port + nports; p++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            die "port $p is in use on 127.0.0.1 ($peer needs $port..$((port + nports - 1)))"
        fi
    done
    : >"$work/pids"
    # In a subshell with errexit of its own (an `if` would switch errexit
    # off inside it): a start that fails half-way stops what it had started.
    local rc
    set +e
    (
        set -e
        case "$peer" in
            nchan) start_nchan "$port" "$work" "$nofile" ;;
            pushpin) start_pushpin "$port" "$work" ;;
            nats-ws) start_nats_ws "$port" "$work" ;;
        esac
    )
    rc=$?
    set -e
    if [[ $rc -ne 0 ]]; then
        cmd_stop "$work" >/dev/null 2>&1 || true
        die "$peer did not start (logs in $work)"
    fi
    say "$peer started in $work (open files: $nofile); pids (pid start-time name [parent]):"
    sed 's/^/  /' "$work/pids"
    say "urls ($work/urls.env):"
    sed 's/^/  /' "$work/urls.env"
}

# Signals PID only while it is still the process recorded (same start time).
signal_recorded() {
    local sig="$1" pid="$2" st="$3" now
    now="$(start_time "$pid" 2>/dev/null)" || return 1
    [[ "$now" == "$st" ]] || return 1
    kill "-$sig" "$pid" 2>/dev/null
}

cmd_stop() {
    [[ $# -eq 1 ]] || { usage >&2; exit 2; }
    local work="$1"
    if [[ ! -s "$work/pids" ]]; then
        say "nothing recorded in $work/pids"
        return 0
    fi
    local pid st name parent
    # TERM to the processes started here, last first; the nginx master and
    # the pushpin runner stop their own children (a worker signalled
    # directly could be respawned).
    while read -r pid st name parent; do
        [[ -z "$parent" ]] && { signal_recorded TERM "$pid" "$st" || true; }
    done < <(tac "$work/pids")
    local left
    for _ in $(seq 50); do
        left=0
        while read -r pid st name parent; do
            [[ "$(start_time "$pid" 2>/dev/null)" == "$st" ]] && left=1
        done <"$work/pids"
        [[ $left -eq 0 ]] && break
        sleep 0.1
    done
    # Whatever is left, children included, after 5 s.
    while read -r pid st name parent; do
        if signal_recorded KILL "$pid" "$st"; then
            say "$name (pid $pid) did not stop within 5 s: killed"
        fi
    done <"$work/pids"
    mv "$work/pids" "$work/pids.stopped"
    say "stopped $(wc -l <"$work/pids.stopped") processes recorded in $work"
}

# --- check -------------------------------------------------------------------

# A base port with BASE..BASE+2 free on 127.0.0.1.
free_ports() {
    python3 - <<'EOF'
import random, socket
for _ in range(200):
    base = random.randint(20000, 59000)
    socks = []
    try:
        for p in range(base, base + 3):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    break
else:
    raise SystemExit("no free ports")
EOF
}

# Runs in a subshell of its own (cmd_check): check_work is global there, so
# that the EXIT trap still sees it after check_one returns.
check_one() {
    local peer="$1" port
    check_work="$(mktemp -d /tmp/peers-check.XXXXXX)"
    trap 'cmd_stop "$check_work" >/dev/null 2>&1 || true; rm -rf "$check_work"' EXIT
    local work="$check_work"
    port="$(free_ports)"
    cmd_start "$peer" "$port" "$work"
    node --experimental-websocket --no-warnings "$here/$peer/check.mjs" "$work/urls.env" \
        || { say "logs of $peer in $work:"; tail -n 20 "$work"/*.log "$work"/log/*.log >&2 2>/dev/null || true; return 1; }
    cmd_stop "$work"
}

cmd_check() {
    local peers=("$@") peer failed=()
    [[ ${#peers[@]} -eq 0 ]] && peers=(nchan pushpin nats-ws)
    for peer in "${peers[@]}"; do
        echo
        say "=== check $peer"
        # A subshell per peer: its EXIT trap stops that peer, also on
        # failure. Not in an `if`, which would switch errexit off inside it.
        local rc
        set +e
        (
            set -e
            check_one "$peer"
        )
        rc=$?
        set -e
        if [[ $rc -eq 0 ]]; then
            say "=== $peer: ok"
        else
            say "=== $peer: FAILED"
            failed+=("$peer")
        fi
    done
    echo
    if [[ ${#failed[@]} -gt 0 ]]; then
        say "FAILED: ${failed[*]}"
        return 1
    fi
    say "all checks passed (${peers[*]})"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    check) shift; cmd_check "$@" ;;
    versions) shift; cmd_versions ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
