#!/usr/bin/env bash
# Starts a throwaway three-node Garage cluster on 127.0.0.1 (replication
# factor 3, consistent mode: reads and writes need two nodes of three) with
# one bucket and one key, for the tests of what a shared S3 store does when
# nodes fail.
#
# Usage:
#   eval "$(scripts/garage-cluster-start.sh [WORKDIR])"
#   ... run tests: IMAGECACHE_TEST_S3_CLUSTER_URL is now set ...
#   scripts/garage-cluster-node.sh kill 2      # crash a node; `restart 2` brings it back
#   scripts/garage-cluster-stop.sh             # uses GARAGE_CLUSTER_WORKDIR
#
# WORKDIR defaults to a fresh temporary directory; node N lives in
# WORKDIR/nN (config, data, metadata, log, pid, ports, node_id). Every
# node gets three free ports chosen at random (S3, RPC, admin) below the
# kernel's ephemeral port range, so that they are still free when a node
# restarts. Other settings: GARAGE_BIN, BUCKET (default imagecache-test),
# READY_TIMEOUT seconds (default 30).
#
# stdout: shell assignments to eval:
#   GARAGE_CLUSTER_WORKDIR            the work directory (what the node and stop scripts need)
#   GARAGE_CLUSTER_PIDS               the three pids at start ("p1 p2 p3"; after a
#                                     restart, WORKDIR/nN/pid has the current one)
#   GARAGE_CLUSTER_ENDPOINTS          the three S3 endpoints ("http://127.0.0.1:P1 …")
#   GARAGE_CLUSTER_ENDPOINT1..3       the same, one by one
#   IMAGECACHE_TEST_S3_CLUSTER_URL    an s3:// URL for the S3 backend, through node 1
# The URL carries the throwaway key in its access_key_id/secret_access_key
# parameters (test use only), and pool_idle=0 as the single-node script's
# does. stderr: progress.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE_SCRIPT="$PWD/scripts/garage-cluster-node.sh"

GARAGE_BIN=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
[ -x "$GARAGE_BIN" ] || {
    echo "garage-cluster-start: no garage binary (install it with: cargo install garage --locked)" >&2
    exit 1
}
export GARAGE_BIN
BUCKET=${BUCKET:-imagecache-test}
READY_TIMEOUT=${READY_TIMEOUT:-30}

taken=" "
# Ports are taken below the kernel's range of ephemeral ports: a killed
# node must get its ports back when it restarts, and a port in that range
# may meanwhile be the local end of some outgoing connection.
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$ephemeral_low" -gt 12000 ] || ephemeral_low=32768
# Sets PORT to a TCP port on 127.0.0.1 that nothing listens on and that
# this script has not handed out yet (a variable, not output: a command
# substitution would run in a subshell and forget what was handed out).
pick_port() {
    local port
    for _ in $(seq 1 200); do
        port=$(((RANDOM % (ephemeral_low - 10000)) + 10000))
        case "$taken" in *" $port "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            taken="$taken$port "
            PORT=$port
            return 0
        fi
    done
    echo "garage-cluster-start: found no free port" >&2
    return 1
}

rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/imagecache-garage-cluster.XXXXXX")}
RPC_SECRET=$(rand_hex 32)
ADMIN_TOKEN=$(rand_hex 32)

# Writes node N's directories, port list and configuration.
write_node() {
    local n=$1 dir="$WORK/n$1" s3 rpc admin
    mkdir -p "$dir/meta" "$dir/data"
    pick_port; s3=$PORT
    pick_port; rpc=$PORT
    pick_port; admin=$PORT
    printf 's3=%s\nrpc=%s\nadmin=%s\n' "$s3" "$rpc" "$admin" >"$dir/ports"
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
metadata_fsync = false
data_fsync = false

rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$RPC_SECRET"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$ADMIN_TOKEN"
EOF
    chmod 600 "$dir/garage.toml"
}

