"""Every performance figure in one command, each printed next to its limit or target.

Runs the benchmarks one after another, each in its own process, on this machine:
1. `bench.sms_client`: the client against the provider's limits (2,000 single sends, 10,000 batch
   recipients; both event loops), beside bare aiohttp with our signing and limiter and the official SDK.
2. `bench.footprint`: start-up to a healthy `/healthz` (beside the libraries' import floor) and idle
   memory.
3. `bench.ack_latency`: acks for a burst of 200 commands, then for 20 commands a second.
4. `bench.bulk`: 10,000 recipients (ratio to the limit, the confirmation's ack, event-loop lag, memory
   the bulk adds).
5. `bench.outage`: a 2,000-member outage page.
6. `bench.bulk --recipients 50000`: the confirmation's ack and the loop lag at five times the default
   maximum.
With `--baseline REV`, the footprint and the acks are measured side by side with that revision of this
repository in the same run (alternating rounds). Takes about five minutes; the steps print as they go.

    .venv/bin/python -m bench
    .venv/bin/python -m bench --baseline 9426fd1
    .venv/bin/python -m bench --database postgresql --replicas 2   # bulk and outage on PostgreSQL
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from .baseline import ROOT


def steps(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    side = ["--baseline", args.baseline] if args.baseline else []
    cluster = ["--database", args.database, "--replicas", str(args.replicas)]
    return [
        ("the SMS client beside bare aiohttp and the official SDK", ["bench.sms_client"]),
        ("start-up and idle memory", ["bench.footprint", "--rounds", "3", *side]),
        ("acks: a burst of 200 commands", ["bench.ack_latency", "--rounds", "2", *side]),
        ("acks: 20 commands a second", ["bench.ack_latency", "--steady", "20", "--rounds", "2", *side]),
        ("bulk of 10,000", ["bench.bulk", *cluster]),
        # Before the 50,000 bulk: run straight after it, the outage measured 1.21-1.29x instead of 1.08x.
        ("outage page to 2,000", ["bench.outage", *cluster]),
        ("bulk of 50,000", ["bench.bulk", "--recipients", "50000", *cluster]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a git revision to measure side by side (footprint, acks)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    failed = []
    for title, command in steps(args):
        print(f"\n== {title}: python -m {' '.join(command)}", flush=True)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, check=False)
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
        if done.returncode != 0:
            failed.append(title)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
