#!/usr/bin/env bash
# Runs every check of the Herald workspace: formatting (rustfmt --check),
# clippy with warnings denied, a build of all targets, the Rust tests (cargo-nextest when installed, else cargo
# test; the edge fault tests need nginx, installed with apt-get when missing
# and running as root), the deployment files (scripts/validate-deploy.sh) and, when present,
# the browser SDK's tests in clients/js and its real-browser end-to-end tests
# in clients/js/e2e (needs Chromium; installed with apt-get when missing and
# running as root).
# Exits non-zero when anything fails.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

"$repo/scripts/setup.sh" --test-tools
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
export HERALD_NATS_SERVER="$repo/.tools/bin/nats-server"

say() { echo "test: $*"; }
die() { echo "test: error: $*" >&2; exit 1; }
# The edge fault tests run a real nginx in front of the edges
# (services/edge/tests/edge_faults.rs); installed here when missing.
# shellcheck source=lib/nginx.sh
source "$repo/scripts/lib/nginx.sh"
find_nginx "nginx is required by the edge fault tests"
export HERALD_NGINX="$nginx_bin"

failed=()
step() { echo; echo "==> $*"; }

step "cargo fmt --all -- --check"
if ! cargo fmt --all -- --check; then
    echo "error: code is not rustfmt-formatted (run: cargo fmt --all)"
    failed+=("rustfmt")
fi

# Every target, warnings denied. Tests may unwrap: clippy.toml allows it in
# #[test] functions and #[cfg(test)] modules, test files allow it at the top.
step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings || failed+=("clippy")

step "cargo build --workspace --all-targets"
if cargo build --workspace --all-targets; then
    if cargo nextest --version >/dev/null 2>&1; then
        step "cargo nextest run --workspace --no-fail-fast"
        cargo nextest run --workspace --no-fail-fast || failed+=("rust tests (nextest)")
    else
        step "cargo test --workspace (cargo-nextest not installed)"
        cargo test --workspace --no-fail-fast || failed+=("rust tests (cargo test)")
    fi
else
    failed+=("cargo build")
fi

# docker-compose.yml and k8s/ against their JSON schemas, the config files
# they share with scripts/cluster.sh, and the NATS partition mapping on a real
# cluster (no container engine needed).
step "scripts/validate-deploy.sh: compose, k8s, NATS and nginx config"
"$repo/scripts/validate-deploy.sh" || failed+=("deployment files")

if [[ -f clients/js/package.json ]]; then
    step "clients/js: npm install and npm test"
    command -v npm >/dev/null 2>&1 || { echo "error: npm not found (needed for clients/js)" >&2; exit 1; }
    # Explicit && chains: set -e does not apply inside a `( … ) ||` list.
    (
        cd clients/js || exit 1
        # `npm install` (not `npm ci`): npm 11 records only this platform's
        # optional packages (rollup's native builds) in the lock file, and
        # `npm ci` then refuses the lock as out of sync. `npm install` keeps
        # the locked versions and fills in the platform package.
        npm install --no-audit --no-fund || exit 1
        npm test
    ) || failed+=("clients/js tests")
fi

# Browser end-to-end tests of the SDK: real nats-server, two real edge nodes,
# the demo server and headless Chromium (clients/js/e2e).
e2e_tests() {
    local chromium="${HERALD_CHROMIUM:-/usr/bin/chromium}"
    if [[ ! -x "$chromium" ]]; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "Chromium not found at $chromium: installing the Debian package chromium"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq \
                && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
                || { echo "error: apt-get install chromium failed" >&2; return 1; }
        fi
        if [[ ! -x "$chromium" ]]; then
            echo "error: the browser tests need Chromium at $chromium: install it (Debian/Ubuntu: sudo apt-get install chromium) or set HERALD_CHROMIUM" >&2
            return 1
        fi
    fi
    command -v npm >/dev/null 2>&1 || { echo "error: npm not found (needed for clients/js/e2e)" >&2; return 1; }
    cargo build -p herald-edge || return 1
    if [[ -f clients/js/demo/package.json ]]; then
        (cd clients/js/demo && npm ci --no-audit --no-fund) || return 1
    fi
    (cd clients/js/e2e && npm ci --no-audit --no-fund) || return 1
    (
        cd clients/js/e2e
        HERALD_CHROMIUM="$chromium" HERALD_EDGE_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/herald-edge" npm test
    )
}
if [[ -f clients/js/e2e/package.json ]]; then
    step "clients/js/e2e: browser end-to-end tests (Chromium, nats-server, two edges)"
    e2e_tests || failed+=("browser e2e tests")
fi

echo
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all checks passed"
