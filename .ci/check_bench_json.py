#!/usr/bin/env python3
"""Checks `ppbench all --quick --json` output: every line a JSON object
with every required field, and every workload measured for pp.  Never
checks that a figure is below a bound (machines are noisy)."""
import json
import sys

REQUIRED = ["workload", "system", "workers", "jobs", "payload_bytes",
            "ns_per_job", "jobs_per_s", "p50_ns", "p99_ns", "p999_ns", "gbps",
            "first_call_ns", "repeat_call_ns", "efficiency", "machine", "version"]
WORKLOADS = ["overhead", "map", "latency", "payload", "cache", "scaling",
             "imbalance", "c2c"]


def main(path):
    seen = set()
    with open(path) as f:
        lines = [l for l in f if l.strip()]
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except ValueError as e:
            print(f"line {n}: not JSON: {e}")
            return 1
        missing = [k for k in REQUIRED if k not in obj]
        if missing:
            print(f"line {n}: missing {missing}")
            return 1
        if obj["system"] == "pp":
            seen.add(obj["workload"])
    absent = [w for w in WORKLOADS if w not in seen]
    if absent:
        print(f"no pp measurement for {absent}")
        return 1
    print(f"ppbench JSON: {len(lines)} lines, all {len(WORKLOADS)} workloads measured for pp")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
