#!/usr/bin/env bash
# netns.sh - ppbench remote-overhead on three "hosts": ppservers in network
# namespaces joined by a private bridge (tests/hosts/netns.sh), the client
# in a fourth, one node against all three in the same run.
#
#   bash bench/netns.sh [BUILD_DIR] [ppbench options...]   (root)
#
# BUILD_DIR defaults to build.  Each node gets -w NODE_WORKERS (default 1)
# workers.  Extra options go to ppbench (e.g. --quick, --json).  On a
# machine with fewer cores than the nodes' workers plus the client, the
# nodes share cores and the ratio says little: say which machine a figure
# comes from.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
build=$(cd "$build" && pwd) || exit 2
workers=${NODE_WORKERS:-1}
port=60000

# shellcheck source=../tests/hosts/netns.sh
. "$here/../tests/hosts/netns.sh"
if why=$(hosts_skip_reason); then
    echo "bench/netns.sh: cannot make namespaces here: $why" >&2
    exit 77
fi
T=$(mktemp -d /tmp/pp-bench-netns.XXXXXX)
trap 'hosts_down; rm -rf "$T"' EXIT
hosts_up 4 || exit 1

umask 077
head -c 32 /dev/urandom | base64 > "$T/secret"
printf '[general]\nsecret = %s\n' "$(cat "$T/secret")" > "$T/node.conf"
nodes=
for i in 1 2 3; do
    hosts_spawn "$i" "$T/node$i.log" "$build/net/ppserver" -c "$T/node.conf" \
        -i 0.0.0.0 -p "$port" -w "$workers" --cache-dir "$T/cache$i"
    nodes="$nodes${nodes:+,}$(hosts_addr "$i"):$port"
done
for i in 1 2 3; do # each says it listens
    for _ in $(seq 100); do
        grep -q "listening on" "$T/node$i.log" 2>/dev/null && break
        sleep 0.05
    done
done
echo "bench/netns.sh: nodes $nodes ($workers worker(s) each), client in $(hosts_ns 4)" >&2
ip netns exec "$(hosts_ns 4)" "$build/bench/ppbench" remote-overhead \
    --nodes "$nodes" --secret-file "$T/secret" "$@"
