"""Cost models: kernel grouping, roofline, NNLS fits, the JSON artifact, predict, profile + CLI."""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxsplit
from onnxsplit import zoo
from onnxsplit.cost import (
    FEATURES,
    CostModel,
    CostModelError,
    fit_from_kernels,
    fit_from_whole_models,
    group_kernels,
    predict,
    roofline_kernel_ms,
)
from onnxsplit.cost.fit import Sample, fit_samples, predict_sample, sample_from_graph
from onnxsplit.cost.model import cost_model_path, find_cost_model
from onnxsplit.errors import OnnxSplitError
from onnxsplit.profile import CSV_COLUMNS, ProfileError, graph_of_spec, read_profile_csv, run_profile
from onnxsplit.targets import TargetError, load_target


@pytest.fixture(scope="module")
def resnet() -> onnxsplit.Graph:
    return onnxsplit.load_graph(zoo.resnet_like())


@pytest.fixture(scope="module")
def transformer() -> onnxsplit.Graph:
    return onnxsplit.load_graph(zoo.transformer_encoder())


def _by_head(kernels):  # noqa: ANN001, ANN202
    return {k.head: k for k in kernels}


# ------------------------------------------------------------------------------------ kernels
def test_conv_bn_relu_is_one_kernel(resnet: onnxsplit.Graph) -> None:
    ks = _by_head(group_kernels(resnet))
    stem = ks["stem.conv"]
    assert stem.members == ("stem.conv", "stem.bn", "stem.relu")
    assert stem.family == "conv" and stem.followers == ("stem.bn", "stem.relu")
    # the residual Add and the block's ReLU fuse into the second conv (onnxruntime's NCHWc Sum fusion)
    unit2 = ks["stage1.block0.unit2.conv"]
    assert unit2.members == ("stage1.block0.unit2.conv", "stage1.block0.unit2.bn", "stage1.block0.add",
                             "stage1.block0.relu")
    assert ks["stage2.block0.proj.conv"].family == "conv_pw"
    members = [m for k in ks.values() for m in k.members]
    assert sorted(members) == sorted(n.name for n in resnet.compute_nodes)  # a partition
    # features: the fused kernel reads the skip tensor and writes only the block output
    assert unit2.in_nbytes == 2 * resnet.tensors["stage1.block0.unit1.relu.out"].nbytes
    assert unit2.out_nbytes == resnet.tensors["stage1.block0.relu.out"].nbytes
    assert unit2.features["mflops"] == pytest.approx(sum(resnet.node(m).flops for m in unit2.members) / 1e6)
    assert set(unit2.features) == set(FEATURES)


def test_transformer_fusions(transformer: onnxsplit.Graph) -> None:
    ks = group_kernels(transformer)
    by_pattern = {k.fused_pattern for k in ks}
    assert "gelu" in by_pattern
    gelu = next(k for k in ks if k.fused_pattern == "gelu")
    assert gelu.op_types == ("Div", "Erf", "Add", "Mul", "Mul") and gelu.family == "transcendental"
    q = _by_head(ks)["layer0.attn.q.matmul"]
    assert q.members == ("layer0.attn.q.matmul", "layer0.attn.q.add") and q.family == "gemm"
    scores = _by_head(ks)["layer0.attn.scores"]
    assert scores.family == "matmul" and scores.op_types == ("MatMul", "Div")


def _model(nodes, inputs, outputs, inits=()) -> onnxsplit.Graph:  # noqa: ANN001
    g = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return onnxsplit.load_graph(m)


