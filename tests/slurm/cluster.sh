# shellcheck shell=bash
# Description: a private single-node Slurm cluster for tests (source me).
#
#   . tests/slurm/cluster.sh
#   if reason=$(slurm_skip_reason); then echo "SKIP: $reason"; exit 77; fi
#   trap slurm_down EXIT
#   slurm_up || exit 1
#   srun -N1 hostname
#
# slurm_up starts munged, slurmctld and slurmd from Debian 12's munge and
# slurm-wlm packages (Slurm 22.05), each in the foreground (-F / -D) as a
# background job of the calling shell, so that $! is the daemon itself.
# Everything (munge key and socket, slurm.conf, state, spool, pid and log
# files) lives in one mktemp -d directory, $SLURM_TEST_DIR, and the TCP
# ports are random free ones: nothing under /etc/slurm, /etc/munge, /run or
# /var is read or written, no systemd unit is touched, and a system munged
# or slurmd (if one runs) is neither used nor disturbed.  Several clusters
# can run at once, each from its own shell.
#
# slurm_up exports SLURM_CONF (so srun, salloc, sbatch, squeue, sinfo,
# scontrol and scancel talk to this cluster), SLURM_TEST_NODE (the one
# node's name, $(hostname -s)), SLURM_TEST_{MUNGED,SLURMCTLD,SLURMD}_PID
# and SLURM_TEST_UP_SECONDS (how long the start took); it unsets the SLURM_*, SRUN_*, SALLOC_*,
# SBATCH_* ... variables it inherits, since a test run from inside a real
# Slurm job would otherwise make srun join that job's allocation.
#
# slurm_stray_pids prints the pids of what the cluster still runs besides
# its daemons (slurmstepd and tasks): empty once every job has ended.
#
# slurm_down cancels what still runs, stops the daemons by their recorded
# pids (SIGTERM, SIGKILL after 10 s), kills whatever they left (slurmstepd
# and its tasks), checks that nothing of ours is left and removes
# $SLURM_TEST_DIR (kept when SLURM_TEST_KEEP=1).  It is idempotent and
# meant for `trap slurm_down EXIT`.  Should the caller die without it
# (SIGKILL; meson's timeout), a watchdog slurm_up started does the same.
#
# Knobs: SLURM_TEST_TIMEOUT (seconds slurm_up waits for each daemon,
# default 30), SLURM_TEST_KEEP=1 (keep the directory and its logs: log/
# holds each daemon's stderr, *.out, and its log file, *.log).
#
# Written for callers under `set -euo pipefail` as well as without: every
# variable read is defaulted, slurm_up reports a failed start by its
# status, and slurm_down fails only when something could not be killed.

# The daemons and clients we use, in the order slurm_skip_reason checks.
_SLURM_BINS=(munged munge unmunge slurmctld slurmd srun salloc sbatch squeue sinfo scontrol scancel setsid)
# This file, for the watchdog to source (the caller may cd afterwards).
_SLURM_CLUSTER_SH=$(readlink -f -- "${BASH_SOURCE[0]}")

# Prints why this machine cannot run the cluster and returns 0; returns 1
# (printing nothing) when it can.
slurm_skip_reason() {
    local b
    # First, since a non-root PATH may lack /usr/sbin (munged, slurmctld,
    # slurmd): "not root" is the true reason then.
    if [ "$(id -u)" -ne 0 ]; then
        # slurmd must be root to start tasks as the submitting user (and a
        # root-owned munge key is what munged trusts).
        echo "the Slurm test cluster needs root (slurmd starts tasks as their user)"
        return 0
    fi
    for b in "${_SLURM_BINS[@]}"; do
        if ! command -v "$b" >/dev/null 2>&1; then
            echo "$b not found: the Slurm test cluster needs Debian's slurm-wlm and munge packages (.ci/deps.sh)"
            return 0
        fi
    done
    return 1
}

