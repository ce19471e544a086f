#!/usr/bin/env bash
# Starts, kills or stops one node of the Garage cluster made by
# scripts/garage-cluster-start.sh, on the node's own ports and data
# directories, so that a killed node comes back as the same member.
#
# Usage:
#   scripts/garage-cluster-node.sh start N [WORKDIR]   # start node N (1-3); waits for its S3 listener
#   scripts/garage-cluster-node.sh restart N [WORKDIR] # start, connect it with the running nodes, and
#                                                      # wait until every running node sees a healthy cluster
#   scripts/garage-cluster-node.sh kill N [WORKDIR]    # SIGKILL node N, as a crash would
#   scripts/garage-cluster-node.sh stop N [WORKDIR]    # SIGTERM, then SIGKILL after 10 s
#   scripts/garage-cluster-node.sh pid N [WORKDIR]     # print node N's pid (exit 1 when it is down)
#
# WORKDIR defaults to GARAGE_CLUSTER_WORKDIR. Each node keeps its pid in
# WORKDIR/nN/pid, so the pid of a restarted node is found there, not in the
# GARAGE_CLUSTER_PIDS printed at start. READY_TIMEOUT seconds (default 30)
# bounds every wait. stdout: nothing (pid: the pid); stderr: progress.
set -euo pipefail

usage() {
    echo "usage: $0 start|restart|kill|stop|pid N [WORKDIR]" >&2
    exit 2
}
[ $# -ge 2 ] || usage
ACTION=$1
NODE=$2
case "$NODE" in 1 | 2 | 3) ;; *) usage ;; esac
WORK=${3:-${GARAGE_CLUSTER_WORKDIR:-}}
[ -n "$WORK" ] || { echo "garage-cluster-node: GARAGE_CLUSTER_WORKDIR is not set" >&2; exit 2; }
DIR="$WORK/n$NODE"
CONF="$DIR/garage.toml"
[ -f "$CONF" ] || { echo "garage-cluster-node: no node $NODE in $WORK" >&2; exit 2; }
READY_TIMEOUT=${READY_TIMEOUT:-30}
GARAGE_BIN=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}

# The ports the start script chose for this node, one "name=port" a line.
port() { sed -n "s/^$1=//p" "$DIR/ports"; }

running_pid() {
    local pid
    pid=$(cat "$DIR/pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

wait_gone() { # wait_gone PID TENTHS
    for _ in $(seq 1 "$2"); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

wait_for() { # wait_for DESCRIPTION COMMAND...
    local what=$1 deadline=$(($(date +%s) + READY_TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        if ! running_pid >/dev/null; then
            echo "garage-cluster-node: node $NODE exited while waiting for $what" >&2
            tail -n 20 "$DIR/garage.log" >&2 || true
            exit 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "garage-cluster-node: node $NODE: timed out waiting for $what" >&2
            exit 1
        fi
        sleep 0.1
    done
}

start() {
    if pid=$(running_pid); then
        echo "garage-cluster-node: node $NODE is already running (pid $pid)" >&2
        exit 1
    fi
    RUST_LOG=${RUST_LOG:-garage=warn} setsid "$GARAGE_BIN" -c "$CONF" server \
        >>"$DIR/garage.log" 2>&1 </dev/null &
    echo $! >"$DIR/pid"
    echo "garage-cluster-node: node $NODE started, pid $!" >&2
    # Any answer from the S3 listener (an error for an unsigned request) means it is up.
    wait_for "its S3 listener" curl -s -o /dev/null "http://127.0.0.1:$(port s3)/"
}

# Connects this node and every other running node to each other, both
# ways: a restarted node finds its peers by itself, and they find it, but
# only after a reconnection delay of up to half a minute.
connect_peers() {
    local other pid
    for other in 1 2 3; do
        [ "$other" != "$NODE" ] || continue
        pid=$(cat "$WORK/n$other/pid" 2>/dev/null) || continue
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
        wait_for "a connection to node $other" \
            "$GARAGE_BIN" -c "$CONF" node connect "$(cat "$WORK/n$other/node_id")"
        wait_for "a connection from node $other" \
            "$GARAGE_BIN" -c "$WORK/n$other/garage.toml" node connect "$(cat "$DIR/node_id")"
        # /health answers 200 once a node reaches a quorum for every partition.
        wait_for "node $other to see a healthy cluster" \
            curl -sf "http://127.0.0.1:$(sed -n 's/^admin=//p' "$WORK/n$other/ports")/health"
    done
}

case "$ACTION" in
    start) start ;;
    restart)
        start
        connect_peers
        wait_for "a healthy cluster" curl -sf "http://127.0.0.1:$(port admin)/health"
        ;;
    kill)
        pid=$(running_pid) || { echo "garage-cluster-node: node $NODE is not running" >&2; exit 1; }
        kill -KILL "$pid"
        wait_gone "$pid" 50 || { echo "garage-cluster-node: node $NODE (pid $pid) survived SIGKILL" >&2; exit 1; }
        rm -f "$DIR/pid"
        echo "garage-cluster-node: node $NODE killed (pid $pid)" >&2
        ;;
    stop)
        if pid=$(running_pid); then
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid" 100 || kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 50 || true
        fi
        rm -f "$DIR/pid"
        ;;
    pid) running_pid ;;
    *) usage ;;
esac