def test_silu_transpose_matmul_and_constant_folding() -> None:
    f = TensorProto.FLOAT
    w = numpy_helper.from_array(np.ones((8, 8, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Sigmoid", ["c"], ["s"], name="sig"),
        helper.make_node("Mul", ["c", "s"], ["y"], name="silu_mul"),
        helper.make_node("Shape", ["y"], ["shp"], name="shape"),
        helper.make_node("Transpose", ["y"], ["yt"], name="tr", perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["y", "yt"], ["z"], name="mm"),
    ]
    g = _model(nodes, [helper.make_tensor_value_info("x", f, [1, 8, 4, 4])],
               [helper.make_tensor_value_info("z", f, [1, 8, 4, 4]), helper.make_tensor_value_info("shp", TensorProto.INT64, [4])],
               [w])
    ks = _by_head(group_kernels(g))
    assert ks["conv"].members == ("conv",)  # x * sigmoid(x) is not fused into the conv ...
    assert ks["silu_mul"].members == ("sig", "silu_mul") and ks["silu_mul"].fused_pattern == "silu"  # ... but is one kernel
    assert ks["mm"].members == ("tr", "mm")  # last-two-axes Transpose folds into MatMul
    assert ks["shape"].family == "constant"  # Shape of a static tensor is folded


def _hswish_block() -> onnxsplit.Graph:
    """conv -> relu -> conv + residual -> x * HardSigmoid(x) (PP-LCNet style) -> Div."""
    f = TensorProto.FLOAT
    w = numpy_helper.from_array(np.full((8, 8, 1, 1), 0.1, np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c0"], name="conv0"),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w"], ["c1"], name="conv1"),
        helper.make_node("Add", ["c1", "r0"], ["a"], name="res_add"),
        helper.make_node("HardSigmoid", ["a"], ["hs"], name="hsig"),
        helper.make_node("Mul", ["a", "hs"], ["hw"], name="hswish_mul"),
        helper.make_node("Div", ["hw", "two"], ["y"], name="div"),
    ]
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    return _model(nodes, [helper.make_tensor_value_info("x", f, [1, 8, 8, 8])],
                  [helper.make_tensor_value_info("y", f, [1, 8, 8, 8])], [w, two])


def test_int8_on_ort_cpu_groups_kernels_as_quantized_models_run() -> None:
    """fp32: onnxruntime fuses HardSigmoid into the conv; an int8 (QDQ) model runs QLinearConv with
    Relu/Clip folded in and everything else as kernels of its own, the ops the quantizer leaves
    fp32 (HardSigmoid, Div) between a DequantizeLinear and a QuantizeLinear: family int8_fallback."""
    from onnxsplit.cost.kernels import group_kernels_for

    g = _hswish_block()
    fp32 = _by_head([k for k in group_kernels_for(g, "ort-cpu", "fp32") if k.members])  # not the layout reorders
    assert fp32["conv0"].members == ("conv0", "relu0") and fp32["conv1"].members == ("conv1", "res_add")
    assert {h: k.family for h, k in fp32.items() if not h.startswith("conv")} == {
        "hsig": "elementwise", "hswish_mul": "elementwise", "div": "elementwise"}
    int8 = _by_head([k for k in group_kernels_for(g, "ort-cpu", "int8") if k.members])  # not the layout Transposes
    assert int8["conv0"].members == ("conv0", "relu0") and int8["conv1"].members == ("conv1",)
    assert {h: k.family for h, k in int8.items() if not h.startswith("conv")} == {
        "res_add": "elementwise", "hsig": "int8_fallback", "hswish_mul": "elementwise", "div": "int8_fallback"}
    # other runtimes/precisions are unchanged
    assert _by_head(group_kernels_for(g, "ort-cuda", "int8")).keys() == _by_head(group_kernels(g, "ort-cuda")).keys()
    # a lone non-quantized op: the quantizer leaves such a graph fp32, so it is no fallback island
    lone = _model([helper.make_node("HardSigmoid", ["x"], ["y"], name="hs")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    assert [k.family for k in group_kernels_for(lone, "ort-cpu", "int8")] == ["elementwise"]
    # predict() and the fit use the same grouping; a model without an int8_fallback law prices those
    # kernels with its elementwise law (the parent family), never 0
    def law(one_ms: float) -> dict:
        return {**dict.fromkeys(FEATURES, 0.0), "one": one_ms}

    m = CostModel(target="host-x86", runtime="ort-cpu", precision="int8", version="t", features=FEATURES,
                  families={"conv_pw": law(0.01), "elementwise": law(0.002)}, overhead_ms=0.0)
    table = predict(g, "host-x86", "int8", cost_model=m)
    assert table.latency_ms["hsig"] == pytest.approx(0.002) and table.latency_ms["div"] == pytest.approx(0.002)
    assert table.latency_ms["relu0"] == 0.0 and table.fused_into["relu0"] == "conv0"
    m.families["int8_fallback"] = law(0.005)
    table = predict(g, "host-x86", "int8", cost_model=m)
    assert table.latency_ms["hsig"] == pytest.approx(0.005) and table.latency_ms["hswish_mul"] == pytest.approx(0.002)
    s = sample_from_graph(g, 1.0, rules="ort-cpu", precision="int8")
    assert s.family_features["int8_fallback"]["one"] == 2.0


def test_quantized_ops_match_the_installed_quantizer() -> None:
    """QUANTIZED_OPS is a copy of onnxruntime's quantizer registries (so that a kernel's family
    does not depend on the installed version); an onnxruntime upgrade that changes them fails here."""
    pytest.importorskip("onnxruntime")
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from onnxsplit.cost.kernels import QUANTIZED_OPS

    assert QUANTIZED_OPS == frozenset(QDQRegistry) | frozenset(QLinearOpsRegistry)


def test_op_family_classification() -> None:
    g = onnxsplit.load_graph(zoo.mobilenetv2_like())
    fams = {k.head: k.family for k in group_kernels(g)}
    assert fams["block0.dw"] == "conv_dw" and fams["block0.expand"] == "conv_pw" and fams["stem.conv"] == "conv"
    assert fams["head.fc"] == "gemm" and fams["head.pool"] == "pool" and fams["head.flatten"] == "reshape"


# ------------------------------------------------------------------------------------ roofline
def test_roofline_more_flops_more_time_and_uncalibrated(resnet: onnxsplit.Graph) -> None:
    t = load_target("rpi4")
    ks = sorted((k for k in group_kernels(resnet) if k.family.startswith("conv")), key=lambda k: k.flops)
    times = [roofline_kernel_ms(k, t) for k in ks]
    compute = [k.flops / (t.peak_gflops_fp32 * 1e9 * t.compute_efficiency) * 1e3 for k in ks]
    assert all(tm >= c for tm, c in zip(times, compute))
    small, big = ks[0], ks[-1]
    assert big.flops > small.flops and roofline_kernel_ms(big, t) > roofline_kernel_ms(small, t)
    assert roofline_kernel_ms(big, t, "int8") < roofline_kernel_ms(big, t, "fp32")
    table = predict(resnet, "rpi4", runtime="ort-cpu")  # no rpi4 measurements for ort-cpu: roofline
    assert table.calibrated is False and table.model_version is None and table.source == "roofline"
    assert table.total_ms == pytest.approx(sum(table.latency_ms.values()) + table.overhead_ms)
    assert all(v > 0 for n, v in table.latency_ms.items() if n not in table.fused_into)
    assert predict(resnet, "server-gpu").total_ms < predict(resnet, "arm-cpu").total_ms


def test_unknown_target_and_bad_precision(resnet: onnxsplit.Graph) -> None:
    with pytest.raises(TargetError, match="known targets: .*host-x86"):
        predict(resnet, "no-such-board")
    with pytest.raises(TargetError, match="unknown precision 'int4'"):
        predict(resnet, "host-x86", "int4")
    with pytest.raises(TargetError, match="has no runtime 'ort-trt'"):
        predict(resnet, "host-x86", runtime="ort-trt")


# ------------------------------------------------------------------------------------ fits
TRUE = {
    "conv": {"mflops": 0.01, "in_mb": 0.05, "out_mb": 0.08, "param_mb": 0.2, "one": 0.004},
    "gemm": {"mflops": 0.012, "in_mb": 0.02, "out_mb": 0.1, "param_mb": 0.5, "one": 0.002},
    "elementwise": {"mflops": 0.3, "in_mb": 0.1, "out_mb": 0.15, "param_mb": 0.0, "one": 0.001},
}


def _true_ms(family: str, feats: dict[str, float]) -> float:
    return sum(TRUE[family][f] * feats[f] for f in FEATURES)


def test_fit_from_kernels_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(1)
    overhead = 0.005
    rows = []
    for fam in TRUE:
        for i in range(40):
            feats = {"mflops": rng.uniform(0.1, 300), "in_mb": rng.uniform(0.01, 5), "out_mb": rng.uniform(0.01, 5),
                     "param_mb": rng.uniform(0.01, 3) if fam != "elementwise" else 0.0}
            feats["one"] = 1.0
            rows.append({"family": fam, "name": f"{fam}{i}", **feats, "median_ms": _true_ms(fam, feats) + overhead})
    model = fit_from_kernels(rows, target="host-x86", provenance={"source": "synthetic"}, overhead_ms=overhead)
    for fam, coefs in TRUE.items():
        for f, c in coefs.items():
            assert model.families[fam][f] == pytest.approx(c, rel=0.02, abs=1e-4), (fam, f)
    assert model.accuracy["holdout"]["n"] == 24 and model.accuracy["holdout"]["mape_pct"] < 1.0
    assert model.provenance["n_samples"] == 120 and model.provenance["source"] == "synthetic"


def test_fit_with_noise_stays_non_negative() -> None:
    rng = np.random.default_rng(2)
    samples = []
    for i in range(60):
        feats = {"mflops": rng.uniform(1, 100), "in_mb": rng.uniform(0.1, 2), "out_mb": rng.uniform(0.1, 2),
                 "param_mb": rng.uniform(0.0, 1), "one": 1.0}
        y = _true_ms("conv", feats) * rng.lognormal(0, 0.1)
        samples.append(Sample(f"s{i}", y, {"conv": feats}, 0.0, "kernel"))
    fam, oh = fit_samples(samples)
    assert all(v >= 0 for v in fam["conv"].values()) and oh >= 0
    assert fam["conv"]["mflops"] == pytest.approx(0.01, rel=0.2)


def _one_sided_noise_samples(seed: int, n: int = 120, slow_share: float = 0.4) -> list[Sample]:
    """Conv kernel rows on the TRUE law, a few % symmetric jitter, and ``slow_share`` of them 1.3-1.9x
    slower (the one-sided noise of a preempted vCPU)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        feats = {"mflops": rng.uniform(1, 100), "in_mb": rng.uniform(0.1, 2), "out_mb": rng.uniform(0.1, 2),
                 "param_mb": rng.uniform(0.0, 1), "one": 1.0}
        y = _true_ms("conv", feats) * rng.lognormal(0, 0.02)
        if rng.random() < slow_share:
            y *= rng.uniform(1.3, 1.9)
        out.append(Sample(f"s{i}", y, {"conv": feats}, 0.0, "kernel"))
    return out


def test_robust_slow_fit_ignores_one_sided_slow_outliers() -> None:
    """With 40 % of the rows 1.3-1.9x slower, the plain fit's law is pulled up (11-15 % over the
    true one on a typical row for seeds 5-7) while ``robust="slow"`` recovers it within 2 %; ``"both"`` is also
    closer than the plain fit."""
    samples = _one_sided_noise_samples(5)
    typical = {"mflops": 50.0, "in_mb": 1.0, "out_mb": 1.0, "param_mb": 0.5, "one": 1.0}
    true = _true_ms("conv", typical)

    def ratio(**kw: object) -> float:
        fam, oh = fit_samples(samples, overhead_ms=0.0, **kw)  # type: ignore[arg-type]
        return sum(fam["conv"][f] * v for f, v in typical.items()) / true

    plain, slow, both = ratio(), ratio(robust="slow"), ratio(robust="both")
    assert plain > 1.08, plain
    assert slow == pytest.approx(1.0, abs=0.02), slow
    assert abs(both - 1) < abs(plain - 1), (both, plain)


def test_robust_weights_damp_only_what_the_mode_says() -> None:
    from onnxsplit.cost.fit import FitError, robust_weights

    fam = {"conv": {"mflops": 0.01, "in_mb": 0.0, "out_mb": 0.0, "param_mb": 0.0, "one": 0.0}}
    rows = [Sample(name, ms, {"conv": {"mflops": 100.0, "one": 1.0}}, 0.0, "kernel")
            for name, ms in (("on", 1.0), ("slow", 2.0), ("fast", 0.5), ("near", 1.04))]
    w0 = [1.0, 1.0, 1.0, 2.0]
    slow = robust_weights(rows, fam, 0.0, w0, mode="slow", c=0.05)
    assert slow.tolist() == pytest.approx([1.0, 0.05 / math.log(2.0), 1.0, 2.0])
    both = robust_weights(rows, fam, 0.0, w0, mode="both", c=0.05)
    assert both.tolist() == pytest.approx([1.0, 0.05 / math.log(2.0), 0.05 / math.log(2.0), 2.0])
    assert robust_weights(rows, fam, 0.0, w0, mode="none").tolist() == w0
    with pytest.raises(FitError, match="unknown robust mode 'fastest'"):
        fit_samples(rows, robust="fastest")
    with pytest.raises(FitError, match="threshold must be > 0"):
        robust_weights(rows, fam, 0.0, mode="slow", c=0.0)


def test_cli_robust_constants_match_the_fit_module() -> None:
    from onnxsplit.cost import cli, fit

    assert cli._ROBUST_MODES == fit.ROBUST_MODES and cli._ROBUST_C == fit.DEFAULT_ROBUST_C


def _chain_graph(rng: np.random.Generator, i: int) -> onnxsplit.Graph:
    """A random conv/relu/linear chain: varied shapes, so per-family feature sums vary independently."""
    from onnxsplit.profile import _B

    b = _B(f"chain{i}", seed=i)
    c, hw = int(rng.choice([4, 8, 16, 32])), int(rng.choice([8, 16, 32]))
    x = b.input((1, c, hw, hw))
    for _ in range(int(rng.integers(1, 5))):
        cout, k = int(rng.choice([4, 8, 16, 32, 64])), int(rng.choice([1, 3]))
        x = b.conv(x, c, cout, k, bias=bool(rng.integers(2)))
        if rng.random() < 0.5:
            x = b.node("Relu", [x])
        x = b.node("Tanh", [x])  # never fused into the conv: a (transcendental) elementwise kernel
        if rng.random() < 0.3 and hw >= 4:
            x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
            hw //= 2
        c = cout
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    for _ in range(int(rng.integers(0, 3))):
        cout = int(rng.choice([16, 64, 256]))
        x, c = b.linear(x, c, cout), cout
    b.outputs.append(b.linear(x, c, int(rng.choice([10, 100, 1000]))))
    return onnxsplit.load_graph(b.model())


def test_fit_from_whole_models_recovers_synthetic_sums() -> None:
    rng = np.random.default_rng(0)
    graphs = [_chain_graph(rng, i) for i in range(40)]
    true = {**TRUE, "pool": {"mflops": 0.05, "in_mb": 0.1, "out_mb": 0.1, "param_mb": 0.0, "one": 0.003},
            "reshape": {"mflops": 0.0, "in_mb": 0.0, "out_mb": 0.0, "param_mb": 0.0, "one": 0.0005},
            "conv_pw": {"mflops": 0.006, "in_mb": 0.03, "out_mb": 0.05, "param_mb": 0.1, "one": 0.003},
            "transcendental": {"mflops": 0.6, "in_mb": 0.1, "out_mb": 0.15, "param_mb": 0.0, "one": 0.002}}
    overhead = 0.01

    def latency(g: onnxsplit.Graph) -> float:
        s = sample_from_graph(g, 1.0)
        return overhead + sum(true[fam][f] * v for fam, feats in s.family_features.items() for f, v in feats.items())

    lats = [latency(g) for g in graphs]
    model = fit_from_whole_models(graphs, lats, target="host-x86", runtime="ort-cpu", precision="fp32",
                                  provenance={"source": "synthetic sums"}, holdout_fraction=0.25, seed=0)
    hold = model.accuracy["holdout"]
    assert hold["n"] == 10 and hold["mape_pct"] < 1.0 and hold["spearman"] > 0.99
    # every graph has exactly one Flatten: only overhead + reshape.one is identifiable
    assert model.overhead_ms + model.families["reshape"]["one"] == pytest.approx(overhead + 0.0005, rel=0.1)
    assert model.families["conv"]["mflops"] == pytest.approx(true["conv"]["mflops"], rel=0.05)
    # (a batch-1 linear layer's params are proportional to its FLOPs: only their combination is identifiable)
    gemm = model.families["gemm"]
    assert gemm["mflops"] * 2 + gemm["param_mb"] * 4 == pytest.approx(true["gemm"]["mflops"] * 2 + true["gemm"]["param_mb"] * 4,
                                                                    rel=0.05)
    # the whole-model prediction through predict() equals the synthetic sum
    for g, lat in zip(graphs[:5], lats[:5]):
        assert predict(g, "host-x86", cost_model=model).total_ms == pytest.approx(lat, rel=0.01)


# ------------------------------------------------------------------------------------ artifact
def _tiny_model() -> CostModel:
    return CostModel(
        target="host-x86", runtime="ort-cpu", precision="fp32", version="7", features=FEATURES,
        families={"conv": dict.fromkeys(FEATURES, 0.01), "elementwise": dict.fromkeys(FEATURES, 0.002)},
        overhead_ms=0.01,
        provenance={"source": "test", "license": "CC0-1.0", "citation": "none", "n_samples": 3, "date": "2024-01-01"},
        accuracy={"holdout": {"n": 1, "mape_pct": 5.0, "median_ape_pct": 5.0, "spearman": None}},
    )


def test_artifact_round_trips(tmp_path: Path) -> None:
    m = _tiny_model()
    path = m.save(tmp_path / "host-x86" / "ort-cpu-fp32.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == "onnxsplit.costmodel/2" and doc["coefficient_units"]["mflops"] == "ms/MFLOP"
    back = CostModel.load(path)
    assert back.to_json() == m.to_json()
    assert find_cost_model("host-x86", "ort-cpu", "fp32", tmp_path).version == "7"
    assert find_cost_model("host-x86", "ort-cpu", "int8", tmp_path) is None


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d["families"]["conv"].update(mflops=-1.0), r"families.conv.mflops: coefficient must be a finite number >= 0"),
        (lambda d: d["families"].update(warp_drive=d["families"]["conv"]), r"families.warp_drive: unknown op family"),
        (lambda d: d.pop("provenance"), r"provenance: missing key"),
        (lambda d: d["provenance"].pop("license"), r"provenance.license: missing key"),
        (lambda d: d["accuracy"]["holdout"].pop("mape_pct"), r"accuracy.holdout.mape_pct: missing key"),
        (lambda d: d.update(schema="onnxsplit.costmodel/0"), r"schema: expected 'onnxsplit.costmodel/2'"),
        (lambda d: d["kernel_configs"].update({"conv|Conv|1x1->1x1||": {"family": "conv", "ms": -1.0, "law_ms": 0.1,
                                                                          "n_train": 3}}),
         r"kernel_configs.conv\|Conv.*\.ms: must be a finite number >= 0"),
        (lambda d: d["kernel_configs"].update({"pool|MaxPool|1x1->1x1||": {"family": "pool", "ms": 1.0, "law_ms": 0.1,
                                                                             "n_train": 3}}),
         r"kernel_configs.pool.*family 'pool' has no law"),
        (lambda d: d["kernel_configs"].update({"elementwise|Relu|1->1||": {"family": "conv", "ms": 1.0, "law_ms": 0.1,
                                                                             "n_train": 3}}),
         r"does not start with its family 'conv\|'"),
        (lambda d: d["kernel_configs"].update({"conv|Conv|1->1||": {"family": "conv", "ms": 1.0, "n_train": 3}}),
         r"kernel_configs.conv.*expected exactly the keys"),
        (lambda d: d.pop("kernel_configs"), r"kernel_configs: missing key"),
        (lambda d: d["coefficient_units"].update(mflops="ms/GFLOP"), r"coefficient_units.mflops: unit 'ms/GFLOP'"),
        (lambda d: d.update(extra=1), r"extra: unknown key"),
        (lambda d: d["families"]["conv"].pop("one"), r"families.conv: must give a coefficient for exactly"),
        (lambda d: d.update(precision="int4"), r"precision: unknown precision 'int4'"),
    ],
)
def test_artifact_validation_rejects_malformed(tmp_path: Path, edit, pattern: str) -> None:  # noqa: ANN001
    doc = _tiny_model().to_json()
    edit(doc)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(CostModelError, match=pattern) as exc:
        CostModel.load(p)
    assert str(p) in str(exc.value) and isinstance(exc.value, OnnxSplitError)


def test_schema_v1_files_still_load(tmp_path: Path) -> None:
    doc = _tiny_model().to_json()
    doc["schema"] = "onnxsplit.costmodel/1"
    doc.pop("kernel_configs")
    p = tmp_path / "v1.json"
    p.write_text(json.dumps(doc))
    m = CostModel.load(p)
    assert m.kernel_configs == {} and m.families["conv"]["mflops"] == 0.01
    doc["kernel_configs"] = {}
    p.write_text(json.dumps(doc))
    with pytest.raises(CostModelError, match="kernel_configs: unknown key"):
        CostModel.load(p)


def _config_samples(rng: np.random.Generator, n: int, true_cfg: dict[str, float], law: dict[str, float],
                    feats_of: dict[str, dict[str, float]]) -> list[Sample]:
    """Whole-model samples made of configurations A..E: latency = overhead + sum of true config costs."""
    out = []
    sigs = sorted(feats_of)
    for i in range(n):
        counts = {sig: float(rng.integers(0, 4)) for sig in sigs}
        if not any(counts.values()):
            counts[sigs[0]] = 1.0
        fam_feats = dict.fromkeys(FEATURES, 0.0)
        for sig, c in counts.items():
            for f in FEATURES:
                fam_feats[f] += c * feats_of[sig][f]
        lat = 0.01 + sum(c * true_cfg.get(sig, law[sig]) for sig, c in counts.items())
        out.append(Sample(f"m{i}", lat, {"conv": fam_feats}, configs={s: c for s, c in counts.items() if c},
                          config_info={s: ("conv", feats_of[s]) for s in sigs}))
    return out


def test_kernel_configs_recover_per_configuration_costs() -> None:
    """Configurations whose true cost departs from the family law get their own fitted cost;
    an unseen configuration keeps the law; a model without config terms cannot fit the data."""
    from onnxsplit.cost.fit import fit_kernel_configs

    rng = np.random.default_rng(0)
    coef = {"mflops": 0.01, "in_mb": 0.0, "out_mb": 0.0, "param_mb": 0.0, "one": 0.002}
    feats_of = {f"conv|Conv|cfg{k}||": {"mflops": m, "in_mb": 0.1, "out_mb": 0.1, "param_mb": 0.01, "one": 1.0}
                for k, m in zip("ABCDE", (10.0, 40.0, 90.0, 160.0, 250.0))}
    law = {s: sum(coef[f] * v for f, v in ft.items()) for s, ft in feats_of.items()}
    # A is 2x slower than the law (a badly-tuned shape), C 40 % faster; B, D, E follow the law
    true_cfg = {"conv|Conv|cfgA||": 2.0 * law["conv|Conv|cfgA||"], "conv|Conv|cfgC||": 0.6 * law["conv|Conv|cfgC||"]}
    samples = _config_samples(rng, 200, true_cfg, law, feats_of)
    fams, oh = fit_samples(samples)
    base_err = np.mean([abs(predict_sample(fams, oh, s) - s.latency_ms) / s.latency_ms for s in samples])
    configs, oh, info = fit_kernel_configs(samples, fams, oh, min_count=5)
    assert set(configs) == set(feats_of) and info["n_configs"] == 5
    model = CostModel(target="host-x86", runtime="ort-cpu", precision="fp32", version="1", features=FEATURES,
                      families=fams, overhead_ms=oh, kernel_configs=configs,
                      provenance={"source": "t", "license": "CC0-1.0", "citation": "", "n_samples": 1, "date": "x"},
                      accuracy={"holdout": {"n": 0, "mape_pct": None, "median_ape_pct": None, "spearman": None}})
    from onnxsplit.cost.fit import predict_model_sample

    err = np.mean([abs(predict_model_sample(model, s) - s.latency_ms) / s.latency_ms for s in samples])
    assert err < 0.01 < base_err
    ratio_a = configs["conv|Conv|cfgA||"]["ms"] / configs["conv|Conv|cfgB||"]["ms"]
    true_ratio = true_cfg["conv|Conv|cfgA||"] / law["conv|Conv|cfgB||"]
    assert ratio_a == pytest.approx(true_ratio, rel=0.05)
    assert configs["conv|Conv|cfgC||"]["ms"] / configs["conv|Conv|cfgD||"]["ms"] == pytest.approx(
        true_cfg["conv|Conv|cfgC||"] / law["conv|Conv|cfgD||"], rel=0.05)
    # min_count: a configuration seen in fewer measurements gets no entry (the law applies)
    rare = [s for s in samples[:3]]
    assert fit_kernel_configs(rare, fams, oh, min_count=5)[0] == {}
    assert oh == pytest.approx(0.01, rel=0.05)


def test_kernel_configs_round_trip_and_drive_predict(tmp_path: Path, resnet: onnxsplit.Graph) -> None:
    """A fitted config cost is what predict() gives the kernel's head node; other kernels use the law."""
    ks = group_kernels(resnet, "ort-cpu")
    stem = next(k for k in ks if k.head == "stem.conv")
    m = _tiny_model()
    m.families.update({f: dict.fromkeys(FEATURES, 0.001) for f in ("conv_pw", "pool", "gemm", "reshape", "elementwise")})
    m.kernel_configs = {stem.signature: {"family": "conv", "ms": 12.5, "law_ms": 0.3, "n_train": 9}}
    path = m.save(tmp_path / "m.json")
    back = CostModel.load(path)
    assert back.kernel_configs == m.kernel_configs and back.to_json() == m.to_json()
    table = predict(resnet, "host-x86", cost_model=back)
    assert table.latency_ms["stem.conv"] == pytest.approx(12.5)
    other = next(k for k in ks if k.family == "conv" and k.signature != stem.signature)
    assert table.latency_ms[other.head] == pytest.approx(back.predict_features("conv", other.features))
    # a config entry never stands in for a family the model lacks
    back.families.pop("pool")
    pool = next(k for k in ks if k.family == "pool")
    back.kernel_configs[pool.signature] = {"family": "pool", "ms": 1.0, "law_ms": 1.0, "n_train": 5}
    assert back.predict_kernel(pool) is None


def test_memory_floor_raises_dram_bound_kernels_only(tmp_path: Path) -> None:
    """A kernel whose bytes exceed the cache costs at least bytes / bandwidth; smaller ones, and
    Gather-like data movement, keep the law; the floor round-trips and is validated."""
    from onnxsplit.profile import _B

    b = _B("big_fc", seed=0)
    x = b.input((1, 4096))
    y = b.linear(x, 4096, 4096)  # 67 MB of fp32 weights
    b.outputs.append(b.linear(y, 4096, 16))  # 0.26 MB
    g = onnxsplit.load_graph(b.model())
    m = _tiny_model()
    m.families["gemm"] = dict.fromkeys(FEATURES, 1e-4)
    m.families["data_movement"] = dict.fromkeys(FEATURES, 1e-4)
    ks = [k for k in group_kernels(g) if k.family == "gemm"]
    big, small = sorted(ks, key=lambda k: -k.nbytes)
    law_big = m.predict_kernel(big)
    m.memory_floor = {"dram_gbps": 20.0, "cache_mb": 32.0, "bytes_scale": 1.0, "source": "test"}
    assert m.predict_kernel(big) == pytest.approx(big.nbytes / 20e9 * 1e3)
    assert m.predict_kernel(big) > 10 * law_big
    assert m.predict_kernel(small) == pytest.approx(m.predict_features("gemm", small.features))
    back = CostModel.load(m.save(tmp_path / "f.json"))
    assert back.memory_floor == m.memory_floor and back.predict_kernel(big) == m.predict_kernel(big)
    assert predict(g, "host-x86", cost_model=back).latency_ms[big.head] == pytest.approx(big.nbytes / 20e9 * 1e3)
    gather = copy.copy(big)
    gather.family = "data_movement"
    assert back.predict_kernel(gather) == pytest.approx(back.predict_features("data_movement", big.features))
    doc = back.to_json()
    doc["memory_floor"]["dram_gbps"] = 0
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(CostModelError, match="memory_floor.dram_gbps: must be a finite number > 0"):
        CostModel.load(p)


def test_serial_law_prices_small_kernels_only(tmp_path: Path, resnet: onnxsplit.Graph) -> None:
    """With ``serial_kernels``, a kernel that the serial law prices below ``below_ms`` takes that
    price (even over a kernel configuration's own cost), any other kernel the main law; families
    the serial law lacks keep the main law; the block round-trips, drives predict and is validated."""
    m = _tiny_model()
    m.families["pool"] = dict.fromkeys(FEATURES, 1e-4)
    ks = [k for k in group_kernels(resnet) if k.family != "constant" and m.predict_kernel(k) is not None]
    assert {k.family for k in ks} >= {"conv", "pool"}
    main = {k.head: m.predict_kernel(k) for k in ks}
    serial_fams = {fam: {f: 3 * c for f, c in coefs.items()} for fam, coefs in m.families.items() if fam != "pool"}
    serial = {k.head: 3 * m.predict_features(k.family, k.features) for k in ks}
    below = sorted(serial[k.head] for k in ks if k.family != "pool")
    cut_ms = (below[len(below) // 2 - 1] + below[len(below) // 2]) / 2  # half of the non-pool kernels fall below
    m.serial_kernels = {"below_ms": cut_ms, "threads": 1, "families": serial_fams, "source": "test"}
    n_serial = 0
    for k in ks:
        got = m.predict_kernel(k)
        if k.family != "pool" and serial[k.head] < cut_ms:
            assert got == pytest.approx(serial[k.head]) and got > main[k.head]
            n_serial += 1
        else:
            assert got == pytest.approx(main[k.head])
    assert 0 < n_serial < len(ks)
    small = next(k for k in ks if k.family != "pool" and serial[k.head] < cut_ms)
    m.kernel_configs = {small.signature: {"family": small.family, "ms": 9.0, "law_ms": main[small.head], "n_train": 5}}
    assert m.predict_kernel(small) == pytest.approx(serial[small.head])  # the serial rule comes first
    m.kernel_configs = {}
    back = CostModel.load(m.save(tmp_path / "s.json"))
    assert back.serial_kernels == m.serial_kernels and back.to_json() == m.to_json()
    table = predict(resnet, "host-x86", cost_model=back)
    assert table.latency_ms[small.head] == pytest.approx(serial[small.head])
    assert sum(table.latency_ms[k.head] for k in ks) == pytest.approx(sum(back.predict_kernel(k) for k in ks))
    for edit, pattern in ((lambda d: d["serial_kernels"].update(below_ms=0), r"serial_kernels.below_ms: must be a finite"),
                          (lambda d: d["serial_kernels"].update(threads=0), r"serial_kernels.threads: expected a positive"),
                          (lambda d: d["serial_kernels"]["families"].update(warp=d["families"]["conv"]),
                           r"serial_kernels.families.warp: unknown op family"),
                          (lambda d: d["serial_kernels"].pop("source"), r"serial_kernels: expected null or an object")):
        doc = back.to_json()
        edit(doc)
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(doc))
        with pytest.raises(CostModelError, match=pattern):
            CostModel.load(p)


def test_artifact_not_json(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(CostModelError, match="not valid JSON"):
        CostModel.load(p)


# ------------------------------------------------------------------------------------ predict
def test_registered_host_models_validate() -> None:
    path = cost_model_path("host-x86", "ort-cpu", "fp32")
    assert path.is_file(), "the fitted host-x86 model is committed"
    m = CostModel.load(path)
    assert m.target == "host-x86" and m.accuracy["holdout"]["n"] >= 5
    for p in path.parent.glob("*.json"):
        CostModel.load(p)


def test_predict_host_uses_fitted_model(resnet: onnxsplit.Graph) -> None:
    table = predict(resnet, "host-x86")
    assert table.calibrated is True and table.runtime == "ort-cpu" and table.model_version
    assert table.uncalibrated_nodes == []
    assert table.fused_into["stem.bn"] == "stem.conv" and table.latency_ms["stem.bn"] == 0.0
    assert table.latency_ms["stem.conv"] > 0
    assert list(table.latency_ms) == [n.name for n in resnet.compute_nodes]
    assert table.as_array(resnet).sum() + table.overhead_ms == pytest.approx(table.total_ms)
    assert json.loads(json.dumps(table.to_json()))["calibrated"] is True


def test_op_without_model_is_never_free() -> None:
    g = onnxsplit.load_graph(zoo.if_model())
    table = predict(g, "host-x86")
    assert table.calibrated is True
    assert "branch" in table.uncalibrated_nodes  # the If node: no model for control flow
    assert table.latency_ms["branch"] > 0
    k = next(k for k in table.kernels if k.head == "branch")
    assert table.latency_ms["branch"] == pytest.approx(roofline_kernel_ms(k, load_target("host-x86")))
    # a model without the elementwise families: those nodes fall back to the roofline too
    m = copy.deepcopy(CostModel.load(cost_model_path("host-x86", "ort-cpu", "fp32")))
    m.families.pop("elementwise")
    m.families.pop("transcendental", None)
    t2 = predict(onnxsplit.load_graph(zoo.many_consumers()), "host-x86", cost_model=m)
    assert "side.tanh" in t2.uncalibrated_nodes and t2.latency_ms["side.tanh"] > 0


# ------------------------------------------------------------------------------------ profile + CLI
def _cli(argv: list[str]) -> int:
    """Run the subcommands through a parser of their own (independent of the main CLI's wiring)."""
    from onnxsplit.cost.cli import register

    parser = argparse.ArgumentParser(prog="onnxsplit")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_profile_smoke_writes_documented_csv(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    res = run_profile("host-x86", out, n_kernels=2, kernel_families=["elementwise", "pool"], include_models=False,
                      warmup=1, reps=3, rounds=1, max_seconds=0.05, precisions=("fp32",))
    assert res.path == out and not res.skipped
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        rows = list(reader)
    assert [r["kind"] for r in rows] == ["overhead", "kernel", "kernel"]
    import onnxsplit.profile as prof

    for col in CSV_COLUMNS:
        assert f"``{col}``" in (prof.__doc__ or ""), f"column {col} is documented"
    for r in rows:
        assert float(r["median_ms"]) > 0 and int(r["reps"]) >= 3 and r["target"] == "host-x86"
        g = graph_of_spec(r["spec"])  # the spec rebuilds the measured graph
        assert len(g.compute_nodes) >= 1
    parsed = read_profile_csv(out)
    assert isinstance(parsed[1]["median_ms"], float)


def test_int8_rows_name_their_quantization_scheme_and_the_fit_reports_it(tmp_path: Path) -> None:
    """int8 rows record profile.QDQ_SCHEME (fp32 rows leave it empty); an int8 fit's provenance
    counts the rows per scheme, rows of older files (no value) as 'unrecorded'."""
    from onnxsplit.cost.fit import fit_profile
    from onnxsplit.profile import QDQ_SCHEME

    out = tmp_path / "p.csv"
    run_profile("host-x86", out, n_kernels=3, kernel_families=["elementwise", "pool"], include_models=False,
                warmup=1, reps=3, rounds=1, max_seconds=0.05, precisions=("fp32", "int8"))
    rows = read_profile_csv(out)
    int8 = [r for r in rows if r["precision"] == "int8"]
    assert int8 and len(int8) < len(rows)
    assert {r["qdq_scheme"] for r in int8} == {QDQ_SCHEME}
    assert {r["qdq_scheme"] for r in rows if r["precision"] == "fp32"} == {""}
    m = fit_profile(rows, target="host-x86", precision="int8", holdout_fraction=0.0)
    assert m.provenance["qdq_scheme"] == f"{QDQ_SCHEME} ({len(int8)} rows)"
    int8[0]["qdq_scheme"] = ""
    m = fit_profile(rows, target="host-x86", precision="int8", holdout_fraction=0.0)
    assert m.provenance["qdq_scheme"] == f"{QDQ_SCHEME} ({len(int8) - 1} rows); unrecorded (1 rows)"
    assert "qdq_scheme" not in fit_profile(rows, target="host-x86", precision="fp32", holdout_fraction=0.0).provenance


def test_profile_refuses_other_isa_and_rpc(tmp_path: Path) -> None:
    import platform

    if platform.machine() in ("x86_64", "AMD64"):
        with pytest.raises(ProfileError, match="run `onnxsplit profile --target rpi4 -o rpi4.csv` on the device"):
            run_profile("rpi4", tmp_path / "x.csv", n_kernels=1)
    with pytest.raises(OnnxSplitError, match="--rpc needs --device-key"):  # TVM RPC: tests/test_profile_tvm.py
        _cli(["profile", "--target", "host-x86", "-o", str(tmp_path / "x.csv"), "--rpc", "localhost:9190"])


_PRIORITY_PROBE = """
import json, os
from pathlib import Path
from onnxsplit.profile import HighPriority

def group():
    try:
        return Path("/proc/self/autogroup").read_text().rsplit("nice", 1)[1].strip()
    except (OSError, IndexError):
        return None

os.setpriority(os.PRIO_PROCESS, 0, 3)
rec = {"before": os.getpriority(os.PRIO_PROCESS, 0), "group_before": group()}
with HighPriority(enabled=False) as off:
    rec["off_applied"] = off.applied
    rec["off_inside"] = os.getpriority(os.PRIO_PROCESS, 0)
with HighPriority() as on:
    rec["applied"] = on.applied
    rec["inside"] = os.getpriority(os.PRIO_PROCESS, 0)
    rec["group_inside"] = group()
rec["after"] = os.getpriority(os.PRIO_PROCESS, 0)
rec["group_after"] = group()
print(json.dumps(rec))
"""


def test_high_priority_is_public_and_restores_priority() -> None:
    """``profile.HighPriority`` raises the nice value (and autogroup nice) and restores both on exit.

    Runs in a child process in its own session: a non-root process could not undo a nice change,
    and the autogroup write then only touches the child's own session group.
    """
    import subprocess
    import sys

    import onnxsplit.profile as prof

    assert "HighPriority" in prof.__all__ and prof._HighPriority is prof.HighPriority
    proc = subprocess.run([sys.executable, "-c", _PRIORITY_PROBE], capture_output=True, text=True, timeout=60,
                          start_new_session=True, check=True)
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["before"] == 3
    assert rec["off_applied"] is False and rec["off_inside"] == 3  # enabled=False: no-op
    if rec["inside"] != 3:  # permitted here (root / CAP_SYS_NICE): raised while inside
        assert rec["applied"] and rec["inside"] == -20
    assert rec["after"] == 3, "process nice value restored on exit"
    assert rec["group_after"] == rec["group_before"], "autogroup nice restored on exit"


def test_profile_and_fit_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path = tmp_path / "data.csv"
    assert _cli(["profile", "--target", "host-x86", "-o", str(csv_path), "--kernels", "4", "--families",
                 "elementwise,reshape", "--no-models", "--reps", "3", "--rounds", "1", "--warmup", "1",
                 "--max-seconds", "0.05", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "family" in out and "wrote 5 rows" in out
    model_path = tmp_path / "m.json"
    assert _cli(["cost-model", "fit", str(csv_path), "--target", "host-x86", "-o", str(model_path), "--holdout", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "per-inference overhead" in out and str(model_path) in out
    m = CostModel.load(model_path)
    assert m.provenance["n_samples"] >= 4 and "elementwise" in m.families
    with pytest.raises(OnnxSplitError, match="exists; pass --force"):
        _cli(["cost-model", "fit", str(csv_path), "--target", "host-x86", "-o", str(model_path)])
    with pytest.raises(OnnxSplitError, match="no rows for target 'rpi4'"):
        _cli(["cost-model", "fit", str(csv_path), "--target", "rpi4", "-o", str(tmp_path / "r.json")])


def test_fit_cli_model_weight_and_models_only_change_what_is_fitted(tmp_path: Path) -> None:
    """``--models-only`` drops the kernel rows, ``--model-weight W`` reweighs the two kinds of rows,
    ``--robust`` refits with damped outliers; each is recorded in the provenance and change the fitted laws;
    ``--memory-floor-cache-mb`` [``--memory-floor-gbps``] stores a DRAM floor, ``--serial-data``
    [``--serial-below-us``] a serial law fitted on one-thread rows; bad values are refused."""
    from onnxsplit.profile import write_profile_csv

    base = {"target": "host-x86", "runtime": "ort-cpu", "precision": "fp32"}
    rows: list[dict] = []
    for i in range(6):  # one-kernel rows of a conv law 10x steeper than the models imply
        mflops = 5.0 * (i + 1)
        rows.append({**base, "kind": "kernel", "name": f"k{i}", "family": "conv", "median_ms": 0.01 * mflops + 0.002,
                     "mflops": mflops, "in_mb": 0.1, "out_mb": 0.1, "param_mb": 0.01})
    for seed in range(8):  # whole models: 1 ms per GFLOP plus 0.05 ms
        spec = {"gen": "net", "seed": seed, "v": 2}
        g = graph_of_spec(spec)
        gflops = sum(k.flops for k in group_kernels(g, "ort-cpu")) / 1e9
        rows.append({**base, "kind": "model", "name": f"net{seed}", "spec": json.dumps(spec),
                     "median_ms": 1.0 * gflops + 0.05})
    csv_path = write_profile_csv(rows, tmp_path / "data.csv")

    def fit(*extra: str) -> CostModel:
        out = tmp_path / f"m{len(list(tmp_path.iterdir()))}.json"
        assert _cli(["cost-model", "fit", str(csv_path), "--target", "host-x86", "-o", str(out), "--holdout", "0",
                     *extra]) == 0
        return CostModel.load(out)

    default, heavy, models = fit(), fit("--model-weight", "20"), fit("--models-only")
    assert default.provenance["n_kernel_samples"] == 6 and "model_weight" not in default.provenance
    assert heavy.provenance["model_weight"] == 20.0
    assert models.provenance["n_kernel_samples"] == 0 and "dropped (6 kernel" in models.provenance["kernel_rows"]
    conv = [m.families["conv"]["mflops"] for m in (default, heavy, models)]
    assert conv[0] > conv[1] > conv[2] * 0.999, conv  # the more the models weigh, the flatter the conv law
    with pytest.raises(OnnxSplitError, match="--model-weight must be > 0"):
        fit("--model-weight", "0")
    robust = fit("--robust", "slow", "--robust-c", "0.1")
    assert robust.provenance["robust_fit"]["mode"] == "slow" and robust.provenance["robust_fit"]["c"] == 0.1
    assert robust.provenance["robust_fit"]["rows"] == 6 + 8 and "robust_fit" not in default.provenance
    with pytest.raises(OnnxSplitError, match="--robust-c must be > 0"):
        fit("--robust", "slow", "--robust-c", "0")
    floor = fit("--memory-floor-cache-mb", "32")  # bandwidth of the target file (host-x86.toml)
    assert floor.memory_floor["dram_gbps"] == load_target("host-x86").mem_bandwidth_gbps
    measured = fit("--memory-floor-cache-mb", "32", "--memory-floor-gbps", "38.8")
    assert measured.memory_floor["dram_gbps"] == 38.8 and measured.memory_floor["cache_mb"] == 32.0
    assert "--memory-floor-gbps 38.8" in measured.memory_floor["source"] and default.memory_floor is None
    assert measured.families == floor.families  # the floor bounds predictions; it does not change the laws
    with pytest.raises(OnnxSplitError, match="--memory-floor-gbps needs --memory-floor-cache-mb"):
        fit("--memory-floor-gbps", "38.8")
    with pytest.raises(OnnxSplitError, match="--memory-floor-gbps must be > 0"):
        fit("--memory-floor-cache-mb", "32", "--memory-floor-gbps", "0")
    # --serial-data: a law fitted on one-thread rows (here 3x the conv law of the kernel rows), stored
    # with its threshold; the main laws are fitted as without it
    one_thread = write_profile_csv([{**r, "threads": 1, "median_ms": 3 * (0.01 * r["mflops"]) + 0.002}
                                    for r in rows if r["kind"] == "kernel"], tmp_path / "t1.csv")
    ser = fit("--serial-data", str(one_thread))
    assert ser.serial_kernels["below_ms"] == 0.005 and ser.serial_kernels["threads"] == 1
    assert ser.serial_kernels["families"]["conv"]["mflops"] == pytest.approx(0.03, rel=0.02)
    assert "t1.csv: 6 rows" in ser.serial_kernels["source"] and ser.families == default.families
    assert fit("--serial-data", str(one_thread), "--serial-below-us", "2").serial_kernels["below_ms"] == 0.002
    two_threads = write_profile_csv([{**r, "threads": 2} for r in rows if r["kind"] == "kernel"], tmp_path / "t2.csv")
    with pytest.raises(OnnxSplitError, match=r"--serial-data .*t2.csv: row .* threads=2; the serial law needs one-thread"):
        fit("--serial-data", str(two_threads))
    with pytest.raises(OnnxSplitError, match="--serial-below-us needs --serial-data"):
        fit("--serial-below-us", "5")
    with pytest.raises(OnnxSplitError, match="--serial-below-us must be > 0"):
        fit("--serial-data", str(one_thread), "--serial-below-us", "0")
    kernels_only = write_profile_csv([r for r in rows if r["kind"] == "kernel"], tmp_path / "k.csv")
    out = tmp_path / "kr.json"  # kernel rows alone (no whole models): the robust fit applies there too
    assert _cli(["cost-model", "fit", str(kernels_only), "--target", "host-x86", "-o", str(out), "--holdout", "0",
                 "--robust", "slow"]) == 0
    assert CostModel.load(out).provenance["robust_fit"]["rows"] == 6
    assert _cli(["cost-model", "fit", str(kernels_only), "--target", "host-x86", "-o", str(out), "--holdout", "0",
                 "--force", "--memory-floor-cache-mb", "32", "--serial-data", str(one_thread)]) == 0
    kr = CostModel.load(out)  # kernel rows alone keep the floor and the serial law as well
    assert kr.memory_floor["cache_mb"] == 32.0 and kr.serial_kernels["below_ms"] == 0.005
    with pytest.raises(OnnxSplitError, match="--models-only: the data has no whole-model rows"):
        _cli(["cost-model", "fit", str(kernels_only), "--target", "host-x86", "-o", str(tmp_path / "x.json"),
              "--models-only"])


def test_profile_redo_retimes_selected_rows_in_place(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--redo CSV --redo-op OP: exactly the rows of that precision whose graph has OP are timed again
    and replace the old rows in place (same order and names); every other row is copied unchanged."""
    from onnxsplit.profile import merge_profile_rows, redo_specs

    old = tmp_path / "old.csv"
    assert _cli(["profile", "--target", "host-x86", "-o", str(old), "--kernels", "4", "--families", "pool,elementwise",
                 "--no-models", "--reps", "3", "--rounds", "1", "--warmup", "1", "--max-seconds", "0.05", "--quiet",
                 "--seed", "1"]) == 0  # seed 1: one AveragePool among the 4 kernels
    capsys.readouterr()
    rows = read_profile_csv(old)
    avg = [r for r in rows if "AveragePool" in {n.op_type for n in graph_of_spec(r["spec"]).model.graph.node}]
    assert avg and len(avg) < len(rows), "the sample needs AveragePool rows and others"
    with open(old, newline="") as f:  # mark the old rows so that a re-timed row is recognisable
        text = f.read()
    marked = [dict(r) for r in csv.DictReader(text.splitlines())]
    for r in marked:
        r["median_ms"] = "123.0"
    with open(old, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(marked)
    new = tmp_path / "new.csv"
    assert _cli(["profile", "--target", "host-x86", "--redo", str(old), "--redo-op", "AveragePool", "-o", str(new),
                 "--reps", "3", "--rounds", "1", "--warmup", "1", "--max-seconds", "0.05", "--quiet"]) == 0
    assert f"re-timed {len(avg)} rows" in capsys.readouterr().out
    after = read_profile_csv(new)
    assert [(r["kind"], r["name"], r["spec"]) for r in after] == [(r["kind"], r["name"], r["spec"]) for r in rows]
    redone = {r["name"] for r in avg}
    for r in after:
        assert (r["median_ms"] != 123.0) == (r["name"] in redone), r["name"]
    assert redo_specs(rows, precision="int8") == []  # the CSV has fp32 rows only
    merged, n = merge_profile_rows(rows, [])
    assert n == 0 and len(merged) == len(rows)
    with pytest.raises(OnnxSplitError, match="--redo-op needs --redo"):
        _cli(["profile", "--target", "host-x86", "-o", str(new), "--redo-op", "AveragePool"])
    with pytest.raises(OnnxSplitError, match="no int8 row"):
        _cli(["profile", "--target", "host-x86", "--precision", "int8", "--redo", str(old), "-o", str(new)])


@pytest.mark.slow
def test_host_model_predicts_fresh_measurements() -> None:
    """Re-measure two zoo models here and compare with the committed host-x86 model (loose bound)."""
    from onnxsplit.profile import measure_model

    for name in ("resnet", "tiny_cnn"):
        model = zoo.ZOO[name]()
        table = predict(onnxsplit.load_graph(model), "host-x86")
        t = measure_model(model, reps=50, max_seconds=2.0)
        assert 0.33 < table.total_ms / t.min_ms < 3.0, (name, table.total_ms, t.min_ms)


def test_fit_profile_provenance_names_the_tvm_build() -> None:
    """Rows of `profile --runtime tvm` carry the TVM version and target; the fitted model keeps them."""
    from onnxsplit.cost.fit import fit_profile

    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        mf, mb = float(rng.uniform(1, 50)), float(rng.uniform(0.1, 2))
        rows.append({"kind": "kernel", "name": f"k{i}", "spec": "", "family": "gemm", "target": "host-x86",
                     "runtime": "tvm", "precision": "fp32", "median_ms": 0.01 * mf + 0.05 * mb + 0.002,
                     "mflops": mf, "in_mb": mb, "out_mb": mb / 2, "param_mb": 0.0, "tvm": "0.27.0",
                     "tvm_target": '{"kind": "llvm"}'})
    m = fit_profile(rows, target="host-x86", runtime="tvm", holdout_fraction=0.2)
    assert m.provenance["tvm"] == "0.27.0"
    assert m.provenance["tvm_target"] == '{"kind": "llvm"}'
    ort_rows = [{**r, "runtime": "ort-cpu", "tvm": "", "tvm_target": ""} for r in rows]
    assert "tvm" not in fit_profile(ort_rows, target="host-x86", holdout_fraction=0.2).provenance


def test_subfamilies_fall_back_to_their_parent_law() -> None:
    """transcendental/lrn kernels get their own law when a model has one, else the parent's (never 0)."""
    from onnxsplit.cost.kernels import resolve_family

    g = onnxsplit.load_graph(zoo.transformer_encoder())
    ks = group_kernels(g)
    gelu = next(k for k in ks if k.fused_pattern == "gelu")
    add = next(k for k in ks if k.op_types == ("Add",))
    assert gelu.family == "transcendental" and add.family == "elementwise"
    assert gelu.signature.startswith("elementwise")  # configurations keep the parent's name
    law = dict.fromkeys(FEATURES, 0.001)
    parent_only = CostModel(target="host-x86", runtime="ort-cpu", precision="fp32", version="t", features=FEATURES,
                            families={"elementwise": law}, overhead_ms=0.0)
    assert resolve_family(parent_only.families, "transcendental") == "elementwise"
    assert parent_only.predict_kernel(gelu) == pytest.approx(parent_only.predict_features("elementwise", gelu.features))
    both = copy.deepcopy(parent_only)
    both.families["transcendental"] = {**law, "one": 0.5}
    assert both.predict_kernel(gelu) == pytest.approx(parent_only.predict_kernel(gelu) + 0.499)
    assert both.predict_kernel(add) == parent_only.predict_kernel(add)
    assert resolve_family({"conv": law}, "transcendental") is None and resolve_family({"norm": law}, "lrn") == "norm"


def test_quantize_qdq_handles_old_models() -> None:
    """IR-3/opset-9 models (initializers listed as graph inputs, Dropout) quantize as the product does:
    the ONNX Model Zoo SqueezeNet shipped in the onnx wheel failed before (missing inputs / Dropout type)."""
    ort = pytest.importorskip("onnxruntime")
    from onnxsplit.profile import quantize_qdq

    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not in this onnx wheel")
    m = onnx.load(str(path))
    assert m.ir_version < 4 and any(i.name in {t.name for t in m.graph.initializer} for i in m.graph.input)
    assert any(n.op_type == "Dropout" for n in m.graph.node)
    q = quantize_qdq(m)
    ops = [n.op_type for n in q.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "Dropout" not in ops
    assert next(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) >= 13
    name = next(i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer})
    feed = {name: np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [name]  # nothing else to feed
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = sess.run(None, feed)[0]
    assert got.shape == ref.shape and np.isfinite(got).all()


def test_cost_model_show_names_the_floor_and_the_serial_law(capsys: pytest.CaptureFixture) -> None:
    """`cost-model show` says what bounds and overrides the laws of the shipped host-x86 fp32 model."""
    assert _cli(["cost-model", "show", "--target", "host-x86", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "memory floor: a kernel whose bytes exceed 32 MB takes at least bytes / 38.8 GB/s" in out
    assert "serial law (1 thread(s)" in out and "prices below 5 us" in out and "1thread.csv" in out
