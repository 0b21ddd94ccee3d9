#!/usr/bin/env bash
# Description: builds pp's libFuzzer targets (tests/fuzz/, clang, ASan +
# UBSan) and runs each one for FUZZ_SECONDS (default 60) on a copy of its
# seed corpus in a temporary directory, so the repository never gets new
# inputs.  Prints one line per target,
#   fuzz_X: N runs, 0 crashes
# and exits non-zero if any target failed to build, crashed, leaked, hung
# or ran out of memory.  A failing target's log and reproducer are kept
# (the line says where); run it again with
#   build-fuzz/tests/fuzz/fuzz_X <reproducer>
#
# Environment: FUZZ_SECONDS (per target), FUZZ_BUILD (build directory,
# default build-fuzz), FUZZ_TARGETS (e.g. "wire conf"; default: every
# tests/fuzz/fuzz_*.c).
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECONDS:-60}
build=${FUZZ_BUILD:-build-fuzz}
export CC=clang CXX=clang++

case $secs in
    ''|*[!0-9]*) echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds: '$secs'"; exit 2 ;;
esac

# --reconfigure on an existing dir: fs.exists() in tests/fuzz/meson.build
# must see targets added since it was set up.
reconf=
[ -f "$build/build.ninja" ] && reconf=--reconfigure
setup_log=$(mktemp "${TMPDIR:-/tmp}/pp-fuzz-setup.XXXXXX")
if ! meson setup $reconf "$build" -Dfuzz=enabled -Db_sanitize=address,undefined \
        -Db_lundef=false >"$setup_log" 2>&1; then
    grep -E 'ERROR|error' "$setup_log" | tail -5
    echo "fuzz.sh: meson setup of $build failed (log: $setup_log)"
    exit 1
fi
rm -f "$setup_log"

if [ -n "${FUZZ_TARGETS:-}" ]; then
    targets=$FUZZ_TARGETS
else
    targets=$(ls tests/fuzz/fuzz_*.c 2>/dev/null | sed 's|.*/fuzz_||; s|\.c$||')
fi
[ -n "$targets" ] || { echo "fuzz.sh: no targets in tests/fuzz"; exit 1; }

# UBSan only reports and goes on unless told to stop; a report is a crash.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1

status=0
build_log=$(mktemp "${TMPDIR:-/tmp}/pp-fuzz-build.XXXXXX")
for t in $targets; do
    exe=$build/tests/fuzz/fuzz_$t
    if ! ninja -C "$build" "tests/fuzz/fuzz_$t" >"$build_log" 2>&1; then
        grep -E 'error|FAILED' "$build_log" | head -20
        echo "fuzz_$t: build failed"
        status=1
        continue
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/pp-fuzz-$t.XXXXXX")
    mkdir "$work/corpus"
    if [ -d "tests/fuzz/corpus/$t" ]; then
        cp -R "tests/fuzz/corpus/$t/." "$work/corpus/"
    fi
    # -timeout: one input running this long is a hang.  The run may end a
    # little after max_total_time; the outer timeout is a backstop.
    timeout --signal=KILL $((secs + 120)) "$exe" \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=25 \
        -artifact_prefix="$work/" -print_final_stats=1 \
        "$work/corpus" >"$work/log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
    [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$work/log" | tail -1)
    [ -n "$runs" ] || runs=0
    artifacts=$(ls "$work" | grep -E '^(crash|leak|timeout|oom)-' || true)
    if [ $rc -eq 0 ] && [ -z "$artifacts" ]; then
        echo "fuzz_$t: $runs runs, 0 crashes"
        rm -rf "$work"
    else
        grep -E 'ERROR|SUMMARY|check failed|runtime error' "$work/log" | head -10
        echo "fuzz_$t: $runs runs, 1 crash (exit $rc); log and reproducer in $work"
        status=1
    fi
done
rm -f "$build_log"
exit $status
