#!/usr/bin/env python3
"""Description: runs one peer once and checks it keeps the peer contract.

  peer_smoke.py <peer> <peer arguments...>

Passes when the peer exits 0 having printed exactly one JSON line with
every field ppbench reads, and nothing else on stdout.  A peer that
answers 3 (unsupported) or 4 (skipped, e.g. no mpirun) makes this a
skipped test (77), as meson counts it.  Run by `meson test --suite peers`.
"""

import json
import subprocess
import sys

FIELDS = ("workload", "system", "variant", "workers", "jobs", "payload_bytes",
          "ns_per_job", "jobs_per_s", "p50_ns", "p99_ns", "p999_ns", "gbps",
          "first_call_ns", "repeat_call_ns", "efficiency", "percentiles", "machine",
          "version")
SKIP = 77


def main(argv):
    cmd = argv[1:]
    if cmd[0].endswith(".py"):
        cmd = [sys.executable] + cmd
    run = subprocess.run(cmd, stdout=subprocess.PIPE, timeout=120, check=False)
    if run.returncode in (3, 4):
        return SKIP
    if run.returncode != 0:
        print(f"peer exited {run.returncode}", file=sys.stderr)
        return 1
    lines = run.stdout.decode().splitlines()
    if len(lines) != 1:
        print(f"want one line on stdout, got {len(lines)}", file=sys.stderr)
        return 1
    line = json.loads(lines[0])
    if tuple(line) != FIELDS:
        print(f"fields differ: {list(line)}", file=sys.stderr)
        return 1
    print(lines[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
