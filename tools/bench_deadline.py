#!/usr/bin/env python3
"""Edge CPU cost of a cloud deadline (hedging) per request: ``EdgeRunner.infer`` with and without
``cloud_deadline_s``.

With a deadline the edge runner arms the socket timeout with the time left before each buffer of
the request body and reads the answer's binary outputs in pieces (sized to take about 20 ms each
at the rate the previous one came in), re-arming it before each;
without one it reads each output whole. On a CPU-throttled edge (the testbed gives the edge 1 ms of CPU per 10 ms) every
extra microsecond before a request's last byte can push it into the next period. This serves a
one-node split model (Relu, boundary of ``--kb`` KB each way) from an in-process CloudServer on
loopback and measures the *calling thread's* CPU time per request (``time.thread_time``: the
server's threads are not counted), alternating blocks with and without a deadline.

    python tools/bench_deadline.py                 # about 10 s
    python tools/bench_deadline.py --kb 25,100,300 --requests 400
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxsplit.cli import int_list  # noqa: E402


def _bundle(work: Path, kb: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    from onnxsplit.cli import main as cli

    n = max(1, kb * 1024 // 4)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])])
    src = work / f"relu_{kb}kb.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(src))
    out = work / f"bundle_{kb}kb"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli(["split", str(src), "--at", "1", "-o", str(out), "--force"])
    if rc != 0:
        raise SystemExit(f"could not split {src}")
    return out


def bench(kb: int, requests: int, blocks: int, work: Path) -> tuple[float, float, float, float]:
    """(median us per request without, with a deadline; median wall ms without, with)."""
    import numpy as np

    from onnxsplit.runtime import EdgeRunner
    from onnxsplit.runtime.server import CloudServer

    bundle = _bundle(work, kb)
    n = max(1, kb * 1024 // 4)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, n)).astype(np.float32)}
    srv = CloudServer(bundle, port=0, optimize=False).start()
    cpu: dict[bool, list[float]] = {False: [], True: []}
    wall: dict[bool, list[float]] = {False: [], True: []}
    try:
        with EdgeRunner(bundle, srv.url, optimize=False) as r:
            for _ in range(20):  # warm-up: sessions, pooled connection
                r.infer(feeds)
                r.infer(feeds, cloud_deadline_s=10.0)
            per_block = max(1, requests // blocks)
            for b in range(2 * blocks):
                dl = bool(b % 2)
                for _ in range(per_block):
                    c0, w0 = time.thread_time(), time.perf_counter()
                    res = r.infer(feeds, cloud_deadline_s=10.0) if dl else r.infer(feeds)
                    cpu[dl].append((time.thread_time() - c0) * 1e6)
                    wall[dl].append((time.perf_counter() - w0) * 1e3)
                    if res.fallback:
                        raise SystemExit(f"request fell back: {res.error}")
    finally:
        srv.stop()
    return (statistics.median(cpu[False]), statistics.median(cpu[True]),
            statistics.median(wall[False]), statistics.median(wall[True]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_deadline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kb", type=int_list, default="25,100,300", help="boundary sizes in KB (each way), comma-separated")
    ap.add_argument("--requests", type=int, default=300, help="requests per variant and size")
    ap.add_argument("--blocks", type=int, default=6, help="alternating blocks per variant")
    args = ap.parse_args(argv)
    sizes = args.kb
    if not sizes or min(sizes) < 1 or args.requests < 1 or args.blocks < 1:
        print("error: need sizes >= 1 KB, --requests >= 1 and --blocks >= 1", file=sys.stderr)
        return 2
    from onnxsplit.cli import table

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_deadline-") as tmp:
        for kb in sizes:
            c0, c1, w0, w1 = bench(kb, args.requests, args.blocks, Path(tmp))
            c0, c1 = round(c0), round(c1)
            rows.append((kb, c0, c1, f"{c1 - c0:+d}", f"{w0:.3f}", f"{w1:.3f}"))
    print(f"EdgeRunner.infer on loopback, {args.requests} requests per variant, medians "
          "(client thread CPU in us; wall in ms; this machine):")
    print(table(["boundary KB", "CPU no deadline", "CPU deadline", "difference", "wall no deadline", "wall deadline"],
                rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
