#!/usr/bin/env python3
"""Are kernel costs additive on host-x86? A cell block alone, in chains, and inside a net.

The host-x86 fp32 cost model over-predicts the small generated held-out nets (NAS-Bench-201 at
32x32). This benchmark times NAS-Bench-201's cell block (ReLU -> 3x3 Conv -> BatchNorm -> residual
Add, as in the cells of the held-out net
``|skip_connect~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|skip_connect~1|skip_connect~2|``) at
each of the net's three stage shapes, as chains of 1, 5 and 10 blocks, in two layouts:

* on an NCHW graph input: onnxruntime reorders NCHW <-> NCHWc around every block's Conv (the
  residual Add meets the NCHW input), as it does in a one-kernel training row;
* after a 1x1 Conv stem: the blocked NCHWc layout runs through the chain, as in a net;

next to the net itself (rounds interleaved, lowest round median kept, onnxruntime CPU with the
default thread count, as ``tools/eval_cost_model.py`` times). It prints each block's marginal cost
((10-block - 5-block time) / 5), the reorders in onnxruntime's optimized graph, and what the
registered cost model predicts (with ``layout_reorder`` kernels from v4 on: see
``onnxsplit/cost/layout.py``).

    python tools/bench_kernel_chains.py [--rounds 3] [--reps 30] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ((16, 32), (32, 16), (64, 8))  # (channels, height = width) of NAS-Bench-201's three stages
NET = "|skip_connect~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def block_chain(n: int, channels: int, hw: int, *, stem: bool = False):  # -> onnx.ModelProto
    """``n`` NAS-Bench-201 cell blocks in a row: x <- x + BN(Conv3x3(ReLU(x))).

    ``stem``: a 1x1 Conv first. onnxruntime's NCHWc layout then runs through the whole chain, as in
    a net; without it the residual Add meets the graph's NCHW input, so every block's Conv gets a
    ReorderInput before and a ReorderOutput after it, as a one-kernel training row does."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    if stem:
        inits.append(numpy_helper.from_array((rng.standard_normal((channels, channels, 1, 1)) * 0.2).astype(np.float32),
                                             "w_stem"))
        nodes.append(helper.make_node("Conv", ["x", "w_stem"], ["stem"], name="stem"))
        x = "stem"
    for i in range(n):
        inits.append(numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.1).astype(np.float32),
                                             f"w{i}"))
        for name, v in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)):
            inits.append(numpy_helper.from_array(np.full(channels, v, np.float32), f"{name}{i}"))
        nodes += [helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"),
                  helper.make_node("Conv", [f"r{i}", f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("BatchNormalization", [f"c{i}", f"s{i}", f"b{i}", f"m{i}", f"v{i}"], [f"n{i}"],
                                   name=f"bn{i}"),
                  helper.make_node("Add", [f"n{i}", x], [f"a{i}"], name=f"add{i}")]
        x = f"a{i}"
    shape = [1, channels, hw, hw]
    g = helper.make_graph(nodes, f"chain{n}{'_stem' if stem else ''}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def reorders(model, threads: int | None = None) -> Counter:  # noqa: ANN001 - onnx.ModelProto
    """NCHWc reorders in onnxruntime's optimized graph of ``model``: ``{"input": ReorderInput
    nodes, "output": ReorderOutput nodes}`` (what :func:`onnxsplit.cost.layout.nchwc_reorders` predicts)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3  # the "hardware specific optimizations" warning of saving an NCHWc graph
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ops = Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    return Counter({"input": ops["ReorderInput"], "output": ops["ReorderOutput"]})


def int8_transposes(model, threads: int | None = None) -> int:  # noqa: ANN001 - onnx.ModelProto
    """Transposes onnxruntime adds to ``model`` quantized as onnxsplit's int8 predictions assume
    (:func:`onnxsplit.profile.quantize_qdq`): the Transpose nodes of its optimized graph minus those
    of the quantized graph (what :func:`onnxsplit.cost.layout.nhwc_transposes` predicts)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    from onnxsplit.profile import quantize_qdq

    q = quantize_qdq(model)
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(q.SerializeToString(), so, providers=["CPUExecutionProvider"])
        opt = onnx.load(so.optimized_model_filepath)
    return sum(n.op_type == "Transpose" for n in opt.graph.node) - sum(n.op_type == "Transpose" for n in q.graph.node)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (lowest round median kept)")
    ap.add_argument("--reps", type=int, default=30, help="timed runs per round")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads (default: onnxruntime's default, what host-x86 predicts; 1 is steadier "
                         "on a 2-vCPU VM, but the predictions are for the default)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.reps < 1 or (args.threads is not None and args.threads < 1):
        ap.error("--rounds, --reps and --threads must be >= 1")

    import eval_cost_model as E
    import help_latency as H

    import onnxsplit
    from onnxsplit.cost import predict
    from onnxsplit.profile import default_threads

    threads = args.threads or default_threads()
    net = H.nasbench201_onnx(NET, none_mode="prune")
    models = {("net",): net}
    for stem in (False, True):
        for c, hw in STAGES:
            for n in (1, 5, 10):
                models[("chain", stem, c, hw, n)] = block_chain(n, c, hw, stem=stem)
    best: dict = {}
    for _ in range(args.rounds):
        for key, m in models.items():
            best[key] = min(best.get(key, np.inf), E.measure(m, rounds=1, reps=args.reps, threads=threads))
    pred = {key: predict(onnxsplit.load_graph(m), "host-x86", "fp32").total_ms for key, m in models.items()}

    print(f"onnxruntime CPU, {threads} threads, lowest of {args.rounds} interleaved round medians of {args.reps} runs; "
          f"predicted: the registered host-x86 fp32 cost model; reorders: NCHWc Reorder nodes in onnxruntime's "
          f"optimized 10-block chain")
    hdr = ["block shape", "layout", "reorders", "1 block ms", "5 blocks ms", "10 blocks ms", "marginal ms/block",
           "predicted marginal", "pred. error"]
    rows = []
    marginal_sum = 0.0
    for stem in (False, True):
        for c, hw in STAGES:
            t1, t5, t10 = (best[("chain", stem, c, hw, n)] for n in (1, 5, 10))
            p5, p10 = pred[("chain", stem, c, hw, 5)], pred[("chain", stem, c, hw, 10)]
            m, pm = (t10 - t5) / 5, (p10 - p5) / 5
            if stem:
                marginal_sum += 5 * m
            rows.append([f"{c}x{hw}x{hw}", "conv stem first" if stem else "NCHW input", str(sum(reorders(
                models[("chain", stem, c, hw, 10)], threads).values())), f"{t1:.4f}", f"{t5:.4f}", f"{t10:.4f}", f"{m:.4f}",
                f"{pm:.4f}", f"{(pm - m) / m * 100:+.1f}%"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
    print("  ".join(h.ljust(w) for h, w in zip(hdr, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    t_net, p_net = best[("net",)], pred[("net",)]
    print(f"\nnb201 {NET}: measured {t_net:.4f} ms, predicted {p_net:.4f} ms ({(p_net - t_net) / t_net * 100:+.1f}%), "
          f"{sum(reorders(net, threads).values())} reorders")
    print(f"its 15 cell blocks at their marginal cost in the conv-stem chains (5 per stage): {marginal_sum:.4f} ms "
          f"= {marginal_sum / t_net * 100:.0f}% of the net; the net's other kernels (stem, two reduction blocks, "
          f"15 cell Adds, head) take the remaining {t_net - marginal_sum:.4f} ms in the net")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