port_of() { sed -n "s/^$2=//p" "$WORK/n$1/ports"; }
g() { local n=$1; shift; "$GARAGE_BIN" -c "$WORK/n$n/garage.toml" "$@"; }

fail() {
    echo "garage-cluster-start: $*" >&2
    for n in 1 2 3; do
        [ -f "$WORK/n$n/garage.log" ] && tail -n 10 "$WORK/n$n/garage.log" >&2
        "$NODE_SCRIPT" stop "$n" "$WORK" 2>/dev/null || true
    done
    exit 1
}

retry() { # retry DESCRIPTION COMMAND...: until it succeeds or READY_TIMEOUT passes
    local what=$1 deadline=$(($(date +%s) + READY_TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for $what"
        sleep 0.2
    done
}

for n in 1 2 3; do write_node "$n"; done
for n in 1 2 3; do "$NODE_SCRIPT" start "$n" "$WORK" || fail "node $n did not start"; done
echo "garage-cluster-start: workdir $WORK" >&2

# Join nodes 2 and 3 to node 1, then give each a zone of its own so that
# every partition keeps a copy on every node.
for n in 1 2 3; do
    retry "the id of node $n" g "$n" node id -q
    # id@address, for the node script to reconnect a restarted node.
    g "$n" node id -q 2>/dev/null >"$WORK/n$n/node_id"
done
for n in 2 3; do
    retry "node 1 to connect to node $n" g 1 node connect "$(cat "$WORK/n$n/node_id")"
done
for n in 1 2 3; do
    id=$(cut -d@ -f1 "$WORK/n$n/node_id")
    retry "the layout of node $n" g 1 layout assign -z "dc$n" -c 1G "$id"
done
retry "the layout to apply" g 1 layout apply --version 1
for n in 1 2 3; do
    retry "node $n to see a healthy cluster" curl -sf "http://127.0.0.1:$(port_of "$n" admin)/health"
done

KEY_ID="GK$(rand_hex 12)"
SECRET=$(rand_hex 32)
retry "the key import" g 1 key import --yes -n imagecache-test "$KEY_ID" "$SECRET"
retry "bucket $BUCKET" g 1 bucket create "$BUCKET"
retry "the key's permissions" g 1 bucket allow --read --write --owner "$BUCKET" --key "$KEY_ID"

# A signed listing answers 200 on every node once the bucket and the key
# have reached it.
bucket_ready() {
    curl -sf -o /dev/null --aws-sigv4 "aws:amz:garage:s3" --user "$KEY_ID:$SECRET" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
        "http://127.0.0.1:$1/$BUCKET?list-type=2&max-keys=1"
}
endpoints=""
pids=""
for n in 1 2 3; do
    s3=$(port_of "$n" s3)
    retry "bucket $BUCKET on node $n" bucket_ready "$s3"
    endpoints="$endpoints${endpoints:+ }http://127.0.0.1:$s3"
    pids="$pids${pids:+ }$(cat "$WORK/n$n/pid")"
done
echo "garage-cluster-start: ready (pids $pids)" >&2

set -- $endpoints
cat <<EOF
GARAGE_CLUSTER_WORKDIR=$WORK
GARAGE_CLUSTER_PIDS='$pids'
GARAGE_CLUSTER_ENDPOINTS='$endpoints'
GARAGE_CLUSTER_ENDPOINT1=$1
GARAGE_CLUSTER_ENDPOINT2=$2
GARAGE_CLUSTER_ENDPOINT3=$3
IMAGECACHE_TEST_S3_CLUSTER_URL='s3://$BUCKET/?endpoint=$1&region=garage&allow_http=true&pool_idle=0&access_key_id=$KEY_ID&secret_access_key=$SECRET'
export GARAGE_CLUSTER_WORKDIR GARAGE_CLUSTER_PIDS GARAGE_CLUSTER_ENDPOINTS GARAGE_CLUSTER_ENDPOINT1 GARAGE_CLUSTER_ENDPOINT2 GARAGE_CLUSTER_ENDPOINT3 IMAGECACHE_TEST_S3_CLUSTER_URL
EOF
