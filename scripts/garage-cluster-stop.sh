#!/usr/bin/env bash
# Stops every node of a cluster started by scripts/garage-cluster-start.sh
# (whatever pid each has now, restarted or not) and removes its work
# directory. Reads GARAGE_CLUSTER_WORKDIR or takes it as an argument:
#   scripts/garage-cluster-stop.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-${GARAGE_CLUSTER_WORKDIR:-}}
[ -n "$WORK" ] || { echo "garage-cluster-stop: GARAGE_CLUSTER_WORKDIR is not set" >&2; exit 1; }
[ -d "$WORK" ] || exit 0
for n in 1 2 3; do
    if [ -f "$WORK/n$n/garage.toml" ]; then
        scripts/garage-cluster-node.sh stop "$n" "$WORK" &
    fi
done
wait
case "$WORK" in
    */imagecache-garage-cluster.*) rm -rf "$WORK" ;;
    *) echo "garage-cluster-stop: left $WORK in place (not made by garage-cluster-start.sh)" >&2 ;;
esac
