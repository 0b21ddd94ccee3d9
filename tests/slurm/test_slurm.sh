#!/usr/bin/env bash
# Description: pp under a real Slurm (the private one-node cluster of
# cluster.sh): a client whose ppservers are "slurm" starts its own
# ppserver step under salloc, runs its jobs there and ends the step in
# pp_server_destroy; a batch script (sbatch --wait) that runs `srun
# ppserver --slurm` itself with a client on "slurm-nodes:PORT"; a step that
# cannot start makes pp_server_new fail with srun's message.  After each:
# no job in squeue, no step process, no ppserver left.
#
#   bash test_slurm.sh BUILD_DIR
#
# Exit status: 0 pass, 1 fail, 77 skipped (the reason is printed).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "${1:?usage: test_slurm.sh BUILD_DIR}" && pwd)
client=$build/tests/slurm/slurm_client
export PP_PPSERVER=$build/net/ppserver
# shellcheck source-path=SCRIPTDIR source=cluster.sh
. "$here/cluster.sh"

if reason=$(slurm_skip_reason); then
    echo "SKIP: $reason"
    exit 77
fi
trap slurm_down EXIT
trap 'exit 1' INT TERM HUP

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
T=120

# Nothing of the job may be left: no queued or running job, no step
# process, no ppserver anywhere.
check_clean() {
    local what=$1 q
    for _ in $(seq 50); do
        q=$(squeue -h 2>/dev/null)
        [ -z "$q" ] && [ -z "$(slurm_stray_pids)" ] && ! pgrep -f "$PP_PPSERVER" >/dev/null && break
        sleep 0.2
    done
    [ -z "$q" ] || fail "$what: squeue still shows: $q"
    [ -z "$(slurm_stray_pids)" ] || fail "$what: step processes left: $(slurm_stray_pids)"
    if pgrep -f "$PP_PPSERVER" >/dev/null; then
        fail "$what: ppserver left: $(pgrep -af "$PP_PPSERVER")"
        pkill -9 -f "$PP_PPSERVER"
    fi
    ok "$what: nothing left"
}

t0=$(now)
slurm_up || { fail "slurm_up"; exit 1; }
echo "cluster up in $(since "$t0") s (node $SLURM_TEST_NODE)"
out=$SLURM_TEST_DIR/out
err=$SLURM_TEST_DIR/err
ncpus=$(nproc)

# 1. "slurm": pp starts the ppserver step itself, inside salloc.
t0=$(now)
if timeout $T salloc -Q -N1 --exclusive "$client" step 5000 >"$out" 2>"$err"; then
    ok "salloc + \"slurm\" client ($(since "$t0") s)"
else
    fail "salloc + \"slurm\" client exited $?"
    sed 's/^/  /' "$out" "$err" >&2
fi
grep -q "0 missing, 0 twice, 0 bad, 5000 on nodes" "$out" ||
    fail "\"slurm\": not every job ran once on the node: $(cat "$out")"
grep -Eq "^node [^ ]+:[0-9]+: up, $ncpus workers, 5000 jobs" "$out" ||
    fail "\"slurm\": the node row (want up, $ncpus workers = the job's CPUs): $(cat "$out")"
grep -q "slurm node" "$out" && fail "the announcement line leaked to the client's stdout"
cat "$out"
check_clean "\"slurm\""

# 2. A batch script starts the fleet; the client reads SLURM_JOB_NODELIST.
port=$(( (RANDOM % 10000) + 40000 ))
cat >"$SLURM_TEST_DIR/batch.sh" <<EOF
#!/bin/bash
PP_SECRET=\$(head -c 32 /dev/urandom | base64)
export PP_SECRET
srun -Q --ntasks-per-node=1 --whole --overlap "$PP_PPSERVER" -i 0.0.0.0 -p $port --slurm \
    >"$SLURM_TEST_DIR/fleet.out" 2>"$SLURM_TEST_DIR/fleet.err" &
fleet=\$!
for _ in \$(seq 100); do
    grep -q "slurm node" "$SLURM_TEST_DIR/fleet.out" 2>/dev/null && break
    sleep 0.05
done
"$client" nodes $port 3000
rc=\$?
scancel --quiet --signal=TERM "\$SLURM_JOB_ID.0"
wait \$fleet
echo "fleet exited \$?"
exit \$rc
EOF
t0=$(now)
if timeout $T sbatch -Q --wait -N1 --exclusive -o "$out" -e "$err" \
        "$SLURM_TEST_DIR/batch.sh" >/dev/null 2>&1; then
    ok "sbatch --wait + \"slurm-nodes:$port\" client ($(since "$t0") s)"
else
    fail "sbatch batch script exited $?"
    sed 's/^/  /' "$out" "$err" "$SLURM_TEST_DIR/fleet.err" >&2
fi
grep -q "0 missing, 0 twice, 0 bad, 3000 on nodes" "$out" ||
    fail "\"slurm-nodes\": not every job ran once on the node: $(cat "$out")"
grep -q "fleet exited 0" "$out" || fail "the fleet did not stop in order: $(cat "$out")"
cat "$out"
check_clean "\"slurm-nodes\""

# 3. A step that cannot start: more nodes than the allocation has (the
# node count comes from the job's environment, here made wrong on
# purpose), so the real srun refuses it.
if timeout $T salloc -Q -N1 env SLURM_JOB_NUM_NODES=5 SLURM_NNODES=5 "$client" step 10 \
        >"$out" 2>"$err"; then
    fail "a step that cannot start: the client succeeded"
else
    grep -q "pp_server_new: No child processes: slurm: srun ended (exit status 1) with 0 of 5 ppservers started: srun: error:" "$err" ||
        fail "a step that cannot start: no clear error: $(cat "$err")"
    ok "a step that cannot start: $(grep pp_server_new "$err")"
fi
check_clean "failed step"

if [ $failures -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all Slurm checks passed"
