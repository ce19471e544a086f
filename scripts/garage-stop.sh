#!/usr/bin/env bash
# Stops a server started by scripts/garage-start.sh and removes its work
# directory. Reads GARAGE_PID and GARAGE_WORKDIR from the environment (as
# eval "$(scripts/garage-start.sh)" leaves them) or takes them as arguments:
#   scripts/garage-stop.sh [PID [WORKDIR]]
set -euo pipefail
PID=${1:-${GARAGE_PID:-}}
WORK=${2:-${GARAGE_WORKDIR:-}}
[ -n "$PID" ] || { echo "garage-stop: GARAGE_PID is not set" >&2; exit 1; }
if kill "$PID" 2>/dev/null; then
    # A graceful shutdown can take more than a second.
    for _ in $(seq 1 100); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$PID" 2>/dev/null || true
fi
case "$WORK" in
    */imagecache-garage.*) rm -rf "$WORK" ;;
    "") ;;
    *) echo "garage-stop: left $WORK in place (not made by garage-start.sh)" >&2 ;;
esac
