"""Small runs of benchmark scripts in tools/: they run and report what they claim."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_timing_noise_small_run():
    cmd = [sys.executable, str(ROOT / "tools" / "bench_timing_noise.py"), "--seeds", "120", "--rounds", "1", "--reps", "3",
           "--cv-rounds", "3", "--phase-seed", "120", "--phase-pairs", "2", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert [p["seed"] for p in doc["pairs"]] == [120]
    assert set(doc["cv"]) == {"1", "2"}
    pairs = doc["phases"]["pairs_ms"]
    assert doc["phases"]["seed"] == 120 and len(pairs) == 2 and all(a > 0 and b > 0 for a, b in pairs)
    bad = subprocess.run([*cmd[:2], "--seeds", "x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--seeds" in bad.stderr


def test_bench_feedback_prints_a_row_per_plan_count():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_feedback.py"), "--plans", "2,3", "--calls", "20"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split() for ln in r.stdout.splitlines() if ln[:1].isdigit()]
    assert [row[0] for row in rows] == ["2", "3"] and all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_feedback.py"), "--plans", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "plan counts" in bad.stderr


def test_bench_deadline_prints_a_row_per_boundary_size():
    tool = str(ROOT / "tools" / "bench_deadline.py")
    r = subprocess.run([sys.executable, tool, "--kb", "4,70", "--requests", "10", "--blocks", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split() for ln in r.stdout.splitlines() if ln[:1].isdigit()]
    assert [row[0] for row in rows] == ["4", "70"]
    for row in rows:  # CPU without / with a deadline (us), difference, wall without / with (ms)
        assert float(row[1]) > 0 and float(row[2]) > 0 and float(row[4]) > 0 and float(row[5]) > 0
        assert float(row[3]) == float(row[2]) - float(row[1])
    bad = subprocess.run([sys.executable, tool, "--kb", "x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--kb" in bad.stderr


def _ort_ops(model, tmp_path, name):  # noqa: ANN001, ANN202
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / f"{name}.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node}


def test_quantize_qdq_can_leave_op_types_fp32(tmp_path):
    """keep_fp32_ops: the quantizer puts no QDQ pair of its own around AveragePool, so onnxruntime runs
    it in fp32 (no QLinearAveragePool) where nothing quantized follows it. Where the next op is
    quantized, onnxruntime fuses DequantizeLinear -> AveragePool -> QuantizeLinear back into
    QLinearAveragePool anyway (the limit of this switch, checked here too)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from onnxsplit.profile import quantize_qdq

    w = onnx.numpy_helper.from_array(np.random.default_rng(0).random((8, 8, 3, 3), dtype=np.float32) * 0.1, "w")

    def model(pool_then_conv: bool):  # noqa: ANN202
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("AveragePool", ["c"], ["p" if pool_then_conv else "y"], kernel_shape=[3, 3],
                                  pads=[1, 1, 1, 1])]
        if pool_then_conv:
            nodes.append(helper.make_node("Conv", ["p", "w"], ["y"], pads=[1, 1, 1, 1]))
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        return m

    every = _ort_ops(quantize_qdq(model(False), avgpool_as_conv=False), tmp_path, "every")
    kept = _ort_ops(quantize_qdq(model(False), keep_fp32_ops=["AveragePool"], avgpool_as_conv=False), tmp_path, "kept")
    assert "QLinearAveragePool" in every and "QLinearConv" in every
    assert "QLinearAveragePool" not in kept and "AveragePool" in kept and "QLinearConv" in kept
    refused = _ort_ops(quantize_qdq(model(True), keep_fp32_ops=["AveragePool"], avgpool_as_conv=False), tmp_path, "refused")
    assert "QLinearAveragePool" in refused
    # the default (onnxsplit's scheme): the pool is quantized as a depthwise Conv, in both graphs
    for pool_then_conv in (False, True):
        ops = _ort_ops(quantize_qdq(model(pool_then_conv)), tmp_path, f"dw{pool_then_conv}")
        assert "QLinearAveragePool" not in ops and "AveragePool" not in ops and "QLinearConv" in ops


