#!/usr/bin/env python3
"""How repeatable is a latency measurement on this machine? (the noise floor of cost-model accuracy)

A cost model cannot be shown to be within +-10 % of a latency that itself moves by more than that
between two measurements. For a few generated networks (``onnxsplit.netgen``) this measures each
one twice, independently (A and B: ``--rounds`` fresh sessions x ``--reps`` timed runs each, the
protocol of ``onnxsplit profile``), and reports, per statistic, how far A and B are apart:

* ``pooled median``: median of all A (B) runs;
* ``lowest round median``: what ``onnxsplit profile`` and ``tools/eval_cost_model.py`` keep;
* ``min``: fastest run.

Then, for intra-op threads 1 and 2, the coefficient of variation of per-round medians of the same
net over ``--cv-rounds`` rounds (a 2-vCPU VM whose second vCPU is preempted makes two-thread runs
wait for it). Last, **thread scaling over time**: ``--phase-pairs`` pairs of fresh sessions of net
``--phase-seed`` (a 320x320 CNN that two threads run in about half the one-thread time when both
vCPUs deliver), one with 1 intra-op thread then one with 2, back to back: how often two threads
give their speed-up, and the longest stretch of consecutive pairs without it. Prints three tables;
``--json`` for the raw numbers. Run it on an otherwise idle machine
(as root it raises its CPU priority like ``onnxsplit profile --high-priority``).

    python tools/bench_timing_noise.py                 # 8 nets, about 30 seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxsplit.cli import int_list  # noqa: E402


def _session(model, threads: int):  # noqa: ANN001, ANN202
    from onnxsplit.profile import feeds_for, make_timed_session

    s = make_timed_session(model, threads=threads, providers=["CPUExecutionProvider"])
    feeds = feeds_for(s)
    for _ in range(3):
        s.run(None, feeds)
    return s, feeds


def _round(model, threads: int, reps: int) -> np.ndarray:  # noqa: ANN001
    s, feeds = _session(model, threads)
    out = np.empty(reps)
    for i in range(reps):
        t = time.perf_counter_ns()
        s.run(None, feeds)
        out[i] = (time.perf_counter_ns() - t) / 1e6
    return out


def measure(model, *, threads: int, rounds: int, reps: int) -> dict[str, float]:  # noqa: ANN001
    runs = [_round(model, threads, reps) for _ in range(rounds)]
    pooled = np.concatenate(runs)
    return {"pooled median": float(np.median(pooled)), "lowest round median": float(min(np.median(r) for r in runs)),
            "min": float(pooled.min())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_timing_noise", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int_list, default="3,40,77,120,200,5,9,150", help="netgen seeds of the nets to time")
    ap.add_argument("--rounds", type=int, default=5, help="fresh sessions per measurement")
    ap.add_argument("--reps", type=int, default=30, help="timed runs per round")
    ap.add_argument("--cv-rounds", type=int, default=30, help="rounds for the thread-count comparison")
    ap.add_argument("--phase-seed", type=int, default=5, help="netgen seed of the net for the thread-scaling table")
    ap.add_argument("--phase-pairs", type=int, default=40, help="1-thread/2-thread session pairs for that table (0: skip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from onnxsplit.cli import table
    from onnxsplit.profile import HighPriority, build_spec

    seeds = args.seeds
    if not seeds or args.rounds < 1 or args.reps < 3 or args.cv_rounds < 3:
        print("error: need at least one seed, --rounds >= 1, --reps >= 3, --cv-rounds >= 3", file=sys.stderr)
        return 2
    doc: dict = {"pairs": [], "cv": {}}
    with HighPriority() as prio:
        for seed in seeds:
            model = build_spec({"gen": "net", "seed": seed, "v": 1, "max_mflops": 4000.0})
            a = measure(model, threads=2, rounds=args.rounds, reps=args.reps)
            b = measure(model, threads=2, rounds=args.rounds, reps=args.reps)
            doc["pairs"].append({"seed": seed, "a": a, "b": b})
            print(f"net seed {seed}: " + ", ".join(f"{k} {a[k]:.3f}/{b[k]:.3f} ms" for k in a), file=sys.stderr, flush=True)
        model = build_spec({"gen": "net", "seed": seeds[0], "v": 1, "max_mflops": 4000.0})
        for threads in (1, 2):
            meds = [float(np.median(_round(model, threads, max(5, args.reps // 3)))) for _ in range(args.cv_rounds)]
            doc["cv"][threads] = {"mean_ms": float(np.mean(meds)), "cv_pct": float(np.std(meds) / np.mean(meds) * 100),
                                  "max_over_min": float(max(meds) / min(meds))}
        if args.phase_pairs > 0:
            model = build_spec({"gen": "net", "seed": args.phase_seed, "v": 1, "max_mflops": 4000.0})
            pairs = []
            for _ in range(args.phase_pairs):
                one = float(np.median(_round(model, 1, 8)))
                two = float(np.median(_round(model, 2, 8)))
                pairs.append((one, two))
            doc["phases"] = {"seed": args.phase_seed, "pairs_ms": pairs}
        doc["high_priority"] = prio.applied
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    rows = []
    for stat in ("pooled median", "lowest round median", "min"):
        diff = [abs(p["a"][stat] - p["b"][stat]) / min(p["a"][stat], p["b"][stat]) * 100 for p in doc["pairs"]]
        rows.append((stat, f"{np.mean(diff):.1f} %", f"{np.max(diff):.1f} %",
                     f"{sum(d <= 5 for d in diff)}/{len(diff)}"))
    print(f"two independent measurements (A, B) of {len(seeds)} nets, 2 threads, {args.rounds} rounds x {args.reps} runs each"
          f"{'' if doc['high_priority'] else ' (normal priority)'}:")
    print(table(["statistic", "mean |A-B|", "max |A-B|", "A,B within 5 %"], rows))
    print(f"\nper-round median of net seed {seeds[0]} over {args.cv_rounds} rounds:")
    print(table(["threads", "mean ms", "coefficient of variation", "max / min"],
                [(t, f"{c['mean_ms']:.3f}", f"{c['cv_pct']:.1f} %", f"{c['max_over_min']:.2f}")
                 for t, c in doc["cv"].items()]))
    if "phases" in doc:
        ph = doc["phases"]
        one = np.array([p[0] for p in ph["pairs_ms"]])
        two = np.array([p[1] for p in ph["pairs_ms"]])
        speedup = one / two
        longest = run = 0
        for x in speedup:
            run = run + 1 if x < 1.3 else 0
            longest = max(longest, run)
        print(f"\nthread scaling over time: net seed {ph['seed']}, {len(one)} pairs of fresh sessions (1 thread, then 2), "
              "8 runs each:")
        print(table(["1 thread: median ms (min-max)", "2 threads: median ms (min-max)", "pairs with speed-up >= 1.5",
                     "pairs with speed-up < 1.3", "longest run of pairs < 1.3"],
                    [(f"{np.median(one):.2f} ({one.min():.2f}-{one.max():.2f})",
                      f"{np.median(two):.2f} ({two.min():.2f}-{two.max():.2f})",
                      f"{int((speedup >= 1.5).sum())}/{len(one)}", f"{int((speedup < 1.3).sum())}/{len(one)}", longest)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
