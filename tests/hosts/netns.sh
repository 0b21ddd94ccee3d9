# netns.sh - private "hosts" for multi-host tests: network namespaces
# joined by veth pairs to one bridge.  Source it from bash; making hosts
# needs root.
#
#   hosts_skip_reason   prints why hosts cannot be made here and returns 0;
#                       returns 1, printing nothing, when they can (it
#                       probes with a throwaway namespace, bridge and veth)
#   hosts_up N          namespaces 1..N ("hosts"), each with lo up and eth0
#                       at $HOSTS_NET.(10+i)/24, broadcast $HOSTS_BCAST
#   hosts_ns I          the name of namespace I
#   hosts_addr I        its address
#   hosts_spawn I LOG CMD...
#                       starts CMD in namespace I in the background (stdin
#                       /dev/null, stdout and stderr to LOG), sets HOSTS_PID
#                       and records it for hosts_down
#   hosts_track I PID   records a process started some other way
#   hosts_alive PID     true while PID exists and is not a zombie
#   hosts_down          stops every recorded process (SIGTERM, then SIGKILL
#                       after HOSTS_STOP_S seconds), checks with `ip netns
#                       pids` that nothing is left in any namespace (what is
#                       left is printed, killed and makes it return 1), and
#                       deletes the namespaces, veths and bridge.  Safe to
#                       call twice, before hosts_up, and from a trap; only
#                       the shell that ran hosts_up tears down.
#
# Isolation.  The bridge lives in a namespace of its own ($HOSTS_SW) that
# has nothing but the bridge and the host-side veth ends: no address, no
# route, no uplink, so nothing sent by a host can reach the real network
# or the machine's own namespace, whatever its address; ip_forward, NAT
# and the host's firewall are not touched (the root namespace gets no
# interface at all).  The subnet is 10.213.X.0/24 with an X that no
# address or route of the root namespace uses.
#
# State lives in $HOSTS_DIR (exported with the other HOSTS_* variables), so
# a script started by the test (a hook) can source this file and call
# hosts_ns, hosts_addr, hosts_spawn and hosts_track too.  Names carry the
# pid of the shell that ran hosts_up (pph<pid>-<i>, bridge ppbr<pid>);
# hosts_up first removes namespaces of that form whose test process is
# gone (a run killed with SIGKILL cannot clean up after itself).

HOSTS_STOP_S=${HOSTS_STOP_S:-5}

hosts__log() { echo "netns.sh: $*" >&2; }

hosts_ns() { echo "${HOSTS_TAG:?hosts_up first}-$1"; }
hosts_addr() { echo "${HOSTS_NET:?hosts_up first}.$((10 + $1))"; }

