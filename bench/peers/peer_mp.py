#!/usr/bin/env python3
"""peer_mp.py - ppbench's Python multiprocessing.Pool peer.

Runs ONE measurement and prints one JSON line, with the command line,
the jobs, the checks and the exit codes of the C peers (peer_common.h):

  peer_mp.py --workload W --workers N --jobs J [--payload B] [--echo]
             [--work-us U] [--seed S] [--variant V]

  exit 0 measured, 1 failed (wrong result, error), 2 bad command line,
  3 workload or variant not supported (nothing printed).

Written the way the multiprocessing documentation shows a Pool: jobs are
module-level functions (pickled by name), Pool(processes=N), and the
dispatch call that fits each workload.  Variants (first = default):

  overhead   apply_async | map | imap | imap_unordered  (chunksize J/(4N))
             (ppbench's collect runs imap and imap_unordered as overhead)
  map        map (chunksize J/(4N))
  latency    apply
  payload    apply_async | imap (chunksize J/(4N)), arguments are bytes
  scaling, imbalance   apply_async-pyspin
  stream     queue | pipe: one multiprocessing.Process puts J values
             (peer_stream_value) one by one on a Queue (put) or a Pipe
             (Connection.send); the parent takes each (get / recv) and
             checks it; --workers is 1, no Pool

The payload checksum is Python code as well (a few ms per MiB), so at
large B only --echo measures the transfer alone.  The scaling and
imbalance jobs spin in Python, reading the same
CLOCK_MONOTONIC as the C peers, so their length is right but the job
body is interpreted: only the dispatch is comparable, and those lines
report efficiency alone (ns_per_job and jobs_per_s are null).
"""

import argparse
import collections
import ctypes
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import time

EXIT_FAIL, EXIT_USAGE, EXIT_UNSUPPORTED = 1, 2, 3
MASK64 = (1 << 64) - 1
WORKLOADS = ("overhead", "map", "latency", "payload", "scaling", "imbalance", "stream")


class WrongResult(Exception):
    """A job came back with a result the collector did not expect."""


# --------------------------------------------------------------------
# The jobs (module level, so the pool pickles them by reference)
# --------------------------------------------------------------------

def trivial(x):
    """The trivial job of overhead/map/latency: x*2+1 (modulo 2^64)."""
    return (x * 2 + 1) & MASK64


def checksum(buf):
    """Sum of the little-endian 64-bit words plus the tail's bytes, mod 2^64."""
    n8 = len(buf) & ~7
    view = memoryview(buf)
    if sys.byteorder == "little":
        total = sum(view[:n8].cast("Q"))
    else:
        total = sum(int.from_bytes(view[k:k + 8], "little") for k in range(0, n8, 8))
    return (total + sum(view[n8:])) & MASK64


def echo(buf):
    """The --echo payload job: the argument itself comes back."""
    return buf


def spin(us):
    """Busy-waits us microseconds on CLOCK_MONOTONIC; answers us."""
    end = time.monotonic_ns() + us * 1000
    while time.monotonic_ns() < end:
        pass
    return us


def _die_with_parent(parent):
    """Pool initializer: a worker dies with the benchmark instead of
    waiting forever on the task queue of a killed parent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


# --------------------------------------------------------------------
# Arguments and expectations, as in peer_common.c
# --------------------------------------------------------------------

def payload_template(n):
    """The byte pattern of peer_payload_fill: p[i] = 131i + 7(i>>8) + 1.
    Block q of 256 bytes is block 0 plus 7q, hence one translate each."""
    base = bytes((131 * r + 1) & 0xFF for r in range(256))
    tables = [bytes((v + s) & 0xFF for v in range(256)) for s in range(256)]
    blocks = [base.translate(tables[(7 * q) & 0xFF]) for q in range((n + 255) // 256)]
    return b"".join(blocks)[:n]


def stamp(tmpl, i):
    """Job i's argument: the template with i in its first min(8, B) bytes."""
    h = min(8, len(tmpl))
    return i.to_bytes(8, "little")[:h] + tmpl[h:]