# Prints "PID PPID" for every live process of this cluster: the three
# daemons (their environment carries our tag), the slurmstepd processes
# (which overwrite their environment with their title, "slurmstepd:
# [1.0]", so they are known by the slurmd log file they hold open), and all
# their descendants (slurmctld's slurmscriptd helper; the tasks).  One grep
# and one awk over /proc, not a command per process: tests poll this.
_slurm_our_pids() {
    [ -n "${SLURM_TEST_DIR:-}" ] || return 0
    local d=$SLURM_TEST_DIR tagged table p fd
    # -z: environ is NUL-separated; -s: a process may vanish or be unreadable.
    tagged=$(grep -lszxF -- "PP_SLURM_TEST_TAG=$d" /proc/[0-9]*/environ |
        sed -n 's#^/proc/\([0-9]*\)/environ$#\1#p' | tr '\n' ' ')
    # "PID PPID STATE COMM" for every process.  comm (field 2) may hold
    # spaces and parentheses: the state and the parent pid are the two
    # fields after the last ") ".  cat, not awk's own file list: mawk gives
    # up at a file that vanished in between.
    table=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '{
        pid = $1; comm = $0
        sub(/^[^(]*\(/, "", comm); sub(/\) [^)]*$/, "", comm)
        sub(/^.*\) /, ""); print pid, $2, $1, comm }')
    while read -r p; do
        for fd in /proc/"$p"/fd/*; do
            case $(readlink "$fd" 2>/dev/null) in
                "$d"/*) tagged+=" $p"; break ;;
            esac
        done
    done < <(awk '$4 == "slurmstepd" && $3 != "Z" { print $1 }' <<<"$table")
    [ -n "${tagged// /}" ] || return 0
    awk -v tagged="$tagged" '
        { state[$1] = $3; parent[$1] = $2 }
        END {
            n = split(tagged, t, " ")
            for (i = 1; i <= n; i++) ours[t[i]] = 1
            do {
                changed = 0
                for (p in parent)
                    if (!(p in ours) && (parent[p] in ours)) { ours[p] = 1; changed = 1 }
            } while (changed)
            # Zombies are not left running (their parent reaps them).
            for (p in ours)
                if ((p in state) && state[p] != "Z") print p, parent[p]
        }' <<<"$table"
    return 0
}

# Prints the pids of what the cluster runs besides its daemons and their
# helpers (slurmctld's slurmscriptd): the slurmstepd processes of steps
# and batch jobs, and their tasks.  Empty once every job has ended.
slurm_stray_pids() {
    _slurm_our_pids | awk -v m="${SLURM_TEST_MUNGED_PID:-}" \
        -v c="${SLURM_TEST_SLURMCTLD_PID:-}" -v d="${SLURM_TEST_SLURMD_PID:-}" \
        '$1 != m && $1 != c && $1 != d && $2 != c && $2 != m { print $1 }'
    return 0
}

# True while pid $1 is alive and one of ours: a recorded pid is checked
# before it is signalled, so that a recycled pid is never killed.
_slurm_alive() {
    local pid=$1 stat
    [ -n "$pid" ] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ] || return 1
    grep -qszxF -- "PP_SLURM_TEST_TAG=${SLURM_TEST_DIR:-}" "/proc/$pid/environ"
}

# Stops pid $1 (SIGTERM, then SIGKILL after $2 tenths of a second) and
# reaps it when it is our child, quietly.
_slurm_stop_pid() {
    local pid=$1 tenths=${2:-100} i
    _slurm_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < tenths; i++)); do
        _slurm_alive "$pid" || break
        sleep 0.1
    done
    if _slurm_alive "$pid"; then
        echo "slurm_down: pid $pid ignored SIGTERM for $((tenths / 10)) s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Reap it (it is a background job of this shell when slurm_up ran
    # here) so that it leaves no zombie; fails harmlessly otherwise.
    wait "$pid" 2>/dev/null || true
    return 0
}

# Prints a free TCP port in [20000, 32767]: below Linux's default ephemeral
# range, so that no outgoing connection takes it in the meantime, and not
# bound by anything in /proc/net/tcp{,6} (any state: cheaper than reasoning
# about which states block a bind).
_slurm_free_port() {
    local port hex used i
    used=$(awk 'FNR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
        printf -v hex '%04X' "$port"
        if ! grep -qx -- "$hex" <<<"$used" && [ "$port" != "${1:-}" ]; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# Prints the tail of each daemon's stderr, to say why a start failed (in
# the foreground, the daemons log there as well as to their log files, and
# errors from before a log file is opened go there only).
_slurm_show_logs() {
    local f
    for f in "$SLURM_TEST_DIR"/log/*.out "$SLURM_TEST_DIR"/log/*.log; do
        [ -s "$f" ] || continue
        echo "---- ${f##*/} (last 20 lines) ----" >&2
        tail -n 20 "$f" >&2
    done
}

