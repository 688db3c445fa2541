#!/usr/bin/env python3
"""Compile split halves with TVM (untuned) and compare with onnxruntime.

For each zoo model, split at the middle compute node (``--at`` fraction), each half is compiled
for every ``--targets`` target. Columns: model half, target, compile seconds (import + Relax
pipeline + codegen + export), library size, and - for targets whose code runs on this machine
(host-x86; a target whose CPU features this machine lacks is skipped) - the median latency of
onnxruntime (CPU provider, default optimizations) and of the untuned TVM library, and their ratio.
TVM's default CPU pipeline applies no schedules: expect TVM to be 10-100x slower than onnxruntime
until the halves are tuned (MetaSchedule); TVM here is the cross-compilation path.

Usage: python tools/bench_tvm.py [--models tiny_cnn resnet_like mobilenetv2_like transformer_encoder]
                                 [--targets host-x86 rpi4 jetson] [--at 0.5] [--repeat 20] [--qdq] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import onnxsplit
from onnxsplit import zoo
from onnxsplit.compile import compile_half
from onnxsplit.compile.tvm_backend import missing_cpu_features
from onnxsplit.runtime_ort import make_session, random_feeds
from onnxsplit.targets import load_target


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def quantize_qdq(model: onnx.ModelProto, work: Path) -> onnx.ModelProto:  # noqa: ARG001 - work kept for callers
    """Static QDQ int8 (the profiler's quantizer: MinMax, per-channel int8 weights, uint8 activations)."""
    from onnxsplit.profile import quantize_qdq as _quantize

    return _quantize(model, n_calibration=4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny_cnn", "resnet_like", "mobilenetv2_like", "transformer_encoder"])
    ap.add_argument("--files", nargs="*", default=[], metavar="MODEL.onnx",
                    help="extra ONNX files (loaded with static shapes and onnxsim)")
    ap.add_argument("--input-shape", action="append", default=[], metavar="NAME:1x3x224x224",
                    help="static shape for a dynamic input of --files (repeatable)")
    ap.add_argument("--targets", nargs="+", default=["host-x86", "rpi4", "jetson"])
    ap.add_argument("--at", type=float, default=0.5, help="cut after this fraction of the compute nodes")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--qdq", action="store_true", help="also compile QDQ-quantized halves (onnxruntime quantize_static)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import logging

    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's pre-processing advice
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tvm-") as tmp:
        work = Path(tmp)
        shapes = {n: tuple(int(d) for d in dims.split("x")) for n, dims in (s.rsplit(":", 1) for s in args.input_shape)}
        sources = [(m, lambda m=m: onnxsplit.load_graph(getattr(zoo, m)())) for m in args.models]
        sources += [(Path(f).stem, lambda f=f: onnxsplit.load_graph(
            f, {k: v for k, v in shapes.items()}, simplify=True)) for f in args.files]
        for mname, load in sources:
            graph = load()
            k = max(1, int(len(graph.model.graph.node) * args.at))
            parts = onnxsplit.split_model(graph, onnxsplit.edge_nodes_prefix(graph, k))
            halves = [(f"{mname}/{side}@{k}", m) for side, m in (("edge", parts.edge), ("cloud", parts.cloud)) if m is not None]
            if args.qdq:
                halves += [(f"{label}/qdq", quantize_qdq(m, work)) for label, m in list(halves)]
            for label, model in halves:
                feeds = random_feeds(model, seed=0)
                for tname in args.targets:
                    target = load_target(tname)
                    row = {"half": label, "target": tname}
                    try:
                        art = compile_half(model, target, work, name=f"{label.replace('/', '_').replace('@', '_')}_{tname}")
                    except onnxsplit.OnnxSplitError as exc:
                        row["error"] = str(exc)
                        rows.append(row)
                        continue
                    row.update(compile_s=art.compile_seconds, so_kb=art.size_bytes / 1024, machine=art.machine,
                               int8_mode=art.int8_mode)
                    if art.kind == "llvm-cpu" and art.host_arch == "x86_64" and not missing_cpu_features(art.target):
                        sess = make_session(model)
                        names = [o.name for o in sess.get_outputs()]
                        ort_ms = median_ms(lambda: sess.run(names, feeds), args.repeat)
                        import tvm
                        from tvm import relax

                        vm = relax.VirtualMachine(tvm.runtime.load_module(str(art.path)), tvm.cpu())
                        targs = [tvm.runtime.tensor(np.ascontiguousarray(feeds[i["name"]])) for i in art.inputs]
                        tvm_ms = median_ms(lambda: vm["main"](*targs), args.repeat)
                        row.update(ort_ms=ort_ms, tvm_ms=tvm_ms, ratio=tvm_ms / ort_ms)
                    rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    head = f"{'model half':34} {'target':10} {'machine':8} {'compile s':>9} {'.so KB':>8} {'ORT ms':>8} {'TVM ms':>9} {'TVM/ORT':>8}  int8"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['half']:34} {r['target']:10} error: {r['error'][:80]}")
            continue
        perf = (f"{r['ort_ms']:8.3f} {r['tvm_ms']:9.3f} {r['ratio']:7.1f}x" if "ort_ms" in r
                else f"{'-':>8} {'-':>9} {'-':>8}")
        i8 = "" if r["int8_mode"] == "n/a" else r["int8_mode"].split(" (")[0]
        print(f"{r['half']:34} {r['target']:10} {r['machine']:8} {r['compile_s']:9.2f} {r['so_kb']:8.0f} {perf}  {i8}")


if __name__ == "__main__":
    main()