def test_bench_int8_ops_small_run():
    tool = str(ROOT / "tools" / "bench_int8_ops.py")
    r = subprocess.run([sys.executable, tool, "--rounds", "1", "--reps", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith(("fp32", "int8"))]
    assert [ln.split("  ")[0] for ln in rows] == ["fp32", "int8, onnxsplit (AveragePool as depthwise Conv)",
                                                  "int8, every op type (QLinearAveragePool)", "int8, AveragePool fp32"]
    bad = subprocess.run([sys.executable, tool, "--model", "/nonexistent.onnx"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_bench_kernel_chains_blocks_compute_the_cell_and_the_run_reports_every_stage():
    """The chain is n NAS-Bench-201 cell blocks, x <- x + BN(Conv3x3(ReLU(x))) (checked against numpy
    through onnxruntime), and a one-round run prints a row per stage shape and the net's line."""
    import numpy as np
    import onnxruntime as ort

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from bench_kernel_chains import block_chain
    finally:
        sys.path.remove(str(ROOT / "tools"))
    m = block_chain(2, 4, 5)
    x = np.random.default_rng(1).standard_normal((1, 4, 5, 5)).astype(np.float32)
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ws = {i.name: __import__("onnx").numpy_helper.to_array(i) for i in m.graph.initializer}
    ref = x.astype(np.float64)
    for i in range(2):
        r = np.pad(np.maximum(ref, 0), ((0, 0), (0, 0), (1, 1), (1, 1)))
        conv = np.zeros_like(ref)
        for dy in range(3):
            for dx in range(3):
                conv += np.einsum("oc,nchw->nohw", ws[f"w{i}"][:, :, dy, dx], r[:, :, dy:dy + 5, dx:dx + 5])
        ref = ref + conv / np.sqrt(1 + 1e-5)  # BN: scale 1, bias 0, mean 0, var 1
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)

    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_kernel_chains.py"), "--rounds", "1", "--reps", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [re.split(r"\s{2,}", ln.strip()) for ln in r.stdout.splitlines() if ln[:1].isdigit()]
    assert [row[:2] for row in rows] == [[s, "NCHW input"] for s in ("16x32x32", "32x16x16", "64x8x8")] + \
        [[s, "conv stem first"] for s in ("16x32x32", "32x16x16", "64x8x8")]
    # reorders in onnxruntime's optimized 10-block chain: around every Conv, or once at each end after a stem
    assert [row[2] for row in rows] == ["20"] * 3 + ["2"] * 3
    assert "nb201 |skip_connect~0|" in r.stdout and "measured" in r.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_kernel_chains.py"), "--rounds", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--rounds" in bad.stderr


def test_check_layout_sim_prints_a_row_per_precision_and_set():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "check_layout_sim.py"), "--nets", "1", "--no-held-out"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith(("fp32", "int8"))]
    # netgen v1 and v2 seed 0: both precisions, 2 nets each, with their layout-op counts
    assert [(row[0], row[1], row[2]) for row in rows] == [("fp32", "nets", "2"), ("int8", "nets", "2")]
    assert all(0 <= int(row[3]) <= 2 and int(row[4]) > 0 and int(row[5]) > 0 for row in rows)
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "check_layout_sim.py"), "--precision", "fp16"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--precision takes fp32 and/or int8" in bad.stderr


def test_bench_dram_small_run_prints_a_row_per_case_and_the_fit_flags():
    """Weights of 2 and 1 x a (pretended) 1 MB cache, 1 thread: one table row each, bandwidth = MB / ms,
    and the `cost-model fit` flags built from the larger weight's row; bad arguments exit 2."""
    tool = str(ROOT / "tools" / "bench_dram.py")
    r = subprocess.run([sys.executable, tool, "--llc-mb", "1", "--llc-multiples", "2,1", "--threads", "1", "--rounds",
                        "1", "--reps", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split("|")[1:-1] for ln in r.stdout.splitlines() if re.match(r"\| \d", ln)]
    assert len(rows) == 2 and float(rows[1][1]) < float(rows[0][1])
    threads, mb, mult, ms, gbps = (float(x) for x in rows[0])
    # the table rounds MB to 0.1 and ms to 0.0001: their quotient matches the GB/s column to a few percent
    assert threads == 1 and 1.5 < mb < 2.5 and ms > 0 and abs(gbps - mb / ms) <= 0.06 * gbps + 0.1
    assert f"--memory-floor-cache-mb 1 --memory-floor-gbps {gbps:.1f}" in r.stdout
    bad = subprocess.run([sys.executable, tool, "--llc-multiples", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--llc-multiples" in bad.stderr
    sys.path.insert(0, str(ROOT / "tools"))
    import bench_dram

    assert bench_dram.llc_mb() > 0


def test_bench_weight_stream_builds_shared_and_distinct_stacks_and_prints_a_row_each():
    """The shared stack holds one weight set, the distinct one a set per layer, and both compute the same
    shapes; a small run prints one row per (case, layers) whose ratio is distinct / shared; bad cases exit 2."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import pytest

    sys.path.insert(0, str(ROOT / "tools"))
    import bench_weight_stream as bws

    for case in bws.CASES:
        shared, mb_s = bws.stack_model(case, 3, shared=True, scale=8)
        distinct, mb_d = bws.stack_model(case, 3, shared=False, scale=8)
        onnx.checker.check_model(distinct)
        n_per_layer = 4 if bws.CASES[case][0] == "matmul" else 2
        assert len(shared.graph.initializer) == n_per_layer and len(distinct.graph.initializer) == 3 * n_per_layer
        assert mb_s == pytest.approx(mb_d) and mb_d > 0
        outs = []
        for m in (shared, distinct):
            s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            i = s.get_inputs()[0]
            outs.append(s.run(None, {i.name: np.ones(i.shape, np.float32)})[0].shape)
        assert outs[0] == outs[1]
    tool = str(ROOT / "tools" / "bench_weight_stream.py")
    r = subprocess.run([sys.executable, tool, "--cases", "mm16,conv7", "--layers", "1,2", "--threads", "1",
                        "--rounds", "1", "--reps", "3", "--scale", "8"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split("|")[1:-1] for ln in r.stdout.splitlines() if re.match(r"\| (mm|conv)", ln)]
    assert [(c.strip(), int(n)) for c, n, *_ in rows] == [("mm16", 1), ("mm16", 2), ("conv7", 1), ("conv7", 2)]
    assert all(float(mb) > 0 and float(shared) > 0 and float(distinct) > 0 for _, _, mb, shared, distinct, *_ in rows)
    r1 = bws.measure("mm16", 2, threads=1, rounds=1, reps=3, scale=8)
    assert r1["ratio"] == pytest.approx(r1["distinct_ms"] / r1["shared_ms"])
    assert r1["extra_us_per_mb"] == pytest.approx((r1["distinct_ms"] - r1["shared_ms"]) / r1["weights_mb"] * 1000)
    bad = subprocess.run([sys.executable, tool, "--cases", "warp"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown case" in bad.stderr
