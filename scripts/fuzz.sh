#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ with cargo-fuzz
# (libFuzzer), one target after the other, and one evidence line each:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     # default 600
#   evidence: fuzz target=config execs=1234567 crashes=0
#
# Installs cargo-fuzz and the nightly toolchain when they are missing.
# Each target starts from its committed corpus (fuzz/corpus/<target>/,
# read only) and keeps what it finds in fuzz/work/<target>/; crashes,
# timeouts and out-of-memory inputs land in fuzz/artifacts/<target>/.
# With FUZZ_MERGE=1, what a run found that covers new edges is then merged
# into the committed corpus (libFuzzer's -merge=1, edges only).
#
# Environment: FUZZ_MERGE, FUZZ_TARGETS (space-separated, default all),
# FUZZ_TARGET_DIR (default fuzz/target), FUZZ_SANITIZER (default address;
# none runs faster), FUZZ_TIMEOUT (seconds one input may take, default 30).
# Exits 1 when any target found a crash.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-600}
case "$seconds" in
    '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac
export PATH="$HOME/.cargo/bin:$PATH"
target_dir=${FUZZ_TARGET_DIR:-target}
sanitizer=${FUZZ_SANITIZER:-address}
timeout=${FUZZ_TIMEOUT:-30}

log() { printf '\n== %s\n' "$*" >&2; }

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
log "building the fuzz targets (sanitizer: $sanitizer)"
cargo +nightly fuzz build --sanitizer "$sanitizer" --target-dir "$target_dir"

# Counts the artifacts (crash-, timeout-, oom-, leak-…) of one target.
artifacts() {
    if [ -d "artifacts/$1" ]; then find "artifacts/$1" -type f | wc -l; else echo 0; fi
}

status=0
for target in $targets; do
    mkdir -p "work/$target" "corpus/$target"
    before=$(artifacts "$target")
    output=$(mktemp)
    log "fuzzing $target for ${seconds}s"
    # A crash stops libFuzzer with a failure status; the count below says so.
    cargo +nightly fuzz run --sanitizer "$sanitizer" --target-dir "$target_dir" \
        "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 \
        >"$output" 2>&1 || true
    tail -n 5 "$output" >&2
    # libFuzzer ends a full run with "Done N runs in S second(s)"; a run cut
    # short by a crash has only its last "#N ..." status line.
    execs=$(sed -n 's/^Done \([0-9][0-9]*\) runs in .*/\1/p' "$output" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$output" | tail -n 1)
    fi
    crashes=$(($(artifacts "$target") - before))
    rm -f "$output"
    [ "$crashes" -eq 0 ] || status=1
    echo "evidence: fuzz target=$target execs=${execs:-0} crashes=$crashes"
    if [ -n "${FUZZ_MERGE:-}" ]; then
        log "merging new coverage of $target into corpus/$target"
        cargo +nightly fuzz run --sanitizer "$sanitizer" --target-dir "$target_dir" \
            "$target" "corpus/$target" "work/$target" -- -merge=1 -use_counters=0 \
            2>&1 | grep 'MERGE-OUTER: .* new files' >&2
    fi
done
exit "$status"
