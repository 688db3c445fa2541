"""AveragePool -> depthwise Conv (onnxsplit.quant.pools): equal to onnxruntime's AveragePool for every
rewritable configuration, a clear reason for every other one, and the edge quantization uses it."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import onnxsplit
from onnxsplit.quant import quantize_split, synthetic_calibration
from onnxsplit.quant.pools import avgpool_to_depthwise_conv
from onnxsplit.runtime_ort import make_session


def _pool_model(hw: tuple[int, int], channels: int | str, **attrs) -> onnx.ModelProto:  # noqa: ANN003
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, *hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@st.composite
def pool_configs(draw):  # noqa: ANN001, ANN201
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = [draw(st.integers(0, k - 1)) for k in (kh, kw, kh, kw)]  # ONNX: pad < kernel
    h = draw(st.integers(kh, 12))
    w = draw(st.integers(kw, 12))
    return {"hw": (h, w), "kernel_shape": [kh, kw], "strides": [sh, sw], "pads": pads,
            "count_include_pad": draw(st.integers(0, 1)), "ceil_mode": draw(st.integers(0, 1))}


@settings(max_examples=60, deadline=None)
@given(pool_configs())
def test_rewrite_equals_onnxruntime_average_pool(cfg) -> None:  # noqa: ANN001
    """Oracle: onnxruntime's own AveragePool on the original model. A config is only skipped where
    ceil_mode would change the output size (the one case the rewrite does not cover)."""
    hw = cfg.pop("hw")
    model = _pool_model(hw, 3, **cfg)
    r = avgpool_to_depthwise_conv(model)
    spans = [hw[a] + cfg["pads"][a] + cfg["pads"][a + 2] - cfg["kernel_shape"][a] for a in range(2)]
    changes_size = cfg["ceil_mode"] and any(s % st_ for s, st_ in zip(spans, cfg["strides"]))
    if changes_size:
        assert r.rewritten == [] and r.skipped == {"pool": "ceil_mode changes the output size"} and r.model is model
        return
    assert r.rewritten == ["pool"] and not r.skipped
    onnx.checker.check_model(r.model, full_check=True)
    ops = [n.op_type for n in r.model.graph.node]
    bordered = cfg["count_include_pad"] == 0 and any(cfg["pads"])
    assert ops == (["Conv", "Mul"] if bordered else ["Conv"])
    assert r.model.graph.node[0].name == "pool" and r.model.graph.node[-1].output[0] == "y"
    x = np.random.default_rng(0).standard_normal((1, 3, *hw)).astype(np.float32)
    want = make_session(model).run(None, {"x": x})[0]
    got = make_session(r.model).run(None, {"x": x})[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert [n.op_type for n in model.graph.node] == ["AveragePool"]  # the input model is not modified


def test_unrewritable_pools_are_left_with_a_reason() -> None:
    cases = {
        "input channel count unknown (give the model static shapes)": _pool_model((8, 8), "C", kernel_shape=[2, 2]),
        "auto_pad SAME_UPPER": _pool_model((8, 8), 4, kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
        "kernel_shape [3] is not 2-D": None,
    }
    one_d = helper.make_model(helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 13)])
    cases["kernel_shape [3] is not 2-D"] = one_d
    for why, m in cases.items():
        r = avgpool_to_depthwise_conv(m)
        assert r.rewritten == [] and r.skipped == {"pool": why} and r.model is m
    # a model without pools comes back as it is
    conv = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    assert avgpool_to_depthwise_conv(conv).model is conv


def _conv_pool_conv() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w1 = onnx.numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array((rng.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("AveragePool", ["r1"], ["p"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["p", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["y"], name="gap")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _ort_ops(model: onnx.ModelProto, tmp_path, name: str) -> set[str]:  # noqa: ANN001
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / f"{name}.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node}


@pytest.mark.parametrize("avgpool_as_conv", [True, False])
def test_edge_quantization_runs_the_pool_as_int8_depthwise_conv(tmp_path, avgpool_as_conv: bool) -> None:  # noqa: ANN001
    """Where a quantized Conv follows the pool, onnxruntime fuses the pool into the slow
    QLinearAveragePool unless the edge quantization rewrote it; the IR names stay the pool's."""
    from onnxsplit.quant.quantize import ModelQuantizer

    graph = onnxsplit.load_graph(_conv_pool_conv())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = synthetic_calibration(graph, samples=8)
    parts = onnxsplit.split_model(graph, onnxsplit.edge_nodes_prefix(graph, 5))  # conv1..relu2 on the edge
    q = ModelQuantizer(parts.edge, cal, compute_names=parts.edge_nodes, avgpool_as_conv=avgpool_as_conv)
    with q:
        qs = quantize_split(parts, cal, quantizer=q)
    ops = _ort_ops(qs.edge, tmp_path, f"edge{avgpool_as_conv}")
    if avgpool_as_conv:
        assert qs.report["avgpool_as_conv"] == ["pool"]
        assert "QLinearAveragePool" not in ops and "AveragePool" not in ops
        assert "pool" in qs.quantized_nodes and all("/" not in n for n in qs.quantized_nodes)
    else:
        assert qs.report["avgpool_as_conv"] == [] and "QLinearAveragePool" in ops
    assert set(qs.quantized_nodes) <= set(parts.edge_nodes)
    x = cal.samples[0]
    want = make_session(graph.model).run(None, x)[0]
    got = qs.run(x)["y"]
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max() + 1e-3  # int8 error, not a different function
    # the default of quantize_split is the rewrite
    assert quantize_split(parts, cal).report["avgpool_as_conv"] == ["pool"]
