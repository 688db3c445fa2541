#!/usr/bin/env python3
"""Split every onnx backend node-test model at every candidate cut; print a summary.

For each node test that ships with the installed `onnx` package (built in memory by
``onnx.backend.test.loader.load_model_tests(kind="node")``):
- *not runnable*: onnxruntime cannot run the original model (unsupported op/type): skipped;
- *refused*: onnxsplit refuses to load or split it, with its one-line reason (counted by reason);
- *exact*: every prefix cut and every single-tensor cut recombines bit-identically
  (onnxruntime optimizations off, the test's own input data);
- *fp16-rounding*: every differing cut sends float16/bfloat16 tensors and the outputs agree within
  half-precision rounding (onnxruntime computes those kernels in fp32 and skips the rounding that
  the split, as ONNX prescribes, performs at the boundary);
- *MISMATCH*: some cut does not recombine exactly (a bug).

Usage: python tools/split_node_tests.py [--filter SUBSTRING] [--limit N] [--verbose]
Exit status 1 when any model mismatches.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filter", default="", help="only test names containing this")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    from onnxsplit.conformance import run_node_tests

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_node_tests(name_filter=args.filter, limit=args.limit)
    counts = collections.Counter(r.status for r in results)
    refusals = collections.Counter(r.reason_kind for r in results if r.status == "refused")
    cuts = sum(r.cuts for r in results)
    for r in results:
        if r.status == "MISMATCH" or (args.verbose and r.status != "exact"):
            print(f"{r.status:12s} {r.name}: {r.reason}")
    print()
    print(f"{'status':14s} {'models':>7s}")
    for status in ("exact", "fp16-rounding", "refused", "not runnable", "MISMATCH"):
        print(f"{status:14s} {counts.get(status, 0):7d}")
    print(f"{'total':14s} {len(results):7d}   ({cuts} cuts checked, {time.perf_counter() - t0:.0f} s)")
    if refusals:
        print("\nrefusals by reason:")
        for reason, n in refusals.most_common():
            print(f"  {n:5d}  {reason}")
    return 1 if counts.get("MISMATCH") else 0


if __name__ == "__main__":
    sys.exit(main())
