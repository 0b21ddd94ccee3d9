#!/usr/bin/env python3
"""Checks `ppbench all --quick --json` output: every line a JSON object
with every required field and no infinite or NaN number, every workload
measured for pp, the default-configuration overhead row present with its
per-server figures, every latency line carrying its percentile curve, and
the collect rows of pp (plain submit+wait, ordered, arrival) each with
its ratio to the plain baseline.
The remote-* workloads need a ppserver node: their pp rows may instead be
skipped, with the reason in "skipped" and no figure at all (never a
made-up one); a skipped row that carries a number fails.
Never checks that a figure is below a bound (machines are noisy)."""
import json
import sys

REQUIRED = ["workload", "system", "workers", "jobs", "payload_bytes", "work_us",
            "ns_per_job", "jobs_per_s", "p50_ns", "p99_ns", "p999_ns", "gbps",
            "first_call_ns", "repeat_call_ns", "efficiency", "percentiles",
            "servers", "server_ns", "worst_ns", "median_ns", "best_ns",
            "machine", "version", "skipped"]
WORKLOADS = ["overhead", "map", "latency", "payload", "cache", "scaling",
             "imbalance", "c2c", "stream", "collect"]
# pp rows measured, or skipped (with a reason) when no node is there
REMOTE_WORKLOADS = ["remote-overhead", "remote-latency", "remote-payload",
                    "remote-stream", "remote-cache"]
# collect: pp's rows, each with baseline_ratio (ns/job over submit+wait's)
COLLECT_VARIANTS = ["submit+wait", "ordered", "arrival"]
FIGURES = ["work_us", "ns_per_job", "jobs_per_s", "p50_ns", "p99_ns", "p999_ns",
           "gbps", "first_call_ns", "repeat_call_ns", "efficiency", "percentiles",
           "servers", "server_ns", "worst_ns", "median_ns", "best_ns"]


def no_constant(name):
    # json.loads accepts Infinity, -Infinity and NaN by default: a line
    # that holds one reports a measurement that failed.
    raise ValueError(f"{name} is not a measurement")


def check_default(obj):
    """The overhead row of pp_server_new(NULL): worst of several servers."""
    n = obj["servers"]
    per = obj["server_ns"]
    if not isinstance(n, int) or n < 2 or not isinstance(per, list) or len(per) != n:
        return f"servers {n!r} / server_ns {per!r}: want 2 or more servers, one figure each"
    for k in ("worst_ns", "median_ns", "best_ns", "ns_per_job"):
        if not isinstance(obj[k], (int, float)):
            return f"{k} is {obj[k]!r}"
    if not obj["best_ns"] <= obj["median_ns"] <= obj["worst_ns"]:
        return "want best_ns <= median_ns <= worst_ns"
    if obj["worst_ns"] != max(per) or obj["best_ns"] != min(per):
        return "worst_ns/best_ns are not the max/min of server_ns"
    return None


def check_skipped(obj):
    """A skipped row: a reason, and not one figure."""
    why = obj["skipped"]
    if not isinstance(why, str) or not why.strip():
        return f"skipped is {why!r}: want null or a reason"
    if obj["workload"] not in REMOTE_WORKLOADS:
        return f"{obj['workload']} rows are never skipped"
    figures = [k for k in FIGURES if obj[k] is not None]
    if figures:
        return f"skipped ({why}) but carries {figures}"
    return None


def main(path):
    seen = set()
    collect = set()
    skipped = {}
    default_row = False
    with open(path) as f:
        lines = [l for l in f if l.strip()]
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line, parse_constant=no_constant)
        except ValueError as e:
            print(f"line {n}: not JSON: {e}")
            return 1
        missing = [k for k in REQUIRED if k not in obj]
        if missing:
            print(f"line {n}: missing {missing}")
            return 1
        if obj["skipped"] is not None:
            why = check_skipped(obj)
            if why:
                print(f"line {n}: {why}")
                return 1
            if obj["system"] == "pp":
                skipped.setdefault(obj["workload"], obj["skipped"])
            continue
        if obj["workload"] in ("latency", "remote-latency"):
            pct = obj["percentiles"]
            if not isinstance(pct, list) or not pct or any(
                    not isinstance(p, list) or len(p) != 2 for p in pct):
                print(f"line {n}: latency line without its percentiles: {pct!r}")
                return 1
        if obj["system"] == "pp":
            seen.add(obj["workload"])
            if obj["workload"] == "overhead" and obj.get("variant") == "default":
                why = check_default(obj)
                if why:
                    print(f"line {n}: overhead default: {why}")
                    return 1
                default_row = True
            if obj["workload"] == "collect":
                ratio = obj.get("baseline_ratio")
                if not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
                    print(f"line {n}: collect {obj.get('variant')}: baseline_ratio {ratio!r}")
                    return 1
                collect.add(obj.get("variant"))
    absent = [w for w in WORKLOADS if w not in seen]
    absent += [w for w in REMOTE_WORKLOADS if w not in seen and w not in skipped]
    if absent:
        print(f"no pp measurement for {absent}")
        return 1
    lacking = [v for v in COLLECT_VARIANTS if v not in collect]
    if lacking:
        print(f"no pp collect row for {lacking}")
        return 1
    if not default_row:
        print("no pp overhead row for the default configuration (variant 'default')")
        return 1
    measured = len(WORKLOADS) + len([w for w in REMOTE_WORKLOADS if w in seen])
    print(f"ppbench JSON: {len(lines)} lines, {measured} of "
          f"{len(WORKLOADS) + len(REMOTE_WORKLOADS)} workloads measured for pp")
    for w, why in skipped.items():
        print(f"  {w}: pp rows skipped: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
