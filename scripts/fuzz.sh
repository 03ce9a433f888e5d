#!/usr/bin/env bash
# Runs Herald's libFuzzer targets (fuzz/, see docs/fuzzing.md) one after
# another, niced and single-job so it shares the machine politely.
# Not part of CI or scripts/test.sh.
#
#   scripts/fuzz.sh                 smoke run: 30 s per target
#   scripts/fuzz.sh long            long run: 30 min per target
#   scripts/fuzz.sh <secs> [target…] that many seconds for the named targets
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Stable Rust is enough:
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags, and the
# runs use no sanitizer (`-s none`), which stable cannot build; Rust's own
# checks (bounds, overflow in debug assertions, panics) still apply.
# New corpus entries go to fuzz/corpus-generated/<target> (ignored by git);
# the hand-written seeds in fuzz/corpus/<target> are read, never written.
# A crash lands in fuzz/artifacts/<target>/ and stops that target's run.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo/fuzz"

case "${1:-smoke}" in
    smoke) secs=30 ;;
    long) secs=1800 ;;
    *[!0-9]*) echo "usage: $0 [smoke|long|<seconds>] [target…]" >&2; exit 64 ;;
    *) secs="$1" ;;
esac
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi

export RUSTC_BOOTSTRAP=1
nice -n 19 cargo fuzz build -O -s none

failed=()
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
    echo "==> $t: ${secs}s"
    mkdir -p "corpus-generated/$t"
    if ! nice -n 19 cargo fuzz run -O -s none "$t" "corpus-generated/$t" "corpus/$t" -- \
        -max_total_time="$secs" -jobs=1 -workers=1 -print_final_stats=1 \
        -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
        failed+=("$t")
        tail -n 40 "$log"
    fi
    # With -jobs, libFuzzer writes the job's own output to fuzz-<n>.log.
    grep -hE '^stat::number_of_executed_units|^stat::average_exec_per_sec|^Done [0-9]+ runs' \
        "$log" fuzz-*.log 2>/dev/null || true
    rm -f fuzz-*.log
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all targets ran clean"
