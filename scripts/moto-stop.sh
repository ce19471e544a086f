#!/usr/bin/env bash
# Stops a server started by scripts/moto-start.sh and removes its work
# directory: scripts/moto-stop.sh [PID [WORKDIR]] (defaults: MOTO_PID, MOTO_WORKDIR).
set -euo pipefail
PID=${1:-${MOTO_PID:-}}
WORK=${2:-${MOTO_WORKDIR:-}}
[ -n "$PID" ] || { echo "moto-stop: MOTO_PID is not set" >&2; exit 1; }
if kill "$PID" 2>/dev/null; then
    for _ in $(seq 1 50); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$PID" 2>/dev/null || true
fi
case "$WORK" in
    */imagecache-moto.*) rm -rf "$WORK" ;;
    *) ;;
esac