class PayloadRef:
    """Expected checksums in O(1): only the first word differs per job."""

    def __init__(self, tmpl):
        self.tmpl = tmpl
        self.sum = checksum(tmpl)
        self.word0 = int.from_bytes(tmpl[:8], "little") if len(tmpl) >= 8 else 0

    def expect(self, i):
        if len(self.tmpl) >= 8:
            return (self.sum - self.word0 + i) & MASK64
        return checksum(stamp(self.tmpl, i))

    def echo_ok(self, i, got):
        h = min(8, len(self.tmpl))
        return (len(got) == len(self.tmpl)
                and got[:h] == i.to_bytes(8, "little")[:h]
                and memoryview(got)[h:] == memoryview(self.tmpl)[h:])


def imbalance_plan(seed, jobs, workers):
    """Durations (us) from the shared LCG, and the ideal makespan in ns."""
    x, durations = seed & MASK64, []
    for _ in range(jobs):
        x = (x * 6364136223846793005 + 1442695040888963407) & MASK64
        r = (x >> 33) % 100
        durations.append(10 if r < 90 else (200 if r < 99 else 2000))
    ideal_us = max(sum(durations) / workers, max(durations))
    return durations, ideal_us * 1000.0


def chunksize(args):
    return max(1, args.jobs // (4 * args.workers))


def expect_trivial(x):
    """What the collector wants back for x, written out rather than by
    calling trivial(), so a broken job cannot vouch for itself."""
    return (2 * x + 1) & MASK64


def check(i, got, want):
    if got != want:
        raise WrongResult(f"job {i} returned {got}, want {want}")


def check_trivial(results):
    """Checks results[i] == 2i+1 for every i, and sums them."""
    total = 0
    for i, r in enumerate(results):
        check(i, r, expect_trivial(i))
        total += r
    return total


# --------------------------------------------------------------------
# The workloads: each returns the measured fields of the JSON line
# --------------------------------------------------------------------

def wall(args, ns):
    ns = max(ns, 1)
    return {"ns_per_job": ns / args.jobs, "jobs_per_s": args.jobs * 1e9 / ns}


def overhead_apply_async(pool, args):
    t0 = time.monotonic_ns()
    pending = [pool.apply_async(trivial, (i,)) for i in range(args.jobs)]
    check_trivial(p.get() for p in pending)
    return wall(args, time.monotonic_ns() - t0)


def overhead_map(pool, args):
    items = list(range(args.jobs))
    t0 = time.monotonic_ns()
    check_trivial(pool.map(trivial, items, chunksize=chunksize(args)))
    return wall(args, time.monotonic_ns() - t0)


def overhead_imap(pool, args):
    t0 = time.monotonic_ns()
    check_trivial(pool.imap(trivial, range(args.jobs), chunksize=chunksize(args)))
    return wall(args, time.monotonic_ns() - t0)


def overhead_imap_unordered(pool, args):
    t0 = time.monotonic_ns()
    got = sorted(pool.imap_unordered(trivial, range(args.jobs), chunksize=chunksize(args)))
    check_trivial(got)  # 2x+1 is one-to-one: sorted results must be 1, 3, 5, ...
    return wall(args, time.monotonic_ns() - t0)


def stream_value(k):
    """Value k of a stream (peer_stream_value): the trivial job of k."""
    return expect_trivial(k)


def stream_put(q, n, parent):
    """The child of stream/queue: n values, each put on its own."""
    _die_with_parent(parent)
    for k in range(n):
        q.put((2 * k + 1) & MASK64)
    q.close()
    q.join_thread()  # every value is in the pipe before the child exits


def stream_send(conn, n, parent):
    """The child of stream/pipe: n values, each sent on its own."""
    _die_with_parent(parent)
    for k in range(n):
        conn.send((2 * k + 1) & MASK64)
    conn.close()


def stream_run(args, make):
    """Starts the child that make() sets up, takes its n values with the
    getter make() returns, checks each; the time runs from the start of
    the child (a fork) to the last value.  started() runs in the parent
    once the child runs, done() after the last value."""
    if args.workers != 1:
        print(f"peer_mp.py: one child streams; --workers {args.workers} ignored",
              file=sys.stderr)
    proc, get, started, done = make(args.jobs)
    t0 = time.monotonic_ns()
    proc.start()
    started()
    try:
        for k in range(args.jobs):
            check(k, get(), stream_value(k))
        ns = time.monotonic_ns() - t0
        done()
        proc.join()
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
    if proc.exitcode != 0:
        raise WrongResult(f"the streaming child exited {proc.exitcode}")
    return wall(args, ns)


def stream_queue(args):
    def make(n):
        q = multiprocessing.Queue()
        proc = multiprocessing.Process(target=stream_put, args=(q, n, os.getpid()))
        return proc, q.get, lambda: None, q.close
    return stream_run(args, make)


def stream_pipe(args):
    def make(n):
        recv_end, send_end = multiprocessing.Pipe(duplex=False)
        proc = multiprocessing.Process(target=stream_send, args=(send_end, n, os.getpid()))
        # The parent closes its copy of the send end once the child has
        # it: a child that dies then shows as EOFError, not a hang.
        return proc, recv_end.recv, send_end.close, recv_end.close
    return stream_run(args, make)


def percentile(sorted_v, p):
    """Nearest rank, as peer_percentile: the ceil(p*n)-th smallest."""
    rank = max(1, math.ceil(p * len(sorted_v) - 1e-9))  # as peer_percentile
    return sorted_v[min(rank, len(sorted_v)) - 1]


# The percentile levels of every latency line: PEER_PCT_LEVELS in
# peer_common.h, same order.
PCT_LEVELS = (0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100)


def latency_apply(pool, args):
    t0 = time.monotonic_ns()
    check(0, pool.apply(trivial, (0,)), expect_trivial(0))  # first call of trivial
    first = time.monotonic_ns() - t0
    rtt = []
    for i in range(args.jobs):
        t0 = time.monotonic_ns()
        r = pool.apply(trivial, (i,))
        rtt.append(time.monotonic_ns() - t0)
        check(i, r, expect_trivial(i))
    mean = sum(rtt) / len(rtt)
    rtt.sort()
    return {"ns_per_job": mean, "jobs_per_s": 1e9 / max(mean, 1e-9),
            "p50_ns": percentile(rtt, 0.5), "p99_ns": percentile(rtt, 0.99),
            "p999_ns": percentile(rtt, 0.999),
            "percentiles": [[lv, percentile(rtt, lv / 100)] for lv in PCT_LEVELS],
            "first_call_ns": first, "repeat_call_ns": mean}


def payload_fields(args, ns):
    out = wall(args, ns)
    moved = args.jobs * args.payload * (2 if args.echo else 1)
    out["gbps"] = moved / (max(ns, 1) / 1e9) / 1e9
    return out


def payload_collect(ref, args, results):
    for i, r in enumerate(results):
        if args.echo:
            if not ref.echo_ok(i, r):
                raise WrongResult(f"payload job {i}: echo differs")
        else:
            check(i, r, ref.expect(i))


INFLIGHT_BYTES = 64 << 20


def windowed(pool, job, argv, window):
    """apply_async over argv, keeping at most window jobs outstanding:
    Pool's task queue is unbounded, and J arguments (or echoes) of B
    bytes each would all sit in memory at once.  Yields results in order."""
    pending = collections.deque()
    for a in argv:
        if len(pending) >= window:
            yield pending.popleft().get()
        pending.append(pool.apply_async(job, (a,)))
    while pending:
        yield pending.popleft().get()


def payload_apply_async(pool, args):
    tmpl = payload_template(args.payload)
    ref, job = PayloadRef(tmpl), (echo if args.echo else checksum)
    window = max(2 * args.workers, INFLIGHT_BYTES // args.payload)
    t0 = time.monotonic_ns()
    argv = (stamp(tmpl, i) for i in range(args.jobs))
    payload_collect(ref, args, windowed(pool, job, argv, window))
    return payload_fields(args, time.monotonic_ns() - t0)


def payload_imap(pool, args):
    tmpl = payload_template(args.payload)
    ref, job = PayloadRef(tmpl), (echo if args.echo else checksum)
    t0 = time.monotonic_ns()
    argv = (stamp(tmpl, i) for i in range(args.jobs))
    payload_collect(ref, args, pool.imap(job, argv, chunksize=chunksize(args)))
    return payload_fields(args, time.monotonic_ns() - t0)


def spin_apply_async(pool, args):
    if args.workload == "scaling":
        durations = [args.work_us] * args.jobs
        ideal = args.jobs * args.work_us * 1000.0 / args.workers
    else:
        durations, ideal = imbalance_plan(args.seed, args.jobs, args.workers)
    t0 = time.monotonic_ns()
    pending = [pool.apply_async(spin, (d,)) for d in durations]
    for i, (p, d) in enumerate(zip(pending, durations)):
        check(i, p.get(), d)
    return {"efficiency": ideal / max(time.monotonic_ns() - t0, 1)}


VARIANTS = {
    "overhead": {"apply_async": overhead_apply_async, "map": overhead_map,
                 "imap": overhead_imap, "imap_unordered": overhead_imap_unordered},
    "map": {"map": overhead_map},
    "latency": {"apply": latency_apply},
    "payload": {"apply_async": payload_apply_async, "imap": payload_imap},
    "scaling": {"apply_async-pyspin": spin_apply_async},
    "imbalance": {"apply_async-pyspin": spin_apply_async},
    "stream": {"queue": stream_queue, "pipe": stream_pipe},  # no Pool
}
NO_POOL = ("stream",)


# --------------------------------------------------------------------
# Command line, machine, output
# --------------------------------------------------------------------

def unsigned(s):
    if not s.isdigit() or int(s) > MASK64:
        raise argparse.ArgumentTypeError("wants an unsigned 64-bit integer")
    return int(s)


def positive(limit):
    def parse(s):
        if not s.isdigit() or not 0 < int(s) <= limit:
            raise argparse.ArgumentTypeError(f"wants 1..{limit}")
        return int(s)
    return parse


def parse_args(argv):
    p = argparse.ArgumentParser(prog="peer_mp.py", allow_abbrev=False)
    p.add_argument("--workload", required=True)
    p.add_argument("--workers", required=True, type=positive(4096))
    p.add_argument("--jobs", required=True, type=positive(1 << 40))
    p.add_argument("--payload", type=positive(1 << 30), default=4096)
    p.add_argument("--echo", action="store_true")
    p.add_argument("--work-us", type=positive(60_000_000), default=100)
    p.add_argument("--seed", type=unsigned, default=1)
    p.add_argument("--variant")
    return p.parse_args(argv)


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.sysconf('SC_NPROCESSORS_ONLN')} cores"


def version():
    return (re.sub(r"\s+", " ", sys.version).strip()
            + f" multiprocessing ({multiprocessing.get_start_method()})")


def json_line(args, variant, fields):
    line = {
        "workload": args.workload, "system": "multiprocessing", "variant": variant,
        "workers": args.workers, "jobs": args.jobs,
        "payload_bytes": args.payload if args.workload == "payload" else None,
    }
    for key in ("ns_per_job", "jobs_per_s", "p50_ns", "p99_ns", "p999_ns", "gbps",
                "first_call_ns", "repeat_call_ns", "efficiency", "percentiles"):
        line[key] = fields.get(key)
    line["machine"] = machine()
    line["version"] = version()
    # A measurement that came out infinite or NaN is a failure, not a line:
    # allow_nan=False raises, and main() exits EXIT_FAIL with the reason.
    return json.dumps(line, allow_nan=False)


def pick_variant(args):
    table = VARIANTS.get(args.workload)
    if table is None:
        print(f"peer_mp.py: workload {args.workload} not supported", file=sys.stderr)
        return None, None
    name = args.variant or next(iter(table))
    if name not in table:
        print(f"peer_mp.py: {args.workload} variant {name} not supported", file=sys.stderr)
        return None, None
    return name, table[name]


def main(argv):
    args = parse_args(argv)
    name, run = pick_variant(args)
    if run is None:
        return EXIT_UNSUPPORTED
    if args.workload in NO_POOL:
        try:
            fields = run(args)
        except WrongResult as e:
            print(f"peer_mp.py: {e}", file=sys.stderr)
            return EXIT_FAIL
        print(json_line(args, name, fields), flush=True)
        return 0
    pool = multiprocessing.Pool(processes=args.workers, initializer=_die_with_parent,
                                initargs=(os.getpid(),))
    try:
        # Every worker is started by Pool(); one round trip each is not
        # timed, so the measurement starts on a running pool.
        pool.map(abs, range(args.workers), chunksize=1)
        fields = run(pool, args)
    except WrongResult as e:
        print(f"peer_mp.py: {e}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        pool.terminate()  # reaps the workers; none are left behind
        pool.join()
    print(json_line(args, name, fields), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(EXIT_FAIL)
    except Exception as e:  # pylint: disable=broad-except
        print(f"peer_mp.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(EXIT_FAIL)