# Writes $SLURM_TEST_DIR/slurm.conf for ports $1 (slurmctld) and $2 (slurmd).
_slurm_write_conf() {
    local d=$SLURM_TEST_DIR node=$SLURM_TEST_NODE
    cat >"$d/slurm.conf" <<EOF
# Written by tests/slurm/cluster.sh: a private one-node cluster; see there.
ClusterName=pptest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$1
SlurmdPort=$2
# Everything as root (slurmd has to be anyway), so that nothing in the
# directory has to belong to Debian's slurm user.
SlurmUser=root
SlurmdUser=root
# Our own munged: clients, daemons and credentials all use its socket.
AuthType=auth/munge
AuthInfo=socket=$d/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/run/slurmctld.pid
SlurmdPidFile=$d/run/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
# No cgroups (nothing under /sys/fs/cgroup is created): tasks are tracked
# through /proc, and not bound to CPUs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
# No accounting, no completion log, no mail.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
# FIFO, without the backfill thread.  srun and salloc jobs are scheduled
# on submission; batch jobs wait for slurmctld's background pass, which
# batch_sched_delay=0 makes the next one-second tick instead of up to 3 s.
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
# A node that comes back after a failure is usable again at once.
ReturnToService=2
# Short timeouts so that killed steps and jobs end within a few seconds:
# KillWait is the SIGTERM -> SIGKILL grace (default 30 s).
KillWait=2
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=30
UnkillableStepTimeout=30
InactiveLimit=0
# Finished jobs leave slurmctld's memory (squeue, scontrol show job) after
# 5 s.  Also what keeps sbatch --wait polling every 2 s: it lengthens its
# poll only while the poll is under MinJobAge / 2 (2, 8, 32 s at 300).
MinJobAge=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=256 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

# Starts one daemon in the background with our tag in its environment;
# records and prints nothing, sets _slurm_last_pid.
_slurm_spawn() {
    local name=$1
    shift
    # stdin from /dev/null and stdout/stderr to a log: a daemon must not
    # hold the caller's pipes open (meson would wait for it).
    PP_SLURM_TEST_TAG=$SLURM_TEST_DIR "$@" </dev/null >>"$SLURM_TEST_DIR/log/$name.out" 2>&1 &
    _slurm_last_pid=$!
    echo "$_slurm_last_pid" >"$SLURM_TEST_DIR/run/$name.bgpid"
}

# Polls command "$@" every 0.1 s until it succeeds (returns 0), until pid
# $1 dies (returns 2) or until $2 seconds pass (returns 1).  The daemon is
# checked first: a daemon that died at once (port taken) must not leave us
# waiting on a probe that reached whatever holds its port.
_slurm_wait_for() {
    local pid=$1 secs=$2 end
    shift 2
    end=$((SECONDS + secs))
    while [ "$SECONDS" -lt "$end" ]; do
        _slurm_alive "$pid" || return 2
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# The probes: each bounded, since a client waits MessageTimeout (10 s) for
# an answer from something that accepted its connection.
_slurm_munge_ok() {
    timeout 2 munge -n -S "$SLURM_TEST_DIR/munge/munge.socket" |
        timeout 2 unmunge -S "$SLURM_TEST_DIR/munge/munge.socket" >/dev/null
}

_slurm_ctld_up() {
    timeout 2 scontrol ping | grep -q 'is UP'
}

_slurm_node_idle() {
    [ "$(timeout 2 sinfo -h -o %T 2>/dev/null)" = idle ]
}

# The watchdog, for when the caller dies without slurm_down (SIGKILL, or
# meson's timeout: SIGTERM to the test's process group, SIGKILL 0.5 s
# later, in the middle of slurm_down).  The daemons die with that process
# group, but slurmstepd and its tasks are in sessions of their own; so a
# process in a session of its own too waits for the caller ($1) to exit
# and then, unless slurm_down has removed $SLURM_TEST_DIR, kills all that
# is ours and removes the directory.  slurm_down stops it.
_slurm_watchdog() {
    local caller=$1 left
    echo "$$" >"$SLURM_TEST_DIR/run/watchdog.pid"
    while kill -0 "$caller" 2>/dev/null; do sleep 0.5; done
    [ -d "$SLURM_TEST_DIR" ] || return 0
    left=$(_slurm_our_pids | awk '{ print $1 }')
    # shellcheck disable=SC2086 # one pid a word
    [ -z "$left" ] || kill -KILL $left 2>/dev/null
    [ "${SLURM_TEST_KEEP:-0}" = 1 ] || rm -rf -- "$SLURM_TEST_DIR"
}

_slurm_start_watchdog() {
    # setsid: out of the caller's process group and session, so that a
    # signal to either leaves it running; it holds none of the caller's
    # file descriptors.  Its environment tags it for slurm_down.
    # shellcheck disable=SC2016 # expanded by that bash
    PP_SLURM_TEST_WATCHDOG=$SLURM_TEST_DIR \
        setsid bash -c '. "$1" && _slurm_watchdog "$2"' _slurm_watchdog "$_SLURM_CLUSTER_SH" "$$" \
        </dev/null >/dev/null 2>&1 &
}

_slurm_stop_watchdog() {
    local pid
    pid=$(cat "$SLURM_TEST_DIR/run/watchdog.pid" 2>/dev/null) || return 0
    if grep -qszxF -- "PP_SLURM_TEST_WATCHDOG=$SLURM_TEST_DIR" "/proc/$pid/environ"; then
        # Its process group (setsid made it the leader): it and its sleep.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
    return 0
}

# Starts the cluster; returns 0 once the node is idle, else prints why
# (with the tails of the logs), stops what it started and returns 1.
slurm_up() {
    local reason timeout=${SLURM_TEST_TIMEOUT:-30} d attempt rc v t0 stage cport dport
    if reason=$(slurm_skip_reason); then
        echo "slurm_up: $reason" >&2
        return 1
    fi
    if [ -n "${SLURM_TEST_DIR:-}" ] && [ -d "$SLURM_TEST_DIR" ]; then
        echo "slurm_up: a cluster is already up in $SLURM_TEST_DIR" >&2
        return 1
    fi
    t0=$(date +%s.%N)

    # Forget any Slurm job or client defaults we were started with.
    for v in $(compgen -e); do
        case $v in
            SLURM_TEST_*) ;;
            SLURM_* | SLURMD_* | SRUN_* | SALLOC_* | SBATCH_* | SQUEUE_* | SINFO_* | SCONTROL_* | SCANCEL_*)
                unset "$v" ;;
        esac
    done

    d=$(mktemp -d "${TMPDIR:-/tmp}/pp-slurm.XXXXXX") || return 1
    export SLURM_TEST_DIR=$d
    # munged insists that every directory above its socket be searchable
    # by all ("execute permissions for all required"): mktemp's 0700 is not.
    chmod 0711 "$d"
    mkdir -p "$d/munge" "$d/state" "$d/spool" "$d/run" "$d/log"
    chmod 0711 "$d/munge"
    chmod 0700 "$d/state" "$d/spool"
    _slurm_start_watchdog
    SLURM_TEST_NODE=$(hostname -s 2>/dev/null) || SLURM_TEST_NODE=
    [ -n "$SLURM_TEST_NODE" ] || SLURM_TEST_NODE=localhost
    export SLURM_TEST_NODE

    # A fresh key, readable by its owner (root) only, as munged requires.
    (umask 077 && head -c 1024 /dev/urandom >"$d/munge/munge.key")
    chmod 0400 "$d/munge/munge.key"

    # munged needs no --force as root when its files are private like
    # this; every path it would take from /etc, /run or /var is given.
    _slurm_spawn munged munged --foreground \
        --socket="$d/munge/munge.socket" \
        --key-file="$d/munge/munge.key" \
        --pid-file="$d/run/munged.pid" \
        --seed-file="$d/munge/munged.seed" \
        --log-file="$d/log/munged.log"
    SLURM_TEST_MUNGED_PID=$_slurm_last_pid
    if ! _slurm_wait_for "$SLURM_TEST_MUNGED_PID" 10 _slurm_munge_ok; then
        echo "slurm_up: munged did not start" >&2
        _slurm_show_logs
        slurm_down
        return 1
    fi

    export SLURM_CONF=$d/slurm.conf
    # Two random ports could be taken between our check and the daemon's
    # bind (by a concurrent cluster, say): on "Address already in use",
    # start over with fresh ports, up to three times.
    for attempt in 1 2 3; do
        if ! cport=$(_slurm_free_port) || ! dport=$(_slurm_free_port "$cport"); then
            echo "slurm_up: found no free TCP port" >&2
            slurm_down
            return 1
        fi
        _slurm_write_conf "$cport" "$dport"
        _slurm_spawn slurmctld slurmctld -D -f "$SLURM_CONF"
        SLURM_TEST_SLURMCTLD_PID=$_slurm_last_pid
        stage=slurmctld
        rc=0
        _slurm_wait_for "$SLURM_TEST_SLURMCTLD_PID" "$timeout" _slurm_ctld_up || rc=$?
        if [ "$rc" -eq 0 ]; then
            # -N: the node name, so that it never depends on how slurmd
            # would derive it from the host name.
            _slurm_spawn slurmd slurmd -D -f "$SLURM_CONF" -N "$SLURM_TEST_NODE"
            SLURM_TEST_SLURMD_PID=$_slurm_last_pid
            stage=slurmd
            _slurm_wait_for "$SLURM_TEST_SLURMD_PID" "$timeout" _slurm_node_idle || rc=$?
        fi
        if [ "$rc" -eq 0 ]; then
            export SLURM_TEST_MUNGED_PID SLURM_TEST_SLURMCTLD_PID SLURM_TEST_SLURMD_PID
            SLURM_TEST_UP_SECONDS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
            export SLURM_TEST_UP_SECONDS
            return 0
        fi
        _slurm_stop_pid "${SLURM_TEST_SLURMD_PID:-}" 50
        _slurm_stop_pid "$SLURM_TEST_SLURMCTLD_PID" 50
        SLURM_TEST_SLURMD_PID='' SLURM_TEST_SLURMCTLD_PID=''
        # A port taken meanwhile, or slurmctld gone at once without a word
        # (seen once in 30 CI runs, right after the netns test, cause not
        # found: its log was empty): fresh ports and state, twice more.
        if [ "$attempt" -lt 3 ] && { grep -qs 'Address already in use' "$d"/log/slurm* ||
                                     { [ "$stage" = slurmctld ] && [ "$rc" -ne 1 ]; }; }; then
            echo "slurm_up: $stage did not start (port $cport or $dport taken?); retrying" >&2
            tail -n 5 "$d"/log/slurmctld* >&2 2>/dev/null
            rm -rf "$d/state" "$d/spool" "$d"/log/slurm*
            mkdir -m 0700 "$d/state" "$d/spool"
            continue
        fi
        break
    done
    case $rc in
        1) if [ "$stage" = slurmd ]; then
               echo "slurm_up: the node was not idle after ${timeout} s (sinfo: $(timeout 5 sinfo -h -o '%T %E' 2>&1 | head -n 1))" >&2
           else
               echo "slurm_up: slurmctld did not answer scontrol ping within ${timeout} s" >&2
           fi ;;
        *) echo "slurm_up: $stage exited during start-up" >&2 ;;
    esac
    _slurm_show_logs
    slurm_down
    return 1
}

