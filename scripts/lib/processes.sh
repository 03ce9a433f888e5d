# Shared by scripts/dev.sh and scripts/cluster.sh: starting the local
# processes, waiting for them, and stopping them all, in reverse order, on
# exit. The sourcing script sets `tool` (its name in messages), `run_dir`,
# `logs` and `repo`, and traps EXIT/INT/TERM/HUP to `cleanup`.

say() { echo "$tool: $*"; }
die() { echo "$tool: error: $*" >&2; exit 1; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pids=()
names=()

# start NAME CMD...: runs CMD in its own process group (setsid), so the
# terminal's Ctrl-C reaches only this script, which then stops the children
# in order and can signal anything they spawned.
start() {
    local name="$1"; shift
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" >"$logs/$name.log" 2>&1 </dev/null &
    else
        "$@" >"$logs/$name.log" 2>&1 </dev/null &
    fi
    pids+=("$!")
    names+=("$name")
    say "started $name (pid $!, log ${logs#"$repo"/}/$name.log)"
    printf '%s\n' "${pids[@]}" >"$run_dir/$tool.pids"
}

signal_child() { # signal_child SIG PID
    kill "-$1" -- "-$2" 2>/dev/null || kill "-$1" "$2" 2>/dev/null || true
}

stopping=0
cleanup() {
    local rc=$?
    (( stopping )) && return
    stopping=1
    trap '' INT TERM HUP
    if (( ${#pids[@]} )); then
        echo
        say "stopping..."
        local i pid
        # reverse start order: what depends on the edges, the edges (they
        # drain on SIGTERM), then NATS
        for (( i=${#pids[@]}-1; i>=0; i-- )); do
            pid="${pids[$i]}"
            kill -0 "$pid" 2>/dev/null || continue
            signal_child TERM "$pid"
            for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then
                say "${names[$i]} (pid $pid) did not stop within 12 s, killing it"
                signal_child KILL "$pid"
            fi
            wait "$pid" 2>/dev/null || true
        done
        rm -f "$run_dir/$tool.pids"
        say "stopped all (logs kept in ${logs#"$repo"/}/)"
    fi
    exit "$rc"
}

tail_log() {
    echo "----- last lines of ${logs#"$repo"/}/$1.log -----" >&2
    tail -n 30 "$logs/$1.log" >&2 || true
    echo "-----" >&2
}

# wait_http NAME PID URL: 200 from URL within the deadline, else log tail and exit 1.
wait_http() {
    local name="$1" pid="$2" url="$3" code
    while :; do
        code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null || true)"
        [[ "$code" == 200 ]] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$tool: error: $name exited during startup" >&2
            tail_log "$name"; exit 1
        fi
        if (( SECONDS >= deadline )); then
            echo "$tool: error: $name not ready after $deadline s ($url answered '${code:-nothing}')" >&2
            tail_log "$name"; exit 1
        fi
        sleep 0.5
    done
}

