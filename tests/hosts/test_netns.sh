#!/bin/bash
# test_netns.sh BUILD_DIR - authenticated discovery across real hosts,
# made of network namespaces on a private bridge (netns.sh).
#
#   ns 1-3  ppserver -a -b BCAST, one worker each, started first
#   ns 4    ppserver started by the client's hook when 5000 jobs are done
#   ns 5    ppserver of another cluster (another secret): never joins
#   ns 6    the client (disc_client): finds nodes only by broadcast, runs
#           10000 jobs, all remote; at 3000 done a hook SIGKILLs every
#           process of ns 1 (the node "host" dies)
#   ns 7    the attacker (disc_forge): captures node 2's beacons, replays
#           them, forges beacons under a wrong secret, and runs a decoy TCP
#           listener at the ports those name
#
# Passes when every job is called back exactly once with its right result
# and none failed, node 4 joined by its beacon (within 5 s) and ran jobs,
# node 1 ended GONE, neither the attacker's address nor node 5's is among
# the client's nodes, the decoy saw no connection, the surviving daemons
# stop cleanly on SIGTERM and nothing is left in any namespace.  Needs
# root; where network namespaces cannot be made it prints why and exits
# 77 (skipped).  Everything it sends stays on the private bridge.
#
# Environment: NETNS_KEEP=1 keeps the logs (the path is printed);
# NETNS_JOBS=N runs N jobs instead of 10000; NETNS_CONTROL=1 gives the
# attacker the real secret, a self-check under which the test must FAIL.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/netns.sh"

BUILD=${1:?usage: test_netns.sh BUILD_DIR}
PPSERVER=${PPSERVER:-$BUILD/net/ppserver}
CLIENT=${DISC_CLIENT:-$BUILD/tests/hosts/disc_client}
FORGE=${DISC_FORGE:-$BUILD/tests/hosts/disc_forge}
JOBS=${NETNS_JOBS:-10000}
P=60000          # every node's TCP port = the discovery UDP port (each is its own host)
DPORT=47001      # the port forged beacons announce (the decoy listens there)

if reason=$(hosts_skip_reason); then
    echo "SKIP: $reason"
    exit 77
fi
for f in "$PPSERVER" "$CLIENT" "$FORGE"; do
    if [ ! -x "$f" ]; then
        echo "FAIL: $f is not built"
        exit 1
    fi
done

T0=$EPOCHREALTIME
FAILS=0
T=$(mktemp -d "/tmp/pp-netns-$$.XXXXXX") # a run killed by SIGKILL: the next run removes it
HOSTS_STALE_GLOB='/tmp/pp-netns-*.*/'
declare -A NODE_PID

say() { echo "test_netns: $*"; }
fail() {
    echo "test_netns: FAIL: $*"
    FAILS=$((FAILS + 1))
}
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

