#!/usr/bin/env bash
# Runs the trust-boundary harnesses and prints their figures as one table:
# the model test under injected faults, the kill loop, the tamper matrix,
# fuzzing, the bad-input corpus and the three-node S3 cluster.
#
#   scripts/evidence.sh              # full size (hours: see below)
#   scripts/evidence.sh ci           # the sizes CI runs (minutes)
#   scripts/evidence.sh full kill fuzz   # only some harnesses
#
# Full size: 100,000 model operations at 5 % faults per backend, 1,000
# kills per backend (fs, redb, S3), every fuzz target for 600 s, the tamper
# matrix with 16 flipped bytes per item. Override with MODEL_OPS, KILLS,
# FUZZ_SECONDS and TAMPER_FLIPS.
#
# S3 harnesses need servers: the script starts a single Garage and a
# three-node Garage cluster on 127.0.0.1 (and stops them) unless
# IMAGECACHE_TEST_S3_URL / IMAGECACHE_TEST_S3_CLUSTER_URL are set.
#
# The exit status is 1 when a harness fails or a figure that counts damage
# (lost, corrupt served, invariant breaks, crashes, panics, ...) is not 0.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

size=${1:-full}
case "$size" in
ci | full) shift || true ;;
*) size=full ;;
esac
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(model kill tamper fuzz bad-input cluster)

work=$(mktemp -d "${TMPDIR:-/tmp}/imagecache-evidence.XXXXXX")
export IMAGECACHE_EVIDENCE_FILE="$work/evidence.txt"
: >"$IMAGECACHE_EVIDENCE_FILE"
failed=()

cleanup() {
    [ -n "${GARAGE_PID:-}" ] && scripts/garage-stop.sh >/dev/null 2>&1 || true
    [ -n "${GARAGE_CLUSTER_WORKDIR:-}" ] && scripts/garage-cluster-stop.sh "$GARAGE_CLUSTER_WORKDIR" >/dev/null 2>&1 || true
    return 0
}
trap cleanup EXIT

need_s3() {
    if [ -z "${IMAGECACHE_TEST_S3_URL:-}" ]; then
        eval "$(scripts/garage-start.sh)"
        export IMAGECACHE_TEST_S3_URL
    fi
    export IMAGECACHE_REQUIRE_S3=1
}

need_cluster() {
    if [ -z "${IMAGECACHE_TEST_S3_CLUSTER_URL:-}" ]; then
        eval "$(scripts/garage-cluster-start.sh)"
    fi
    export IMAGECACHE_REQUIRE_S3=1
}

# run NAME COMMAND...: runs one harness step, its output in the work dir.
run() {
    local name=$1
    shift
    printf '== %s: %s\n' "$name" "$*" >&2
    local started=$SECONDS
    if "$@" >"$work/$name.log" 2>&1; then
        printf '   done in %d s\n' $((SECONDS - started)) >&2
    else
        printf '   FAILED after %d s (log: %s)\n' $((SECONDS - started)) "$work/$name.log" >&2
        failed+=("$name")
    fi
}

if [ "$size" = full ]; then
    release=(--release)
    model_ops=${MODEL_OPS:-100000}
    kills=${KILLS:-1000}
    fuzz_seconds=${FUZZ_SECONDS:-600}
    flips=${TAMPER_FLIPS:-16}
else
    release=()
    model_ops=${MODEL_OPS:-}
    kills=${KILLS:-}
    fuzz_seconds=${FUZZ_SECONDS:-}
    flips=${TAMPER_FLIPS:-}
fi

for harness in "${harnesses[@]}"; do
    case "$harness" in
    model)
        if [ -n "$model_ops" ]; then
            run model env IMAGECACHE_MODEL_OPS="$model_ops" IMAGECACHE_MODEL_FAULT_RATE=0.05 \
                cargo test "${release[@]}" -p imagecache-engine --test model -- --nocapture
        else
            run model cargo test -p imagecache-engine --test model -- --nocapture
        fi
        ;;
    kill)
        need_s3
        if [ -n "$kills" ]; then
            for backend in fs redb s3; do
                run "kill-$backend" cargo run "${release[@]}" -p imagecache-examples --features s3 \
                    --example kill_loop -- "$backend" "$kills"
            done
        else
            run kill cargo test -p imagecache-examples --features s3 --test kill -- --nocapture
        fi
        ;;
    tamper)
        need_s3
        run tamper env ${flips:+IMAGECACHE_TAMPER_FLIPS=$flips} \
            cargo test -p imagecache-engine --test tamper -- --nocapture
        ;;
    fuzz)
        if [ -n "$fuzz_seconds" ]; then
            run fuzz scripts/fuzz.sh "$fuzz_seconds"
            # A script, not a cargo test: its lines are on its stdout only.
            grep -h '^evidence: ' "$work/fuzz.log" >>"$IMAGECACHE_EVIDENCE_FILE" || true
        else
            run fuzz cargo test -p imagecache-transfer --test fuzz_corpus -- --nocapture
        fi
        ;;
    bad-input)
        run bad-input-library cargo test -p imagecache-transfer --test bad_inputs -- --nocapture
        run bad-input-cli cargo test -p imagecache-cli --test bad_inputs -- --nocapture
        ;;
    cluster)
        need_cluster
        run cluster cargo test -p imagecache-engine --test s3_cluster -- --nocapture
        ;;
    *)
        echo "evidence: unknown harness $harness (model, kill, tamper, fuzz, bad-input, cluster)" >&2
        exit 2
        ;;
    esac
done

printf '\nevidence at %s size (logs in %s)\n' "$size" "$work"
status=0
awk -f scripts/evidence-report.awk "$IMAGECACHE_EVIDENCE_FILE" || status=1
if [ ${#failed[@]} -gt 0 ]; then
    printf '\nFAILED: %s\n' "${failed[*]}"
    status=1
fi
exit $status
