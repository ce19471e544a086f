#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, starts
# the S3 servers on 127.0.0.1 (a single Garage, moto, and a three-node
# Garage cluster whose nodes the cluster test kills and restarts), runs the
# quality gates and the whole test suite, and stops the servers again.
#
#   scripts/test.sh            # everything, as CI runs it
#   IMAGECACHE_SKIP_S3=1 scripts/test.sh   # no S3 servers (S3 cases say "skipped")
#
# Installs, once per machine: garage (cargo install garage --locked, 10-20
# minutes on 2 cores), moto (pip), skopeo, umoci, buildah and podman
# (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

log() { printf '\n== %s\n' "$*" >&2; }

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

install_tools() {
    local tool missing=""
    for tool in skopeo umoci buildah podman; do
        command -v "$tool" >/dev/null || missing="$missing $tool"
    done
    if [ -n "$missing" ]; then
        log "installing$missing (Debian packages)"
        if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
        $sudo apt-get update -qq || true
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    if [ -z "${IMAGECACHE_SKIP_S3:-}" ]; then
        if ! command -v garage >/dev/null; then
            log "installing garage (cargo install garage --locked; this takes a while)"
            cargo install garage --locked --quiet
        fi
        if ! command -v moto_server >/dev/null; then
            log "installing moto (pip)"
            python3 -m pip install --quiet 'moto[server]'
        fi
    fi
}

servers=()
stop_servers() {
    for pid in "${servers[@]:-}"; do
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    [ -n "${GARAGE_WORKDIR:-}" ] && rm -rf "$GARAGE_WORKDIR"
    [ -n "${MOTO_WORKDIR:-}" ] && rm -rf "$MOTO_WORKDIR"
    # The cluster's nodes change pids when the cluster test restarts them;
    # its stop script finds the current ones.
    [ -n "${GARAGE_CLUSTER_WORKDIR:-}" ] && scripts/garage-cluster-stop.sh "$GARAGE_CLUSTER_WORKDIR"
    return 0
}
trap stop_servers EXIT

start_servers() {
    [ -z "${IMAGECACHE_SKIP_S3:-}" ] || { log "S3 servers skipped (IMAGECACHE_SKIP_S3 set)"; return; }
    log "starting garage on 127.0.0.1"
    eval "$(scripts/garage-start.sh)"
    servers+=("$GARAGE_PID")
    log "starting moto on 127.0.0.1"
    eval "$(scripts/moto-start.sh)"
    servers+=("$MOTO_PID")
    log "starting a three-node garage cluster on 127.0.0.1"
    eval "$(scripts/garage-cluster-start.sh)"
    export IMAGECACHE_TEST_S3_URL IMAGECACHE_TEST_S3_CONDITIONAL_URL
    export IMAGECACHE_REQUIRE_S3=1
}

install_tools
# skopeo, umoci, buildah and podman are installed now: the real-image tests
# must not skip.
export IMAGECACHE_REQUIRE_TOOLS=1
start_servers

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
log "cargo test"
# The evidence harnesses (model test, kill loop, tamper matrix, ...) append
# their figures here; they are printed as one table at the end.
evidence=$(mktemp)
export IMAGECACHE_EVIDENCE_FILE=$evidence
cargo test --workspace --all-features
# cargo hides what passing tests print, so show here, per backend, which
# conformance cases were skipped and why, with each backend's summary line.
log "conformance per backend (skipped cases and why)"
scratch=$(mktemp -d)
for url in "fs://$scratch/fs" "redb://$scratch/store.redb" "memory://" \
    ${IMAGECACHE_TEST_S3_URL:+"$IMAGECACHE_TEST_S3_URL"} \
    ${IMAGECACHE_TEST_S3_CONDITIONAL_URL:+"$IMAGECACHE_TEST_S3_CONDITIONAL_URL"}; do
    # The query of an S3 URL carries test credentials: never print it.
    printf '%s\n' "${url%%\?*}"
    "${CARGO_TARGET_DIR:-target}/debug/imagecache" --quiet --store "$url" conformance | grep -E 'skipped \(|passed, ' | sed 's/^/    /'
done
rm -rf "$scratch"

log "cargo doc"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --all-features --quiet
log "evidence figures of this run (full size: scripts/evidence.sh full)"
# The tests decide pass or fail (a harness fails on anything outside its
# documented gaps); this table shows the figures, and names any figure
# that counts damage and is not 0.
awk -f scripts/evidence-report.awk "$evidence" || log "figures above that count damage are not all 0: see each harness's documented gaps"
rm -f "$evidence"
log "all green"