cleanup() {
    local rc=$? t=$EPOCHREALTIME
    trap - EXIT INT TERM HUP
    if ! hosts_down; then
        echo "test_netns: FAIL: teardown found processes left behind or namespaces it could not delete (above)"
        rc=1
    fi
    say "teardown: $(since "$t") s"
    if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
        for f in "$T"/*.log; do
            [ -f "$f" ] || continue
            echo "----- $(basename "$f") (last 40 lines)"
            tail -n 40 "$f"
        done
    fi
    if [ -n "${NETNS_KEEP:-}" ]; then
        say "logs kept in $T"
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# wait_line FILE REGEX SECONDS: true once a line of FILE matches.
wait_line() {
    local end=$((SECONDS + $3))
    while [ $SECONDS -le $end ]; do
        grep -Eq "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# wait_exit PID SECONDS: the exit status of a child, 124 if it is still
# running after SECONDS (left running).
wait_exit() {
    local end=$((SECONDS + $2))
    while hosts_alive "$1"; do
        [ $SECONDS -ge $end ] && return 124
        sleep 0.05
    done
    wait "$1"
}

hex_secret() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# ---------------------------------------------------------------- hosts
t=$EPOCHREALTIME
if ! hosts_up 7; then
    fail "cannot make the namespaces"
    exit 1
fi
A=()
for i in 1 2 3 4 5 6 7; do A[i]=$(hosts_addr "$i"); done
EVIL=${A[7]}
say "hosts: 7 namespaces on $HOSTS_NET.0/24 (broadcast $HOSTS_BCAST), bridge $HOSTS_BR in $HOSTS_SW: $(since "$t") s"
say "nodes ${A[1]} ${A[2]} ${A[3]} (first), ${A[4]} (mid-run), ${A[5]} (other secret); client ${A[6]}; attacker $EVIL"

# ---------------------------------------------------------------- secrets
SECRET=$(hex_secret)
OTHER=$(hex_secret)
(
    umask 077
    for i in 1 2 3 4; do printf '[general]\nsecret = %s\n' "$SECRET" >"$T/node$i.conf"; done
    printf '[general]\nsecret = %s\n' "$OTHER" >"$T/node5.conf"
    printf '%s\n' "$SECRET" >"$T/client.secret"
    if [ -n "${NETNS_CONTROL:-}" ]; then
        # Self-check of the test: the attacker gets the real secret, so its
        # "forged" beacon is genuine and the test must FAIL (the client adds
        # the attacker's address and connects to the decoy).
        printf '%s\n' "$SECRET" >"$T/evil.secret"
    else
        hex_secret >"$T/evil.secret"
    fi
)
unset SECRET OTHER

start_node() { # I
    hosts_spawn "$1" "$T/node$1.log" "$PPSERVER" -c "$T/node$1.conf" -d -a -b "$HOSTS_BCAST" \
        -i 0.0.0.0 -p "$P" -w 1 --cache-dir "$T/cache$1"
    NODE_PID[$1]=$HOSTS_PID
}

# ---------------------------------------------------------------- node 2's first beacon, captured
hosts_spawn 7 "$T/capture1.log" "$FORGE" capture "$P" "$T/beacon-old.bin" "${A[2]}" 15000
CAP1=$HOSTS_PID
wait_line "$T/capture1.log" 'capture bound' 10 || fail "capture did not start"

# ---------------------------------------------------------------- nodes 1-3 and 5
t=$EPOCHREALTIME
for i in 1 2 3 5; do start_node "$i"; done
disown "${NODE_PID[1]}" # it is SIGKILLed on purpose: no "Killed" notice from bash
for i in 1 2 3 5; do
    wait_line "$T/node$i.log" "ppserver: listening on 0\.0\.0\.0:$P" 10 ||
        fail "node $i (${A[$i]}) did not start listening"
done
say "nodes 1-3 and 5 listening: $(since "$t") s"
if [ "$FAILS" != 0 ]; then exit 1; fi
wait_exit "$CAP1" 15 || fail "no beacon of node 2 captured before the run (capture1.log)"
grep -h 'captured' "$T/capture1.log" | sed 's/^/test_netns:   /'

# ---------------------------------------------------------------- the decoy
hosts_spawn 7 "$T/decoy.log" "$FORGE" decoy "$P,$DPORT" 240000
DECOY=$HOSTS_PID
wait_line "$T/decoy.log" 'decoy listening' 10 || fail "decoy did not start"

# ---------------------------------------------------------------- hooks
cat >"$T/hook_kill1.sh" <<EOF
# Node 1's host dies: every process in its namespace, stopped then killed
# (so that none of them can say goodbye first).
. "$HERE/netns.sh"
ns=\$(hosts_ns 1)
pids=\$(ip netns pids "\$ns" | tr '\n' ' ')
[ -n "\$pids" ] || { echo "hook: nothing runs in \$ns"; exit 1; }
kill -STOP \$pids
kill -KILL \$pids
echo "hook: SIGKILLed every process of node 1 (\$ns): \$pids"
EOF
cat >"$T/hook_start4.sh" <<EOF
# Node 4's host comes up mid-run.
. "$HERE/netns.sh"
hosts_spawn 4 "$T/node4.log" "$PPSERVER" -c "$T/node4.conf" -d -a -b "$HOSTS_BCAST" \\
    -i 0.0.0.0 -p "$P" -w 1 --cache-dir "$T/cache4"
echo "\$HOSTS_PID" >"$T/node4.pid"
for k in \$(seq 200); do
    grep -q "ppserver: listening on 0.0.0.0:$P" "$T/node4.log" && {
        echo "hook: node 4 (pid \$HOSTS_PID) listening"; exit 0; }
    sleep 0.05
done
echo "hook: node 4 did not start"
exit 1
EOF

# ---------------------------------------------------------------- the client
t=$EPOCHREALTIME
hosts_spawn 6 "$T/client.log" "$CLIENT" --secret-file "$T/client.secret" --port "$P" \
    --broadcast "$HOSTS_BCAST" --jobs "$JOBS" --expect-nodes 3 --discover-ms 20000 \
    --hook-at $((JOBS * 3 / 10)) "bash $T/hook_kill1.sh" \
    --hook-at $((JOBS / 2)) "bash $T/hook_start4.sh" \
    --wait-node-at $((JOBS / 2)) "${A[4]}" 5000 \
    --run-ms 120000 --linger 60000 --linger-start "$T/linger.start" \
    --linger-end "$T/linger.end" --grace 3000 \
    --only-addrs "${A[1]},${A[2]},${A[3]},${A[4]}" \
    --require-up "${A[2]}" --require-up "${A[3]}" --require-up "${A[4]}" \
    --require-gone "${A[1]}" --require-jobs "${A[4]}"
CLIENT_PID=$HOSTS_PID
end=$((SECONDS + 170))
while [ ! -e "$T/linger.start" ] && hosts_alive "$CLIENT_PID" && [ $SECONDS -lt $end ]; do
    sleep 0.05
done
t_run=$(since "$t")
if [ ! -e "$T/linger.start" ]; then
    fail "the client did not get to its linger (client.log)"
    exit 1
fi
say "client: discovery and run: $t_run s"

# ---------------------------------------------------------------- the attacks
t=$EPOCHREALTIME
# A beacon of node 2 that the client hears too (its nonce is then seen).
hosts_spawn 7 "$T/capture2.log" "$FORGE" capture "$P" "$T/beacon-new.bin" "${A[2]}" 12000
wait_exit "$HOSTS_PID" 15 || fail "no beacon of node 2 captured during the linger (capture2.log)"
grep -h 'captured' "$T/capture2.log" | sed 's/^/test_netns:   /'
evil() { ip netns exec "$(hosts_ns 7)" "$FORGE" "$@" >>"$T/evil.log" 2>&1 || fail "disc_forge $1 failed (evil.log)"; }
[ -s "$T/beacon-old.bin" ] && evil replay "$T/beacon-old.bin" "$HOSTS_BCAST" "$P"
[ -s "$T/beacon-new.bin" ] && evil replay "$T/beacon-new.bin" "$HOSTS_BCAST" "$P"
evil forge "$T/evil.secret" "$HOSTS_BCAST" "$P" "$DPORT"
[ -s "$T/beacon-new.bin" ] && evil forge "$T/evil.secret" "$HOSTS_BCAST" "$P" "$DPORT" "$T/beacon-new.bin"
sed 's/^/test_netns:   /' "$T/evil.log"
touch "$T/linger.end"
say "attacks sent: $(since "$t") s after the linger began"

wait_exit "$CLIENT_PID" 60
CRC=$?
sed -n '/^disc_client:/p' "$T/client.log" | grep -v '^disc_client:   job ' | sed 's/^/  /'
[ "$CRC" = 0 ] || fail "disc_client exited with $CRC"
grep -q '^disc_client: PASS' "$T/client.log" || fail "disc_client did not PASS"

# The client's final node list: only the real nodes.
final=$(sed -n '/node(s) at the end:/,$p' "$T/client.log" | grep '^disc_client: node ')
[ -n "$final" ] || fail "no final node list in client.log"
if grep -qF " $EVIL:" <<<"$final"; then fail "the attacker's address $EVIL is among the client's nodes"; fi
if grep -qF " ${A[5]}:" <<<"$final"; then fail "node 5 (another secret) is among the client's nodes"; fi
grep -qE " ${A[4]//./\\.}:$P state UP .* jobs_done [1-9]" <<<"$final" || fail "node 4 is not UP with jobs in the final list"
if grep -qE " ${A[1]//./\\.}:$P state UP " <<<"$final"; then fail "node 1 is still UP"; fi

# ---------------------------------------------------------------- the decoy's count
kill -TERM "$DECOY" 2>/dev/null
wait_exit "$DECOY" 10
DRC=$?
sed 's/^/test_netns:   /' "$T/decoy.log"
if [ "$DRC" != 0 ] || ! grep -q 'decoy: 0 connection' "$T/decoy.log"; then
    fail "the decoy was contacted (status $DRC): a forged or replayed beacon was followed"
fi

# ---------------------------------------------------------------- the daemons stop cleanly
t=$EPOCHREALTIME
N4=$(cat "$T/node4.pid" 2>/dev/null)
[ -n "$N4" ] && NODE_PID[4]=$N4
for i in 2 3 4 5; do
    [ -n "${NODE_PID[$i]:-}" ] && kill -TERM "${NODE_PID[$i]}" 2>/dev/null
done
for i in 2 3 5; do
    wait_exit "${NODE_PID[$i]}" 15
    st=$?
    [ "$st" = 0 ] || fail "node $i exited with status $st on SIGTERM"
done
if [ -n "${NODE_PID[4]:-}" ]; then
    # not our child (the hook started it): only that it ends
    end=$((SECONDS + 15))
    while hosts_alive "${NODE_PID[4]}" && [ $SECONDS -lt $end ]; do sleep 0.05; done
    hosts_alive "${NODE_PID[4]}" && fail "node 4 did not stop on SIGTERM"
else
    fail "node 4 was never started"
fi
say "daemons stopped: $(since "$t") s"

# Worth a look in the daemons' logs (reported, not judged).
for i in 1 2 3 4 5; do
    grep -Ei 'error|fail|killed by|refus|cannot|warn' "$T/node$i.log" 2>/dev/null |
        grep -v 'datagram(s) ignored' | head -n 5 |
        sed "s/^/test_netns:   node $i log: /"
done
grep -h 'datagram(s) ignored' "$T"/node[1-5].log 2>/dev/null | sort | uniq -c | head -n 5 |
    sed 's/^/test_netns:   /'

say "total before teardown: $(since "$T0") s"
if [ "$FAILS" != 0 ]; then
    say "$FAILS check(s) failed"
    exit 1
fi
say "PASS"
exit 0
