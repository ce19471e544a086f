#!/usr/bin/env bash
# Starts a throwaway moto S3 server on 127.0.0.1 for the S3 backend's tests.
# moto honours conditional writes (If-None-Match), so it is the "conditional
# writes" case of the tests; Garage (scripts/garage-start.sh) is the other.
#
# Usage:
#   eval "$(scripts/moto-start.sh [WORKDIR])"
#   ... run tests: IMAGECACHE_TEST_S3_CONDITIONAL_URL is now set ...
#   kill "$MOTO_PID"; rm -rf "$MOTO_WORKDIR"      # or scripts/moto-stop.sh
#
# Install moto with: pip install 'moto[server]'. MOTO_PORT picks the port
# (default: a free one), BUCKET the bucket (default imagecache-test),
# READY_TIMEOUT the seconds to wait (default 30).
#
# stdout: shell assignments to eval (MOTO_PID, MOTO_WORKDIR, MOTO_ENDPOINT and
# IMAGECACHE_TEST_S3_CONDITIONAL_URL). moto accepts any credentials; the URL
# carries a fixed test key in its access_key_id/secret_access_key parameters
# so that it works whatever AWS_* variables the environment holds (test use
# only). stderr: progress.
set -euo pipefail

MOTO_BIN=${MOTO_BIN:-$(command -v moto_server || true)}
[ -n "$MOTO_BIN" ] || {
    echo "moto-start: no moto_server on PATH (install it with: pip install 'moto[server]')" >&2
    exit 1
}
BUCKET=${BUCKET:-imagecache-test}
READY_TIMEOUT=${READY_TIMEOUT:-30}

ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$ephemeral_low" -gt 12000 ] || ephemeral_low=32768
# Prints a TCP port on 127.0.0.1 below the kernel's ephemeral range (where
# an outgoing connection may hold a port a connect test does not see)
# that nothing listens on right now.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$(( (RANDOM % (ephemeral_low - 10000)) + 10000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "moto-start: found no free port" >&2
    return 1
}
PORT=${MOTO_PORT:-$(free_port)}
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/imagecache-moto.XXXXXX")}
LOG="$WORK/moto.log"

setsid "$MOTO_BIN" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 </dev/null &
PID=$!
echo "moto-start: pid $PID, port $PORT, log $LOG" >&2

ENDPOINT="http://127.0.0.1:$PORT"
deadline=$(( $(date +%s) + READY_TIMEOUT ))
until curl -s -o /dev/null "$ENDPOINT/"; do
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "moto-start: server exited" >&2
        tail -n 30 "$LOG" >&2 || true
        exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "moto-start: timed out" >&2
        kill "$PID" 2>/dev/null || true
        exit 1
    fi
    sleep 0.1
done
curl -sf -X PUT "$ENDPOINT/$BUCKET" >/dev/null || {
    echo "moto-start: could not create bucket $BUCKET" >&2
    kill "$PID" 2>/dev/null || true
    exit 1
}
echo "moto-start: ready" >&2

cat <<OUT
MOTO_PID=$PID
MOTO_WORKDIR=$WORK
MOTO_ENDPOINT=$ENDPOINT
IMAGECACHE_TEST_S3_CONDITIONAL_URL='s3://$BUCKET/?endpoint=$ENDPOINT&region=us-east-1&allow_http=true&access_key_id=testing&secret_access_key=testing'
export MOTO_PID MOTO_WORKDIR MOTO_ENDPOINT IMAGECACHE_TEST_S3_CONDITIONAL_URL
OUT
