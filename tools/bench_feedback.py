#!/usr/bin/env python3
"""Cost of the dynamic runner's per-request plan choice (``PlanFeedback.choose`` + ``observe``).

The choice runs on the edge device before every request. On a weak or CPU-throttled edge (the
testbed gives the edge 1 ms of CPU per 10 ms), every 100 us it takes is a tenth of the CPU a
request gets per period, and a request that overruns its quota waits for the next period. This
times ``choose()`` and ``observe()`` with full residual histories (random bandwidths and latencies)
for a few plan counts and prints a table (microseconds per call on this machine).

    python tools/bench_feedback.py            # a few seconds
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxsplit.cli import int_list  # noqa: E402


def bench(n_plans: int, calls: int, seed: int = 0) -> tuple[float, float]:
    from onnxsplit.dynamic import PlanFeedback

    rng = random.Random(seed)
    fb = PlanFeedback({k: (10.0 + k, 100.0 * 2 ** k) for k in range(n_plans)})
    bws = [1.0, 5.0, 14.0, 50.0, 100.0, 400.0, 1000.0, 3000.0]
    t0 = time.perf_counter()
    for i in range(calls):
        fb.observe(rng.randrange(n_plans), rng.choice(bws), 20.0 + 10.0 * rng.random(), now=i * 0.001)
    observe_us = (time.perf_counter() - t0) / calls * 1e6
    t0 = time.perf_counter()
    for _ in range(calls):
        fb.choose(rng.choice(bws), 0, now=calls * 0.001)
    return (time.perf_counter() - t0) / calls * 1e6, observe_us


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_feedback", description=__doc__.split("\n\n")[0])
    ap.add_argument("--plans", type=int_list, default="2,4,8,16", help="plan counts to time")
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args(argv)
    from onnxsplit.cli import table

    counts = args.plans
    if not counts or min(counts) < 1 or args.calls < 1:
        print("error: need plan counts >= 1 and --calls >= 1", file=sys.stderr)
        return 2
    rows = []
    for n in counts:
        choose_us, observe_us = bench(n, args.calls)
        rows.append((n, f"{choose_us:.1f}", f"{observe_us:.1f}"))
    print(f"PlanFeedback, full histories, {args.calls} calls each (microseconds per call, this machine):")
    print(table(["plans", "choose() us", "observe() us"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
