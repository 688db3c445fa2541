#!/usr/bin/env python3
"""What does it cost when a model's weights no longer fit in the cache? (a finding the cost model does not use)

The host-x86 laws are fitted on one-kernel graphs, whose weights stay cache-resident between runs.
Inside a model whose weights exceed the last-level cache every layer reads its weights from DRAM
once per inference. This times stacks of identical layers twice: once with every layer reading the
*same* weight tensor (the working set stays in the cache, as in a one-kernel graph) and once with
each layer owning its weights (the model streams them), and prints per stack the two latencies,
their ratio and the extra time per MB of weights, ``(distinct - shared) / weights MB`` (us/MB).

Cases (``--cases``, comma-separated):

- ``mm16``: ``MatMul+Add`` 16 rows, d -> 4d -> d with ReLU, d = 384 (a MiniLM-L6 layer at sequence 16: 4.7 MB)
- ``mm128``: the same with 128 rows (8x the arithmetic per weight byte)
- ``conv7``: 3x3 convolution 512 -> 512 at 7x7 + ReLU (9.4 MB per layer)
- ``conv28``: 3x3 convolution 256 -> 256 at 28x28 + ReLU (2.4 MB per layer)

    python tools/bench_weight_stream.py                                # every case, layer counts 1,3,4,6,12
    python tools/bench_weight_stream.py --cases mm16 --layers 2,3,4,5,6  # where the cache runs out

Each model is timed in ``--rounds`` fresh sessions, the shared and distinct variants alternating;
the lowest session median is kept. docs/cost-model-accuracy.md ("Fifteenth session") has a run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: case -> (kind, rows or channels, width or spatial size)
CASES: dict[str, tuple[str, int, int]] = {
    "mm16": ("matmul", 16, 384),
    "mm128": ("matmul", 128, 384),
    "conv7": ("conv", 512, 7),
    "conv28": ("conv", 256, 28),
}


def stack_model(case: str, layers: int, *, shared: bool, scale: int = 1):  # noqa: ANN201 - onnx.ModelProto
    """A stack of ``layers`` layers of ``case`` (``scale`` divides the widths: small test models) and
    the MB of distinct fp32 weights it holds."""
    from onnx import TensorProto, helper, numpy_helper

    kind, a, b = CASES[case]
    rng = np.random.default_rng(0)
    nodes, inits, cur = [], [], "x"
    if kind == "matmul":
        rows, d = a, b // scale
        shape = [1, rows, d]
        for i in range(layers):
            tag = "" if shared else str(i)
            if not (shared and i):
                inits += [numpy_helper.from_array((rng.standard_normal((d, 4 * d)) * 0.02).astype(np.float32), "W1" + tag),
                          numpy_helper.from_array(np.zeros(4 * d, np.float32), "b1" + tag),
                          numpy_helper.from_array((rng.standard_normal((4 * d, d)) * 0.02).astype(np.float32), "W2" + tag),
                          numpy_helper.from_array(np.zeros(d, np.float32), "b2" + tag)]
            nodes += [helper.make_node("MatMul", [cur, "W1" + tag], [f"h{i}"]),
                      helper.make_node("Add", [f"h{i}", "b1" + tag], [f"a{i}"]),
                      helper.make_node("Relu", [f"a{i}"], [f"r{i}"]),
                      helper.make_node("MatMul", [f"r{i}", "W2" + tag], [f"o{i}"]),
                      helper.make_node("Add", [f"o{i}", "b2" + tag], [f"y{i}"])]
            cur = f"y{i}"
    else:
        c, hw = a // scale, b
        shape = [1, c, hw, hw]
        for i in range(layers):
            tag = "" if shared else str(i)
            if not (shared and i):
                inits += [numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.02).astype(np.float32), "W" + tag),
                          numpy_helper.from_array(np.zeros(c, np.float32), "b" + tag)]
            nodes += [helper.make_node("Conv", [cur, "W" + tag, "b" + tag], [f"c{i}"], pads=[1, 1, 1, 1]),
                      helper.make_node("Relu", [f"c{i}"], [f"y{i}"])]
            cur = f"y{i}"
    g = helper.make_graph(nodes, f"{case}x{layers}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    per_layer_mb = sum(int(np.prod(t.dims)) * 4 for t in inits[:4 if kind == "matmul" else 2]) / 1e6
    return model, per_layer_mb * layers


def measure(case: str, layers: int, *, threads: int, rounds: int, reps: int, scale: int = 1) -> dict[str, float]:
    """``{"weights_mb", "shared_ms", "distinct_ms", "ratio", "extra_us_per_mb"}`` of one stack."""
    from onnxsplit.profile import measure_model

    shared, _ = stack_model(case, layers, shared=True, scale=scale)
    distinct, mb = stack_model(case, layers, shared=False, scale=scale)
    best = {"shared": float("inf"), "distinct": float("inf")}
    for _ in range(max(1, rounds)):
        for name, model in (("shared", shared), ("distinct", distinct)):
            t = measure_model(model, threads=threads, warmup=3, reps=reps, max_seconds=2.0).median_ms
            best[name] = min(best[name], t)
    return {"weights_mb": mb, "shared_ms": best["shared"], "distinct_ms": best["distinct"],
            "ratio": best["distinct"] / best["shared"],
            "extra_us_per_mb": (best["distinct"] - best["shared"]) / mb * 1000}


def main(argv: Sequence[str] | None = None) -> int:
    from onnxsplit.profile import default_threads

    p = argparse.ArgumentParser(prog="bench_weight_stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--layers", default="1,3,4,6,12", help="layer counts per stack (default 1,3,4,6,12)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the profile's default)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)  # tests: divide the widths
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad or not cases:
        p.error(f"unknown case(s) {bad or '(none)'} in --cases; known: {', '.join(CASES)}")
    try:
        layers = [int(x) for x in args.layers.split(",") if x.strip()]
    except ValueError as exc:
        p.error(f"bad number in --layers: {exc}")
    if not layers or any(n < 1 for n in layers) or args.rounds < 1 or args.reps < 1:
        p.error("--layers must be >= 1 and --rounds/--reps >= 1")
    threads = args.threads or default_threads()
    print(f"onnxruntime, {threads} thread(s), fp32; lowest of {args.rounds} round medians of {args.reps} runs; "
          "shared: every layer reads one weight set; distinct: each layer its own")
    print("| case | layers | weights MB | shared ms | distinct ms | ratio | extra us/MB |\n|---|---|---|---|---|---|---|")
    for case in cases:
        for n in layers:
            r = measure(case, n, threads=threads, rounds=args.rounds, reps=args.reps, scale=args.scale)
            print(f"| {case} | {n} | {r['weights_mb']:.1f} | {r['shared_ms']:.3f} | {r['distinct_ms']:.3f} | "
                  f"{r['ratio']:.2f} | {r['extra_us_per_mb']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
