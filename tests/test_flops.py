"""Tests for onnxsplit.flops: hand-computed costs and brute-force cross-checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnxsplit.flops import (
    DATA_MOVEMENT_OPS,
    ELEMENTWISE_FLOPS,
    OpCost,
    known_ops,
    op_cost,
)


def cost(op, attrs=None, ins=(), outs=(), domain=""):
    return op_cost(op, domain, dict(attrs or {}), list(ins), list(outs))


# --------------------------------------------------------------------------------------------
# Conv
# --------------------------------------------------------------------------------------------


def test_conv_with_bias_and_padding():
    c = cost("Conv", {"pads": [1, 1, 1, 1]}, [(1, 3, 32, 32), (16, 3, 3, 3), (16,)],
             [(1, 16, 32, 32)])
    macs = 16 * 32 * 32 * (3 * 3 * 3)  # outputs x taps
    assert c == OpCost(macs, 2 * macs + 16 * 32 * 32, True)


def test_conv_without_bias_has_no_bias_adds():
    c = cost("Conv", {"pads": [1, 1, 1, 1]}, [(1, 3, 32, 32), (16, 3, 3, 3)], [(1, 16, 32, 32)])
    assert c.flops == 2 * c.macs == 2 * 16 * 32 * 32 * 27


def test_conv_grouped():
    # 8 input channels in 4 groups: each output channel sees 2 input channels
    c = cost("Conv", {"group": 4}, [(2, 8, 10, 10), (16, 2, 3, 3)], [(2, 16, 8, 8)])
    assert c.macs == 2 * 16 * 8 * 8 * (2 * 9)
    assert c.known


def test_conv_depthwise_strided_output_inferred():
    attrs = {"group": 32, "strides": [2, 2], "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    c = cost("Conv", attrs, [(1, 32, 56, 56), (32, 1, 3, 3)], [None])
    assert c == OpCost(32 * 28 * 28 * 9, 2 * 32 * 28 * 28 * 9, True)


def test_conv_dilated_output_inferred():
    # effective kernel 5 -> 20 - 5 + 1 = 16
    c = cost("Conv", {"dilations": [2, 2]}, [(1, 4, 20, 20), (8, 4, 3, 3)], [None])
    assert c.macs == 8 * 16 * 16 * 4 * 9


def test_conv_resnet_stem():
    attrs = {"strides": [2, 2], "pads": [3, 3, 3, 3], "kernel_shape": [7, 7]}
    c = cost("Conv", attrs, [(1, 3, 224, 224), (64, 3, 7, 7)], [None])
    assert c.macs == 118_013_952  # the well-known 118M MACs of the ResNet stem


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", b"SAME_LOWER"])
def test_conv_auto_pad_same_accepts_str_and_bytes(auto_pad):
    c = cost("Conv", {"auto_pad": auto_pad, "strides": [2, 2]}, [(1, 1, 15, 15), (1, 1, 3, 3)], [])
    assert c.macs == 8 * 8 * 9


def test_conv_auto_pad_valid():
    c = cost("Conv", {"auto_pad": "VALID", "strides": [2, 2]}, [(1, 1, 15, 15), (1, 1, 3, 3)], [])
    assert c.macs == 7 * 7 * 9


def test_conv_1d_and_3d():
    c1 = cost("Conv", {"strides": [2]}, [(1, 4, 100), (8, 4, 5)], [None])
    assert c1.macs == 8 * 48 * 4 * 5
    c3 = cost("Conv", {"pads": [1] * 6}, [(1, 2, 4, 8, 8), (3, 2, 3, 3, 3), (3,)], [None])
    assert c3 == OpCost(3 * 4 * 8 * 8 * 54, 2 * 3 * 4 * 8 * 8 * 54 + 3 * 4 * 8 * 8, True)


def test_conv_unknown_shapes_is_not_free():
    c = cost("Conv", {}, [None, (8, 4, 3, 3)], [None])
    assert c.known is False
    c = cost("Conv", {}, [(1, 4, "H", 8), (8, 4, 3, 3)], [None])  # symbolic dim
    assert c.known is False


def test_conv_integer_and_qlinear_conv():
    ins = [(1, 3, 8, 8), (4, 3, 3, 3)]
    out = [(1, 4, 6, 6)]
    assert cost("ConvInteger", {}, ins, out).macs == 4 * 36 * 27
    q_ins = [(1, 3, 8, 8), (), (), (4, 3, 3, 3), (), (), (), ()]
    q = cost("QLinearConv", {}, q_ins, out)
    assert q.macs == 4 * 36 * 27
    assert q.flops == 2 * q.macs + 3 * 4 * 36  # requantise each output


# --------------------------------------------------------------------------------------------
# ConvTranspose
# --------------------------------------------------------------------------------------------


def test_conv_transpose_with_bias():
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1]}
    c = cost("ConvTranspose", attrs, [(1, 16, 8, 8), (16, 8, 4, 4), (8,)], [(1, 8, 16, 16)])
    macs = 16 * 8 * 8 * (8 * 4 * 4)  # every input element times every tap of its group
    assert c == OpCost(macs, 2 * macs + 8 * 16 * 16, True)


def test_conv_transpose_grouped_output_inferred():
    attrs = {"group": 4, "strides": [2, 2]}
    c = cost("ConvTranspose", attrs, [(1, 16, 8, 8), (16, 2, 3, 3), (8,)], [None])
    macs = 16 * 64 * 2 * 9
    out_hw = 2 * (8 - 1) + 3  # 17
    assert c == OpCost(macs, 2 * macs + 8 * out_hw * out_hw, True)


# --------------------------------------------------------------------------------------------
# Gemm / MatMul / Einsum
# --------------------------------------------------------------------------------------------


def test_gemm_trans_flags_and_bias():
    # A is (K, M) with transA, B is (N, K) with transB
    c = cost("Gemm", {"transA": 1, "transB": 1}, [(64, 32), (16, 64), (16,)], [(32, 16)])
    assert c == OpCost(32 * 16 * 64, 2 * 32 * 16 * 64 + 32 * 16, True)


def test_gemm_alpha_beta_scaling():
    c = cost("Gemm", {"alpha": 0.5, "beta": 2.0}, [(4, 3), (3, 5), (4, 5)], [(4, 5)])
    assert c.macs == 60
    assert c.flops == 120 + 20 + 20 + 20  # alpha*, +C, beta*


def test_gemm_no_bias():
    c = cost("Gemm", {"transB": 1}, [(8, 100), (10, 100)], [(8, 10)])
    assert c == OpCost(8000, 16000, True)


def test_matmul_batched_broadcast():
    c = cost("MatMul", {}, [(2, 1, 4, 5), (3, 5, 6)], [(2, 3, 4, 6)])
    assert c == OpCost(2 * 3 * 4 * 6 * 5, 2 * 720, True)


def test_matmul_one_d_operands():
    assert cost("MatMul", {}, [(5,), (2, 5, 6)], [(2, 6)]).macs == 2 * 6 * 5
    assert cost("MatMul", {}, [(3, 4, 5), (5,)], [(3, 4)]).macs == 3 * 4 * 5
    assert cost("MatMul", {}, [(5,), (5,)], [()]).macs == 5


def test_matmul_bad_or_unknown_shapes():
    assert not cost("MatMul", {}, [(3, 4), (5, 6)], [None]).known
    assert not cost("MatMul", {}, [(3, 4), None], [None]).known


def test_matmul_integer_and_qlinear_matmul():
    assert cost("MatMulInteger", {}, [(4, 8), (8, 2)], [(4, 2)]).macs == 64
    q = cost("QLinearMatMul", {}, [(4, 8), (), (), (8, 2), (), (), (), ()], [(4, 2)])
    assert q == OpCost(64, 128 + 3 * 8, True)


def test_einsum_matches_matmul():
    e = cost("Einsum", {"equation": b"bij,bjk->bik"}, [(2, 3, 4), (2, 4, 5)], [None])
    m = cost("MatMul", {}, [(2, 3, 4), (2, 4, 5)], [None])
    assert e == m


def test_einsum_ellipsis_implicit_and_reductions():
    e = cost("Einsum", {"equation": "...ij,...jk"}, [(7, 3, 4), (4, 5)], [None])
    assert e.macs == 7 * 3 * 4 * 5
    # three operands are contracted pairwise: (ij,jk) -> ik then (ik,kl) -> il
    e3 = cost("Einsum", {"equation": "ij,jk,kl->il"}, [(2, 3), (3, 4), (4, 5)], [None])
    assert e3.macs == 2 * 3 * 4 + 2 * 4 * 5
    tr = cost("Einsum", {"equation": "ii->"}, [(6, 6)], [()])
    assert tr.known and tr.macs == 0 and tr.flops > 0
    assert cost("Einsum", {"equation": "ij->ji"}, [(2, 3)], [(3, 2)]) == OpCost(0, 0, True)
    assert not cost("Einsum", {"equation": "ij,jk->ik"}, [(2, 3), None], [None]).known


# --------------------------------------------------------------------------------------------
# Pooling, normalisation, elementwise, reductions, resize
# --------------------------------------------------------------------------------------------


def test_maxpool_and_averagepool():
    mp = cost("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, [(1, 8, 32, 32)],
              [(1, 8, 16, 16)])
    assert mp == OpCost(0, 4 * 8 * 16 * 16, True)
    ap = cost("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, [(1, 8, 32, 32)],
              [None])
    assert ap == OpCost(0, 9 * 8 * 32 * 32, True)


def test_pool_ceil_mode_and_lppool():
    c = cost("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
             [(1, 1, 5, 5)], [None])
    assert c.flops == 4 * 3 * 3
    lp = cost("LpPool", {"kernel_shape": [2, 2]}, [(1, 1, 3, 3)], [(1, 1, 2, 2)])
    assert lp.flops == 2 * 4 * 4
    assert not cost("MaxPool", {}, [(1, 1, 4, 4)], [None]).known  # kernel_shape is required


def test_global_pools():
    assert cost("GlobalAveragePool", {}, [(1, 8, 7, 7)], [(1, 8, 1, 1)]) == OpCost(0, 392, True)
    assert cost("GlobalMaxPool", {}, [(2, 4, 3, 3)], [None]).flops == 72


def test_layer_normalization():
    assert cost("LayerNormalization", {"axis": -1}, [(2, 3, 4), (4,), (4,)], [(2, 3, 4)]) == \
        OpCost(0, 24 * 7, True)  # 5 (statistics) + scale + bias per element
    assert cost("LayerNormalization", {}, [(2, 3, 4), (4,)], [(2, 3, 4)]).flops == 24 * 6


def test_other_normalizations():
    x = (2, 4, 5, 5)
    assert cost("BatchNormalization", {}, [x, (4,), (4,), (4,), (4,)], [x]).flops == 2 * 200
    assert cost("InstanceNormalization", {}, [x, (4,), (4,)], [x]).flops == 7 * 200
    assert cost("GroupNormalization", {"num_groups": 2}, [x, (4,), (4,)], [x]).flops == 7 * 200


def test_lrn_exact_count_scales_with_size():
    # per element: size squares + (size-1) adds, then *alpha/size, +bias, pow(beta), div  -> 2*size + 3
    x = (1, 4, 2, 3)  # 24 elements
    assert cost("LRN", {"size": 3, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}, [x], [x]) == OpCost(0, 9 * 24, True)
    assert cost("LRN", {"size": 5}, [x], [x]) == OpCost(0, 13 * 24, True)
    assert cost("LRN", {"size": 1}, [x], [x]).flops == 5 * 24
    assert cost("LRN", {"size": 5}, [x], [None]).flops == 13 * 24  # output shape from the input
    assert not cost("LRN", {"size": 5}, [None], [None]).known


def test_elementwise_table_and_broadcasting():
    assert cost("Add", {}, [(4, 1, 5), (3, 1)], [None]) == OpCost(0, 60, True)
    assert cost("Sigmoid", {}, [(10,)], [(10,)]).flops == 10 * ELEMENTWISE_FLOPS["Sigmoid"]
    assert cost("Gelu", {"approximate": "tanh"}, [(10,)], [(10,)]).flops == 80
    for op in ["Sub", "Mul", "Div", "Relu", "Tanh", "Exp", "Log", "Sqrt", "Pow", "Erf", "Clip",
               "LeakyRelu", "HardSigmoid", "HardSwish", "Gelu", "Elu", "Selu", "Softplus",
               "PRelu", "Where"]:
        c = cost(op, {}, [(2, 3)], [(2, 3)])
        assert c.known and c.macs == 0 and c.flops == 6 * ELEMENTWISE_FLOPS[op] > 0, op
    assert not cost("Relu", {}, [None], [None]).known


def test_variadic_and_softmax():
    assert cost("Sum", {}, [(2, 3), (2, 3), (3,)], [(2, 3)]).flops == 2 * 6
    assert cost("Mean", {}, [(2, 3), (2, 3)], [(2, 3)]).flops == 2 * 6
    assert cost("Max", {}, [(2, 3)], [(2, 3)]).flops == 0
    assert cost("Softmax", {}, [(4, 10)], [(4, 10)]).flops == 5 * 40


def test_reduce_and_resize():
    assert cost("ReduceMean", {}, [(4, 10)], [(4, 1)]) == OpCost(0, 44, True)
    assert cost("ReduceSum", {}, [(4, 10)], [None]).flops == 40
    assert cost("Resize", {"mode": "nearest"}, [(1, 3, 4, 4)], [(1, 3, 8, 8)]) == \
        OpCost(0, 0, True)
    assert cost("Resize", {"mode": b"linear"}, [(1, 3, 4, 4)], [(1, 3, 8, 8)]).flops == \
        2 * 4 * 192  # bilinear: 4 taps x (mul + add)
    assert cost("Resize", {"mode": "cubic"}, [(1, 3, 4, 4)], [(1, 3, 8, 8)]).flops == \
        2 * 16 * 192
    assert cost("Upsample", {"mode": "linear"}, [(1, 3, 4, 4)], [(1, 3, 8, 8)]).flops == 1536


def test_data_movement_is_free_and_known():
    for op in ["Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "Squeeze",
               "Unsqueeze", "Flatten", "Identity", "Pad", "Expand", "Tile", "Shape", "Constant",
               "Cast", "DepthToSpace", "SpaceToDepth"]:
        assert op in DATA_MOVEMENT_OPS
        assert cost(op, {}, [None], [None]) == OpCost(0, 0, True), op


def test_quantize_ops():
    assert cost("QuantizeLinear", {}, [(10,), (), ()], [(10,)]).flops == 30
    assert cost("DequantizeLinear", {}, [(10,), (), ()], [(10,)]).flops == 20


def test_lstm():
    # X (seq=5, batch=2, input=8), W (1, 4*16, 8): 4 gates x H x (I + H) per step
    c = cost("LSTM", {"hidden_size": 16}, [(5, 2, 8), (1, 64, 8), (1, 64, 16)], [None])
    assert c.known and c.macs == 5 * 2 * 4 * 16 * (8 + 16)
    bi = cost("LSTM", {"hidden_size": 16, "direction": "bidirectional"},
              [(5, 2, 8), (2, 64, 8), (2, 64, 16)], [None])
    assert bi.macs == 2 * c.macs


def test_contrib_ops_best_effort():
    fc = cost("FusedConv", {"activation": "Relu"}, [(1, 3, 8, 8), (4, 3, 3, 3), (4,)],
              [(1, 4, 6, 6)], domain="com.microsoft")
    assert fc.macs == 4 * 36 * 27 and fc.flops == 2 * fc.macs + 2 * 144
    att = cost("Attention", {"num_heads": 2}, [(1, 4, 8), (8, 24), (24,)], [(1, 4, 8)],
               domain="com.microsoft")
    assert att.known and att.macs == 1 * 4 * 8 * 24 + 1 * 4 * 4 * (8 + 8)
    # standard ops re-registered in contrib domains fall back to the standard formula
    assert cost("Gelu", {}, [(3,)], [(3,)], domain="com.microsoft").known
    assert not cost("NoSuchContribOp", {}, [(3,)], [(3,)], domain="com.microsoft").known


# --------------------------------------------------------------------------------------------
# Unknown ops and known_ops()
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op,domain",
    [("FooBar", ""), ("If", ""), ("Loop", ""), ("Scan", ""), ("NonMaxSuppression", ""),
     ("TreeEnsembleClassifier", "ai.onnx.ml"), ("Conv", "my.custom.domain")],
)
def test_unknown_ops_are_not_free(op, domain):
    c = cost(op, {}, [(1, 3, 8, 8)], [(1, 3, 8, 8)], domain=domain)
    assert c.known is False


def test_known_ops():
    ops = known_ops()
    assert isinstance(ops, frozenset)
    for op in ["Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "MaxPool", "AveragePool",
               "LpPool", "GlobalAveragePool", "GlobalMaxPool", "Softmax", "LogSoftmax",
               "BatchNormalization", "InstanceNormalization", "LayerNormalization",
               "GroupNormalization", "LRN", "ReduceMean", "ReduceSum", "Resize", "Upsample",
               "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
               "ConvInteger", "MatMulInteger", "Reshape", "Max", "Min", "Sum", "Mean", "LSTM"]:
        assert op in ops, op
    assert not {"If", "Loop", "Scan"} & ops
    assert "Attention" in known_ops("com.microsoft") and "Attention" not in ops
    assert known_ops("ai.onnx.ml") == frozenset()


# --------------------------------------------------------------------------------------------
# Brute-force cross-checks (numpy loops counting every multiply-accumulate; ORT for semantics)
# --------------------------------------------------------------------------------------------


def _run_single(op, attrs, inputs):
    names = [f"i{k}" for k in range(len(inputs))]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in
         zip(names, inputs)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs)))[0]


def _brute_conv(x, w, group, strides, pads, dil):
    """Direct convolution; returns (output, number of multiply-accumulates performed)."""
    n, c = x.shape[:2]
    m = w.shape[0]
    ks = w.shape[2:]
    r = len(ks)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + r]) for i in range(r)])
    out_sp = [(xp.shape[2 + i] - dil[i] * (ks[i] - 1) - 1) // strides[i] + 1 for i in range(r)]
    y = np.zeros((n, m, *out_sp), np.float64)
    cg, mg = c // group, m // group
    macs = 0
    for b, oc in itertools.product(range(n), range(m)):
        g = oc // mg
        for pos in itertools.product(*[range(o) for o in out_sp]):
            idx = tuple(slice(pos[i] * strides[i], pos[i] * strides[i] + dil[i] * (ks[i] - 1) + 1,
                              dil[i]) for i in range(r))
            window = xp[(b, slice(g * cg, (g + 1) * cg), *idx)]
            y[(b, oc, *pos)] = np.sum(window * w[oc])
            macs += window.size
    return y, macs


def test_conv_bruteforce_random_shapes():
    rng = np.random.default_rng(1234)
    for trial in range(6):
        r = [1, 2, 2, 3, 1, 2][trial]
        group = int(rng.choice([1, 2]))
        c = group * int(rng.integers(1, 3))
        m = group * int(rng.integers(1, 3))
        ks = [int(rng.integers(1, 4)) for _ in range(r)]
        dil = [int(rng.integers(1, 3)) for _ in range(r)]
        strides = [int(rng.integers(1, 3)) for _ in range(r)]
        pads = [int(rng.integers(0, 2)) for _ in range(2 * r)]
        sp = [int(rng.integers(6, 9)) if r < 3 else 5 for _ in range(r)]
        x = rng.standard_normal((1, c, *sp)).astype(np.float32)
        w = rng.standard_normal((m, c // group, *ks)).astype(np.float32)
        attrs = {"group": group, "strides": strides, "pads": pads, "dilations": dil}
        want, macs = _brute_conv(x.astype(np.float64), w.astype(np.float64), group, strides, pads,
                                 dil)
        got = _run_single("Conv", attrs, [x, w])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        for outs in ([got.shape], [None]):  # given, and inferred from the attributes
            cst = op_cost("Conv", "", attrs, [x.shape, w.shape], outs)
            assert cst == OpCost(macs, 2 * macs, True), (trial, attrs, outs)


def _brute_matmul(a, b):
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a3 = np.broadcast_to(a2, (*batch, *a2.shape[-2:]))
    b3 = np.broadcast_to(b2, (*batch, *b2.shape[-2:]))
    macs = 0
    y = np.zeros((*batch, a2.shape[-2], b2.shape[-1]))
    for idx in itertools.product(*[range(d) for d in batch]):
        for i, j in itertools.product(range(a2.shape[-2]), range(b2.shape[-1])):
            for k in range(a2.shape[-1]):
                y[(*idx, i, j)] += a3[(*idx, i, k)] * b3[(*idx, k, j)]
                macs += 1
    return y, macs


def test_matmul_bruteforce_random_shapes():
    rng = np.random.default_rng(7)
    shapes = [((3,), (3,)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,))]
    for _ in range(4):
        k = int(rng.integers(1, 5))
        ba = tuple(int(d) for d in rng.choice([1, 2, 3], size=int(rng.integers(0, 3))))
        bb = tuple(d if rng.random() < 0.5 else 1 for d in ba)[int(rng.integers(0, 2)):]
        shapes.append(((*ba, int(rng.integers(1, 4)), k), (*bb, k, int(rng.integers(1, 4)))))
    for sa, sb in shapes:
        a = rng.standard_normal(sa)
        b = rng.standard_normal(sb)
        _, macs = _brute_matmul(a, b)
        out = np.matmul(a, b).shape
        assert op_cost("MatMul", "", {}, [sa, sb], [out]) == OpCost(macs, 2 * macs, True), (sa, sb)
        assert op_cost("MatMul", "", {}, [sa, sb], [None]).macs == macs


def test_gemm_bruteforce_random_shapes():
    rng = np.random.default_rng(99)
    for _ in range(6):
        m, k, n = (int(v) for v in rng.integers(1, 6, size=3))
        ta, tb = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        bias = rng.standard_normal((n,)).astype(np.float32)
        a_eff, b_eff = (a.T if ta else a), (b.T if tb else b)
        want, macs = _brute_matmul(a_eff.astype(np.float64), b_eff.astype(np.float64))
        got = _run_single("Gemm", {"transA": ta, "transB": tb}, [a, b, bias])
        np.testing.assert_allclose(got, want + bias, rtol=1e-4, atol=1e-4)
        cst = op_cost("Gemm", "", {"transA": ta, "transB": tb}, [a.shape, b.shape, bias.shape],
                      [got.shape])
        assert cst == OpCost(macs, 2 * macs + m * n, True)
        assert math.prod(got.shape) == m * n


def test_conv_transpose_output_shape_matches_onnxruntime():
    rng = np.random.default_rng(5)
    cases = [
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        {"group": 2, "strides": [3, 1], "dilations": [2, 1]},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    ]
    for attrs in cases:
        group = attrs.get("group", 1)
        x = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
        w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
        b = rng.standard_normal((3 * group,)).astype(np.float32)
        y = _run_single("ConvTranspose", attrs, [x, w, b])
        macs = x.size * 3 * 3 * 2
        want = OpCost(macs, 2 * macs + y.size, True)
        assert op_cost("ConvTranspose", "", attrs, [x.shape, w.shape, b.shape], [y.shape]) == want
        assert op_cost("ConvTranspose", "", attrs, [x.shape, w.shape, b.shape], [None]) == want
