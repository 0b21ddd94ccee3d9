#!/usr/bin/env bash
# Description: brings up the private Slurm cluster of cluster.sh and checks
# that srun, salloc, sbatch and scontrol work against it, by their output.
#
# Exit status: 0 pass, 1 fail, 77 skipped (meson's code; the reason is
# printed), e.g. when not root or when slurm-wlm/munge are not installed.
# The cluster is always stopped and its directory removed (trap), unless
# SLURM_TEST_KEEP=1.  Every client command runs under `timeout`, so that a
# hung step fails the test instead of stalling it.
set -uo pipefail # not -e: each check reports its own failure and we go on

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=cluster.sh
. "$here/cluster.sh"

if reason=$(slurm_skip_reason); then
    echo "SKIP: $reason"
    exit 77
fi

trap slurm_down EXIT
# A signal (meson's timeout, Ctrl-C) must still run the EXIT trap.
trap 'exit 1' INT TERM HUP

failures=0
fail() {
    echo "FAIL: $*" >&2
    # The stderr of the last client command, which is the one that failed.
    if [ -s "${err:-}" ]; then sed 's/^/  stderr: /' "$err" >&2; fi
    failures=$((failures + 1))
}
ok() { echo "ok: $*"; }

# expect NAME EXPECTED ACTUAL: compares two strings, showing both on failure.
expect() {
    if [ "$2" = "$3" ]; then
        ok "$1"
    else
        fail "$1"
        printf '  expected: %q\n  actual:   %q\n' "$2" "$3" >&2
    fi
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

T=60 # seconds any one client command may take

t0=$(now)
if ! slurm_up; then
    fail "slurm_up"
    exit 1
fi
echo "cluster up in $(since "$t0") s (node $SLURM_TEST_NODE, $SLURM_TEST_DIR)"
host=$(hostname)
ncpus=$(nproc)
err=$SLURM_TEST_DIR/stderr

# 1. A one-task step outside any allocation (srun allocates a job itself).
t0=$(now)
out=$(timeout "$T" srun -N1 -n1 hostname 2>"$err")
rc=$?
echo "srun -N1 -n1 hostname: rc $rc in $(since "$t0") s"
expect "srun -N1 -n1 hostname prints the host name" "$host" "$out"
expect "srun exits 0" 0 "$rc"

# 2. salloc, then a step over the whole allocation of the node.  --whole
# is accepted by Slurm 22.05 (not in its --help); the step sees the
# allocation's CPUs on the node, its node index and node name.
t0=$(now)
# shellcheck disable=SC2016 # expanded by the job's shell, not ours
out=$(timeout "$T" salloc -N1 bash -c 'echo "$SLURM_JOB_NODELIST $SLURM_JOB_CPUS_PER_NODE"
    srun -N1 --ntasks-per-node=1 --whole bash -c "echo \$SLURM_CPUS_ON_NODE \$SLURM_NODEID \$SLURMD_NODENAME \$SLURM_STEP_ID"' 2>"$err")
rc=$?
echo "salloc + one step: rc $rc in $(since "$t0") s"
expect "salloc exits 0" 0 "$rc"
{
    read -r nodelist jobcpus
    read -r stepcpus nodeid nodename stepid
} <<<"$out"
expect "salloc: SLURM_JOB_NODELIST is the node" "$SLURM_TEST_NODE" "${nodelist:-}"
# A default salloc -N1 is one task, one core: 1 CPU when cores have one
# thread; whatever it is, the step sees the same.
if [[ ${jobcpus:-} =~ ^[1-9][0-9]*$ ]] && [ "$jobcpus" -le "$ncpus" ]; then
    ok "salloc: SLURM_JOB_CPUS_PER_NODE=$jobcpus"
else
    fail "salloc: SLURM_JOB_CPUS_PER_NODE=${jobcpus:-} (nproc $ncpus)"
fi
expect "step: SLURM_CPUS_ON_NODE is the allocation's" "${jobcpus:-}" "${stepcpus:-}"
expect "step: SLURM_NODEID" 0 "${nodeid:-}"
expect "step: SLURMD_NODENAME" "$SLURM_TEST_NODE" "${nodename:-}"
expect "step: SLURM_STEP_ID (first step of the allocation)" 0 "${stepid:-}"

# The same with the node to ourselves: the step sees every CPU.
# shellcheck disable=SC2016 # expanded by the task
out=$(timeout "$T" salloc -N1 --exclusive \
    srun -N1 --ntasks-per-node=1 --whole bash -c 'echo $SLURM_CPUS_ON_NODE' 2>"$err")
expect "salloc --exclusive: a --whole step has all $ncpus CPUs" "$ncpus" "$out"

# 3. A batch job that runs a step, waited for.
cat >"$SLURM_TEST_DIR/job.sh" <<'EOF'
#!/bin/bash
#SBATCH -N1 -n1
srun hostname
EOF
t0=$(now)
out=$(timeout "$T" sbatch --wait -o "$SLURM_TEST_DIR/job.out" "$SLURM_TEST_DIR/job.sh" 2>"$err")
rc=$?
echo "sbatch --wait: rc $rc in $(since "$t0") s"
expect "sbatch --wait exits 0" 0 "$rc"
if [[ $out =~ ^Submitted\ batch\ job\ [0-9]+$ ]]; then
    ok "sbatch prints '$out'"
else
    fail "sbatch printed '$out'"
fi
expect "the batch job's output file" "$host" "$(cat "$SLURM_TEST_DIR/job.out" 2>&1)"
# sbatch --wait exits with the batch script's status.
printf '#!/bin/bash\nexit 3\n' >"$SLURM_TEST_DIR/job3.sh"
timeout "$T" sbatch --wait -Q -o /dev/null "$SLURM_TEST_DIR/job3.sh" >/dev/null 2>"$err"
expect "sbatch --wait exits with the script's status" 3 "$?"

# 4. Host-list expansion, as scontrol does it (no daemon involved): ranges
# keep their zero padding, the order and any duplicates are kept.
out=$(scontrol show hostnames 'n[01-03,7],x' 2>&1)
expect "scontrol show hostnames 'n[01-03,7],x'" "$(printf 'n01\nn02\nn03\nn7\nx')" "$out"

# 5. Nothing left: no job (a job that just ended may be COMPLETING for a
# moment) and no slurmstepd or task of ours.
for ((i = 0; i < 100; i++)); do
    q=$(squeue -h 2>&1)
    [ -z "$q" ] && break
    sleep 0.1
done
expect "squeue -h is empty" "" "$q"
for ((i = 0; i < 50; i++)); do
    stray=$(slurm_stray_pids)
    [ -z "$stray" ] && break
    sleep 0.1
done
if [ -z "$stray" ]; then
    ok "no slurmstepd or task left"
else
    # shellcheck disable=SC2086 # one pid a word
    fail "left running: $(ps -o pid=,args= -p "$(echo $stray | tr ' ' ,)")"
fi

# Stop explicitly (the trap then has nothing to do), and check that it
# stopped everything.
dir=$SLURM_TEST_DIR
pids="$SLURM_TEST_MUNGED_PID $SLURM_TEST_SLURMCTLD_PID $SLURM_TEST_SLURMD_PID"
t0=$(now)
slurm_down || fail "slurm_down"
echo "cluster down in $(since "$t0") s"
for p in $pids; do
    if [ -e "/proc/$p" ]; then fail "daemon $p still exists"; fi
done
if [ "${SLURM_TEST_KEEP:-0}" != 1 ] && [ -e "$dir" ]; then
    fail "$dir was not removed"
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
fi
echo "all checks passed"
exit 0
