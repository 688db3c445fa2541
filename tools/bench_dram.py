#!/usr/bin/env python3
"""How fast does onnxruntime stream weights from DRAM on this machine? (the cost model's memory floor)

A cost model may carry a memory floor (``onnxsplit cost-model fit --memory-floor-cache-mb MB
[--memory-floor-gbps G]``, :meth:`onnxsplit.cost.model.CostModel.memory_floor_ms`): a kernel whose
bytes exceed the last-level cache is predicted at least ``bytes / G``. The laws cannot learn it
(the training kernels are cache-resident), so G must be measured, and measured the way the model
runs: onnxruntime, the profile's thread count, weights streamed once per run. This times a
batch-1 MatMul ``[1, K] x [K, N]`` (a fully connected layer: every weight read once, 2 FLOP per
4 bytes, far below the compute peak) whose fp32 weight is ``--llc-multiples`` times the
last-level cache (read from sysfs), for 1 thread and for the profile's default thread count, and
prints one row per case: median latency and weight MB / median ms (GB/s). The figure of the largest
weight at the default thread count is what ``--memory-floor-gbps`` takes for a cost model of that
thread count (printed as the last line).

    python tools/bench_dram.py                          # 1x, 2x, 4x the LLC; 1 and default threads
    python tools/bench_dram.py --llc-multiples 4 --reps 30

Each case is timed in ``--rounds`` fresh sessions, back to back; the lowest session median is kept
(interference only slows a run down).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_LLC_MB = 32.0  # when sysfs does not say


def llc_mb() -> float:
    """Size of the largest CPU cache of cpu0 in MiB as sysfs states it ("32768K" -> 32), or
    :data:`DEFAULT_LLC_MB`. (The floor's ``cache_mb`` counts 1e6 bytes, so passing this figure puts the
    threshold ~5 % below the cache: on the safe side.)"""
    best = 0.0
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            s = (d / "size").read_text().strip().upper()
        except OSError:
            continue
        mult = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}.get(s[-1:], None)
        try:
            v = float(s[:-1]) * mult if mult is not None else float(s) / 2**20
        except ValueError:
            continue
        best = max(best, v)
    return best or DEFAULT_LLC_MB


def matvec_model(weight_mb: float):  # noqa: ANN201 - onnx.ModelProto
    """A batch-1 MatMul ``[1, K] x [K, 4096]`` whose fp32 weight has about ``weight_mb`` MB, and its exact MB."""
    from onnx import TensorProto, helper, numpy_helper

    n = 4096
    k = max(64, int(round(weight_mb * 2**20 / (4 * n) / 64)) * 64)
    w = numpy_helper.from_array((np.random.default_rng(0).standard_normal((k, n)) * 0.01).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "matvec",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), k * n * 4 / 1e6


def measure(weight_mb: float, *, threads: int, rounds: int, reps: int) -> dict[str, float]:
    """``{"weight_mb", "median_ms", "gbps"}`` of the matvec streaming ``weight_mb`` (lowest round median)."""
    from onnxsplit.profile import measure_model

    model, mb = matvec_model(weight_mb)
    ms = min(measure_model(model, threads=threads, warmup=3, reps=reps, max_seconds=2.0).median_ms
             for _ in range(max(1, rounds)))
    return {"weight_mb": mb, "median_ms": ms, "gbps": mb / ms}  # MB/ms = GB/s


def main(argv: list[str] | None = None) -> int:
    from onnxsplit.profile import default_threads

    p = argparse.ArgumentParser(prog="bench_dram", description=__doc__.split("\n\n")[0])
    p.add_argument("--llc-multiples", default="1,2,4", help="weight sizes as multiples of the last-level cache")
    p.add_argument("--llc-mb", type=float, default=None, help="last-level cache in MB (default: from sysfs)")
    p.add_argument("--threads", default=None, help="thread counts (default: 1 and the profile's default)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args(argv)
    cache = args.llc_mb or llc_mb()
    try:
        mults = [float(x) for x in args.llc_multiples.split(",") if x.strip()]
        threads = ([int(x) for x in args.threads.split(",")] if args.threads
                   else sorted({1, default_threads()}))
    except ValueError as exc:
        p.error(f"bad number in --llc-multiples/--threads: {exc}")
    if not mults or any(m <= 0 for m in mults) or any(t < 1 for t in threads):
        p.error("--llc-multiples must be > 0 and --threads >= 1")
    print(f"last-level cache: {cache:g} MB; onnxruntime MatMul [1,K]x[K,4096] fp32, lowest of {args.rounds} "
          f"round medians of {args.reps} runs")
    print("| threads | weight MB | x LLC | median ms | GB/s |\n|---|---|---|---|---|")
    last = None  # (threads, row) of the largest weight at the last (highest) thread count
    for t in threads:
        for m in mults:
            r = measure(m * cache, threads=t, rounds=args.rounds, reps=args.reps)
            if last is None or t != last[0] or r["weight_mb"] > last[1]["weight_mb"]:
                last = (t, r)
            print(f"| {t} | {r['weight_mb']:.1f} | {r['weight_mb'] * 1e6 / (cache * 2**20):.1f} | {r['median_ms']:.4f} | "
                  f"{r['gbps']:.1f} |", flush=True)
    if last is not None:
        print(f"\nmemory floor for {last[0]} thread(s): --memory-floor-cache-mb {cache:g} "
              f"--memory-floor-gbps {last[1]['gbps']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