# Stops the cluster and removes its directory; safe to call twice, with no
# cluster, and from an EXIT trap.  Returns 1 only when a process of ours
# survived SIGKILL (stuck in the kernel); everything else it meets, a
# daemon that is already gone say, is fine.
slurm_down() {
    local d=${SLURM_TEST_DIR:-} left i status=0
    [ -n "$d" ] || return 0
    # Cancel what still runs while slurmctld can do it cleanly (SIGTERM to
    # the tasks, SIGKILL KillWait = 2 s later); give it 5 s.  Every client
    # call is bounded: a hung slurmctld would make each wait 10 s.
    local jobs end=$((SECONDS + 5))
    if _slurm_alive "${SLURM_TEST_SLURMCTLD_PID:-}"; then
        jobs=$(timeout 5 squeue -h -o %i 2>/dev/null)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086 # one job id a word
            timeout 5 scancel --full --quiet $jobs 2>/dev/null || true
            while [ "$SECONDS" -lt "$end" ] && [ -n "$(timeout 2 squeue -h -o %i 2>/dev/null)" ]; do
                sleep 0.1
            done
        fi
    fi
    # slurmd first, while slurmctld is there to hear that it goes; munged
    # last, since both authenticate through it until they are gone.
    _slurm_stop_pid "${SLURM_TEST_SLURMD_PID:-}" 100
    _slurm_stop_pid "${SLURM_TEST_SLURMCTLD_PID:-}" 100
    _slurm_stop_pid "${SLURM_TEST_MUNGED_PID:-}" 100
    # slurmstepd outlives slurmd by design (a restarted slurmd finds its
    # steps again); kill any that remain, and their tasks.
    left=$(_slurm_our_pids | awk '{ print $1 }')
    if [ -n "$left" ]; then
        echo "slurm_down: killing leftover processes:" >&2
        # shellcheck disable=SC2086 # one pid a word
        ps -o pid,ppid,args -p "$(echo $left | tr ' ' ,)" >&2 2>/dev/null || true
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            left=$(_slurm_our_pids | awk '{ print $1 }')
            [ -z "$left" ] && break
            sleep 0.1
        done
        if [ -n "$left" ]; then
            echo "slurm_down: processes still left: ${left//$'\n'/ }" >&2
            status=1
        fi
    fi
    _slurm_stop_watchdog
    if [ "${SLURM_TEST_KEEP:-0}" = 1 ]; then
        echo "slurm_down: keeping $d (SLURM_TEST_KEEP=1)" >&2
    else
        rm -rf -- "$d"
    fi
    unset SLURM_TEST_DIR SLURM_TEST_MUNGED_PID SLURM_TEST_SLURMCTLD_PID SLURM_TEST_SLURMD_PID SLURM_CONF
    return "$status"
}
