#!/usr/bin/env bash
# Starts a throwaway single-node Garage (S3-compatible) server on 127.0.0.1 for
# the S3 backend's tests and benchmarks.
#
# Usage:
#   eval "$(scripts/garage-start.sh [WORKDIR])"
#   ... run tests: IMAGECACHE_TEST_S3_URL is now set ...
#   scripts/garage-stop.sh            # uses GARAGE_PID and GARAGE_WORKDIR
#
# WORKDIR defaults to a fresh temporary directory. Ports are chosen free at
# random unless S3_PORT, RPC_PORT or ADMIN_PORT are set. Other settings:
# GARAGE_BIN (default: garage on PATH, then ~/.cargo/bin/garage),
# BUCKET (default imagecache-test), READY_TIMEOUT seconds (default 30).
#
# stdout: shell assignments to eval (GARAGE_PID, GARAGE_WORKDIR, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP, AWS_BUCKET and
# IMAGECACHE_TEST_S3_URL). The URL carries the throwaway key in its
# access_key_id/secret_access_key parameters so that it stays usable when other
# AWS_* variables (for instance moto's) are set in the same environment; that
# form is meant for tests only. stderr: progress.
#
# Garage 2.x ignores If-None-Match/If-Match on PutObject, so this server is the
# "no conditional writes" case of the tests; scripts/moto-start.sh is the other.
set -euo pipefail

GARAGE_BIN=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
[ -x "$GARAGE_BIN" ] || {
    echo "garage-start: no garage binary (install it with: cargo install garage --locked)" >&2
    exit 1
}
BUCKET=${BUCKET:-imagecache-test}
READY_TIMEOUT=${READY_TIMEOUT:-30}

ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$ephemeral_low" -gt 12000 ] || ephemeral_low=32768
# Prints a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    local port
    for _ in $(seq 1 200); do
        # Below the kernel's ephemeral range: a port there may be the
        # local end of an outgoing connection, which a connect test does
        # not see and which makes the server's bind fail.
        port=$(( (RANDOM % (ephemeral_low - 10000)) + 10000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "garage-start: found no free port" >&2
    return 1
}

S3_PORT=${S3_PORT:-$(free_port)}
RPC_PORT=${RPC_PORT:-$(free_port)}
ADMIN_PORT=${ADMIN_PORT:-$(free_port)}

WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/imagecache-garage.XXXXXX")}
mkdir -p "$WORK/meta" "$WORK/data"
CONF="$WORK/garage.toml"
LOG="$WORK/garage.log"

rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

cat >"$CONF" <<EOF
metadata_dir = "$WORK/meta"
data_dir = "$WORK/data"
db_engine = "sqlite"
replication_factor = 1
metadata_fsync = false
data_fsync = false

rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(rand_hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
admin_token = "$(rand_hex 32)"
metrics_token = "$(rand_hex 32)"
EOF
chmod 600 "$CONF"

# Garage 2.x builds a one-node layout itself in single-node mode and imports
# the key and the bucket named in these variables.
KEY_ID="GK$(rand_hex 12)"
SECRET=$(rand_hex 32)
GARAGE_DEFAULT_ACCESS_KEY=$KEY_ID GARAGE_DEFAULT_SECRET_KEY=$SECRET GARAGE_DEFAULT_BUCKET=$BUCKET \
    RUST_LOG=${RUST_LOG:-garage=warn} setsid "$GARAGE_BIN" -c "$CONF" server --single-node --default-bucket \
    >"$LOG" 2>&1 </dev/null &
PID=$!
echo "garage-start: pid $PID, workdir $WORK, s3 port $S3_PORT" >&2

fail() {
    echo "garage-start: $*" >&2
    tail -n 30 "$LOG" >&2 || true
    kill "$PID" 2>/dev/null || true
    exit 1
}

deadline=$(( $(date +%s) + READY_TIMEOUT ))
wait_for() { # wait_for DESCRIPTION COMMAND...
    local what=$1
    shift
    until "$@" >/dev/null 2>&1; do
        kill -0 "$PID" 2>/dev/null || fail "server exited while waiting for $what"
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for $what"
        sleep 0.1
    done
}
wait_for "the admin health check" curl -sf "http://127.0.0.1:$ADMIN_PORT/health"
# Any answer from the S3 listener (an XML error for an unsigned request) means it is up.
wait_for "the S3 listener" curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"
# The bucket is imported asynchronously; a signed listing answers 200 once it
# exists (and 404 NoSuchBucket before).
bucket_ready() {
    curl -sf -o /dev/null --aws-sigv4 "aws:amz:garage:s3" --user "$KEY_ID:$SECRET" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
        "http://127.0.0.1:$S3_PORT/$BUCKET?list-type=2&max-keys=1"
}
wait_for "bucket $BUCKET" bucket_ready
echo "garage-start: ready" >&2

ENDPOINT="http://127.0.0.1:$S3_PORT"
cat <<EOF
GARAGE_PID=$PID
GARAGE_WORKDIR=$WORK
AWS_ACCESS_KEY_ID=$KEY_ID
AWS_SECRET_ACCESS_KEY=$SECRET
AWS_REGION=garage
AWS_ENDPOINT=$ENDPOINT
AWS_ALLOW_HTTP=true
AWS_BUCKET=$BUCKET
IMAGECACHE_TEST_S3_URL='s3://$BUCKET/?endpoint=$ENDPOINT&region=garage&allow_http=true&pool_max_idle_per_host=0&access_key_id=$KEY_ID&secret_access_key=$SECRET'
export GARAGE_PID GARAGE_WORKDIR AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ENDPOINT AWS_ALLOW_HTTP AWS_BUCKET IMAGECACHE_TEST_S3_URL
EOF