hosts_alive() {
    local st
    [ -r "/proc/$1/stat" ] || return 1
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# True if PID runs in network namespace NS (guards against reused pids).
hosts__in_ns() {
    [ "$(ip netns identify "$1" 2>/dev/null)" = "$2" ]
}

hosts_skip_reason() {
    local p="pph$$-probe" err
    if [ "$(id -u)" != 0 ]; then
        echo "network namespaces need root; running as uid $(id -u)"
        return 0
    fi
    if ! command -v ip >/dev/null 2>&1; then
        echo "no ip command (iproute2)"
        return 0
    fi
    if ! err=$(ip netns add "$p" 2>&1); then
        echo "this machine does not permit network namespaces: ip netns add: $err"
        return 0
    fi
    if ! err=$( { ip -n "$p" link add ppprobebr type bridge &&
                  ip -n "$p" link add ppprobe0 type veth peer name ppprobe1 &&
                  ip netns exec "$p" true; } 2>&1); then
        ip netns del "$p" 2>/dev/null
        echo "network namespaces work but bridges, veths or ip netns exec do not: $err"
        return 0
    fi
    ip netns del "$p"
    return 1
}

# Namespaces of an earlier run whose test process no longer exists.
hosts__reap_stale() {
    local ns owner pids
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^pph[0-9]+-'); do
        owner=${ns#pph}
        owner=${owner%%-*}
        if kill -0 "$owner" 2>/dev/null; then
            continue
        fi
        pids=$(ip netns pids "$ns" 2>/dev/null)
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
        ip netns del "$ns" 2>/dev/null &&
            hosts__log "removed stale namespace $ns (its test, pid $owner, is gone)"
    done
    # State directories of such runs, and what the caller asked to go with
    # them (HOSTS_STALE_GLOB: directories named <prefix><pid>.<anything>).
    for d in /tmp/pp-hosts-*/ ${HOSTS_STALE_GLOB:-}; do
        d=${d%/}
        [ -d "$d" ] || continue
        if [ -f "$d/owner" ]; then
            owner=$(cat "$d/owner" 2>/dev/null)
        else
            owner=${d##*/}
            owner=${owner%%.*}
            owner=${owner##*-}
        fi
        [[ "$owner" =~ ^[0-9]+$ ]] || continue
        if ! kill -0 "$owner" 2>/dev/null; then
            rm -rf "$d" && hosts__log "removed stale $d (pid $owner is gone)"
        fi
    done
}

hosts__pick_net() {
    local used x
    used=$( { ip -4 -o addr show; ip -4 route show table all; } 2>/dev/null)
    x=$((200 + RANDOM % 50))
    for _ in $(seq 0 49); do
        if ! grep -q "10\.213\.$x\." <<<"$used" && ! grep -q "10\.213\.$x\.0/" <<<"$used"; then
            HOSTS_NET="10.213.$x"
            return 0
        fi
        x=$((200 + (x - 200 + 1) % 50))
    done
    hosts__log "every 10.213.200-249.0/24 is in use on this machine"
    return 1
}

hosts_up() {
    local n=$1 i ns
    if [ -n "${HOSTS_DIR:-}" ]; then
        hosts__log "hosts_up: hosts are already up ($HOSTS_DIR)"
        return 1
    fi
    hosts__reap_stale
    HOSTS_DIR=$(mktemp -d /tmp/pp-hosts-XXXXXX) || return 1
    HOSTS_OWNER=$BASHPID
    HOSTS_TAG="pph$BASHPID"
    HOSTS_SW="$HOSTS_TAG-sw"
    HOSTS_BR="ppbr$BASHPID"
    HOSTS_BR=${HOSTS_BR:0:15}
    HOSTS_N=$n
    echo "$BASHPID" >"$HOSTS_DIR/owner"
    : >"$HOSTS_DIR/pids"
    : >"$HOSTS_DIR/names"
    export HOSTS_DIR HOSTS_OWNER HOSTS_TAG HOSTS_SW HOSTS_BR HOSTS_N
    hosts__pick_net || return 1
    HOSTS_BCAST="$HOSTS_NET.255"
    export HOSTS_NET HOSTS_BCAST

    echo "$HOSTS_SW" >>"$HOSTS_DIR/names"
    ip netns add "$HOSTS_SW" || return 1
    ip -n "$HOSTS_SW" link add "$HOSTS_BR" type bridge || return 1
    ip -n "$HOSTS_SW" link set "$HOSTS_BR" up || return 1
    for i in $(seq 1 "$n"); do
        ns=$(hosts_ns "$i")
        echo "$ns" >>"$HOSTS_DIR/names"
        ip netns add "$ns" || return 1
        ip -n "$HOSTS_SW" link add "p$i" type veth peer name eth0 netns "$ns" || return 1
        ip -n "$HOSTS_SW" link set "p$i" master "$HOSTS_BR" || return 1
        ip -n "$HOSTS_SW" link set "p$i" up || return 1
        ip -n "$ns" link set lo up || return 1
        ip -n "$ns" addr add "$(hosts_addr "$i")/24" brd + dev eth0 || return 1
        ip -n "$ns" link set eth0 up || return 1
    done
    return 0
}

hosts_track() {
    echo "$1 $2" >>"${HOSTS_DIR:?hosts_up first}/pids"
}

hosts_spawn() {
    local i=$1 log=$2 ns
    shift 2
    ns=$(hosts_ns "$i")
    ip netns exec "$ns" "$@" </dev/null >"$log" 2>&1 &
    HOSTS_PID=$!
    hosts_track "$i" "$HOSTS_PID"
}

# Waits until none of the pids is alive, at most $1 seconds; true if so.
hosts__wait_gone() {
    local limit=$1 p end
    shift
    end=$((SECONDS + limit))
    while :; do
        local any=0
        for p in "$@"; do
            hosts_alive "$p" && any=1
        done
        [ $any = 0 ] && return 0
        [ $SECONDS -ge $end ] && return 1
        sleep 0.05
    done
}

hosts_down() {
    local rc=0 i pid ns left
    local -a mine=()
    [ -n "${HOSTS_DIR:-}" ] && [ -d "$HOSTS_DIR" ] || return 0
    [ "${HOSTS_OWNER:-}" = "$BASHPID" ] || return 0

    # The recorded processes, while they are still where we started them.
    while read -r i pid; do
        [ -n "$pid" ] || continue
        if hosts_alive "$pid" && hosts__in_ns "$pid" "$(hosts_ns "$i")"; then
            kill -TERM "$pid" 2>/dev/null
            mine+=("$pid")
        fi
    done <"$HOSTS_DIR/pids"
    if [ ${#mine[@]} -gt 0 ] && ! hosts__wait_gone "$HOSTS_STOP_S" "${mine[@]}"; then
        for pid in "${mine[@]}"; do
            if hosts_alive "$pid"; then
                hosts__log "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80)) ignored SIGTERM for ${HOSTS_STOP_S} s: SIGKILL"
                kill -KILL "$pid" 2>/dev/null
            fi
        done
        hosts__wait_gone 5 "${mine[@]}"
    fi
    # Reap the ones that are our children (others: not ours to wait for).
    while read -r i pid; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null
    done <"$HOSTS_DIR/pids"

    # Nothing else may be left in the namespaces.
    while read -r ns; do
        left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        if [ -n "${left// /}" ]; then
            rc=1
            for pid in $left; do
                hosts__log "LEFT BEHIND in $ns: pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)"
            done
            kill -KILL $left 2>/dev/null
            hosts__wait_gone 5 $left
        fi
    done <"$HOSTS_DIR/names"

    # The namespaces (their veth ends and the bridge go with them), the
    # switch last.
    tac "$HOSTS_DIR/names" | while read -r ns; do
        if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
            ip netns del "$ns" || hosts__log "cannot delete namespace $ns"
        fi
    done
    while read -r ns; do
        if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
            hosts__log "namespace $ns still exists"
            rc=1
        fi
    done <"$HOSTS_DIR/names"
    rm -rf "$HOSTS_DIR"
    HOSTS_DIR=
    return $rc
}
