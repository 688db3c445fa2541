"""tools/help_latency.py: NAS-Bench-201 / FBNet rebuilt as ONNX, and the HELP latency dataset.

Data-dependent tests read ``<repo>/../shared/data/help-latency`` (or ``$ONNXSPLIT_HELP_LATENCY_DIR``)
and skip when it is absent.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxsplit

_TOOL = Path(__file__).resolve().parent.parent / "tools" / "help_latency.py"
_spec = importlib.util.spec_from_file_location("help_latency", _TOOL)
H = importlib.util.module_from_spec(_spec)
sys.modules["help_latency"] = H
_spec.loader.exec_module(H)

ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
DEGENERATE = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|none~2|"
# node 1 = conv3x3(node 0) feeds only `none` edges: dead under "prune", computed under "mul0"
DEAD_CONV = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|"
# node 1 is zero (its only input edge is none); the 1x1 conv reading it is dropped under "prune"
ZERO_SOURCE = "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|none~1|skip_connect~2|"

# layer 1 is `skip` with a channel change (16 -> 24: Conv1x1+BN+ReLU); layers 2 and 21 are g2 blocks
FBNET_ARCH = (
    "k5_e6 skip k3_e1_g2 skip k5_e1 skip skip skip k5_e6 k5_e1 k3_e1_g2 k5_e1 k5_e6 k3_e6 k3_e3 "
    "k5_e6 k3_e6 k3_e3 k5_e1 k3_e3 k5_e1 k5_e1_g2"
)

# hand-computed MACs (see nb201_macs' docstring): fixed part + 15 cells
NB201_FIXED = 3 * 16 * 9 * 1024 + 2 * (16 * 32 * 9 * 256 + 32 * 32 * 9 * 256 + 16 * 32 * 256) + 640
CONV3_CELL_EDGE = 16 * 16 * 9 * 1024  # = 2,359,296 in every stage
CONV1_CELL_EDGE = 16 * 16 * 1024  # = 262,144


def _run(model: onnx.ModelProto) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    (y,) = sess.run(None, {"input": x})
    return y


def _check(model: onnx.ModelProto, classes: int) -> onnxsplit.Graph:
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    y = _run(model)
    assert y.shape == (1, classes) and y.dtype == np.float32 and np.isfinite(y).all()
    g = onnxsplit.load_graph(model)
    assert g.tensor("input").shape == (1, 3, 32, 32)
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == len(names) and all(names)
    return g


def test_nb201_macs_hand_computed():
    assert NB201_FIXED == 7_783_040
    assert H.nb201_macs(ALL_CONV3) == NB201_FIXED + 15 * 6 * CONV3_CELL_EDGE == 220_119_680
    assert H.nb201_macs(ARCH0) == NB201_FIXED + 15 * 2 * CONV1_CELL_EDGE == 15_647_360
    g = _check(H.nasbench201_onnx(ALL_CONV3), 10)
    assert g.total_macs == 220_119_680  # the largest arch of the space (~220 M)
    assert _check(H.nasbench201_onnx(ARCH0), 10).total_macs == 15_647_360


@pytest.mark.parametrize("mode", ["prune", "mul0"])
@pytest.mark.parametrize("arch", [ARCH0, DEGENERATE, DEAD_CONV, ZERO_SOURCE])
def test_nb201_valid(arch, mode):
    m = H.nasbench201_onnx(arch, none_mode=mode)
    g = _check(m, 10)
    assert g.total_macs == H.nb201_macs(arch, mode)
    ops = {n.op_type for n in m.graph.node}
    assert "BatchNormalization" in ops
    if mode == "prune":
        assert "Mul" not in ops or H.nb201_is_degenerate(arch)


def test_nb201_none_semantics():
    assert H.nb201_is_degenerate(DEGENERATE)
    assert not any(H.nb201_is_degenerate(a) for a in (ALL_CONV3, ARCH0, DEAD_CONV, ZERO_SOURCE))
    assert H.nb201_is_degenerate("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|")
    # dead conv: nothing but the fixed part under prune; computed (with Mul-by-0 edges) under mul0
    assert H.nb201_macs(DEAD_CONV, "prune") == NB201_FIXED
    assert H.nb201_macs(DEAD_CONV, "mul0") == NB201_FIXED + 15 * CONV3_CELL_EDGE
    # a conv reading a zero node contributes nothing
    assert H.nb201_macs(ZERO_SOURCE, "prune") == NB201_FIXED + 15 * CONV3_CELL_EDGE
    assert H.nb201_macs(ZERO_SOURCE, "mul0") == NB201_FIXED + 15 * (CONV3_CELL_EDGE + CONV1_CELL_EDGE)
    # degenerate under prune: each cell is x*0 (valid model, output independent of the input)
    m = H.nasbench201_onnx(DEGENERATE)
    assert sum(n.op_type == "Mul" for n in m.graph.node) == 15
    # a cell that is an identity keeps a named node
    m = H.nasbench201_onnx(DEAD_CONV)
    assert sum(n.op_type == "Identity" for n in m.graph.node) == 15
    with pytest.raises(ValueError):
        H.nasbench201_onnx("|nor_conv_3x3~0|+|nor_conv_3x3~0|")
    with pytest.raises(ValueError):
        H.nasbench201_onnx(ARCH0.replace("avg_pool_3x3", "max_pool_3x3"))


def test_nb201_conv_bn_relu_structure():
    m = H.nasbench201_onnx(ARCH0)
    by_out = {o: n for n in m.graph.node for o in n.output}
    bn = next(n for n in m.graph.node if n.name == "cell0.n2.e0.conv1x1.bn")
    conv = by_out[bn.input[0]]
    relu = by_out[conv.input[0]]
    assert (relu.op_type, conv.op_type, bn.op_type) == ("Relu", "Conv", "BatchNormalization")
    assert len(conv.input) == 2  # no bias
    pool = next(n for n in m.graph.node if n.name == "cell0.n1.e0.avgpool3x3")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}
    assert attrs["count_include_pad"] == 0 and attrs["kernel_shape"] == [3, 3]


def test_fbnet_valid_and_macs():
    m = H.fbnet_onnx(FBNET_ARCH)
    g = _check(m, 100)
    assert g.total_macs == H.fbnet_macs(FBNET_ARCH) == 67_605_376
    names = {n.name: n for n in m.graph.node}
    # skip with channel change 16 -> 24 at stride 1: Conv1x1 + BN + ReLU
    assert {"layer1.skip.conv", "layer1.skip.bn", "layer1.skip.relu"} <= set(names)
    assert g.tensor("layer1.skip.relu.out").shape == (1, 24, 32, 32)
    # skip with equal channels: identity, no node
    assert not any(n.startswith("layer3.") for n in names)
    # g2 block: grouped 1x1 convs and a channel shuffle
    for layer in ("layer2", "layer21"):
        assert names[f"{layer}.pw1.conv"].attribute and any(
            a.name == "group" and a.i == 2 for a in names[f"{layer}.pw1.conv"].attribute
        )
        assert [names[f"{layer}.shuffle.{s}"].op_type for s in ("reshape1", "transpose", "reshape2")] == [
            "Reshape", "Transpose", "Reshape"
        ]
    assert g.tensor("layer2.shuffle.reshape1.out").shape == (1, 2, 12, 32, 32)
    # residual add only when cin == cout and stride 1
    assert "layer0.add" in names and "layer4.add" in names and "layer10.add" in names
    assert "layer9.add" not in names  # first layer of a stage (32 -> 64, stride 2)


def test_fbnet_all_skip_macs():
    ops = ["skip"] * 22
    # stem + the six channel-changing skip convs + header + fc
    hand = (3 * 16 * 9 * 1024 + 16 * 24 * 1024 + 24 * 32 * 256 + 32 * 64 * 64 + 64 * 112 * 64
            + 112 * 184 * 16 + 184 * 352 * 16 + 352 * 1504 * 16 + 1504 * 100)
    assert hand == 11_608_960
    assert _check(H.fbnet_onnx(ops), 100).total_macs == hand == H.fbnet_macs(ops)
    with pytest.raises(ValueError):
        H.fbnet_onnx(["skip"] * 21)


def test_builders_deterministic():
    assert H.nasbench201_onnx(ARCH0).SerializeToString() == H.nasbench201_onnx(ARCH0).SerializeToString()
    assert H.fbnet_onnx(["k3_e1"] * 22).SerializeToString() == H.fbnet_onnx(["k3_e1"] * 22).SerializeToString()


def test_split_deterministic():
    assert H.split_of("nb201:" + ARCH0) == H.split_of("nb201:" + ARCH0)
    fr = np.mean([H.split_of(f"x{i}") == "holdout" for i in range(4000)])
    assert 0.17 < fr < 0.23


# ------------------------------------------------------------------------ data-dependent
needs_data = pytest.mark.skipif(
    not H.data_available(), reason=f"help-latency data not found at {H.data_dir()} (set {H.ENV_DIR})"
)


@needs_data
def test_read_nb201():
    samples, dropped = H.read_space("nb201", "raspi4")
    assert len(samples) + dropped == 15_625
    assert 200 < dropped < 500  # degenerate archs
    s0 = next(s for s in samples if s.index == 0)
    assert s0.arch == ARCH0 and s0.latency_ms == pytest.approx(10.482) and s0.model_id == "nb201-00000"
    n_hold = sum(s.split == "holdout" for s in samples)
    assert 0.17 < n_hold / len(samples) < 0.23


@needs_data
def test_dataset_cli(tmp_path):
    assert H.main(["dataset", "--space", "fbnet", "--device", "titan_rtx_1", "--limit", "3",
                   "--cache", str(tmp_path), "--write-models"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "fbnet" / "titan_rtx_1.csv")))
    assert len(rows) == 3 and {r["device"] for r in rows} == {"titan_rtx_1"}
    m = onnx.load(rows[0]["model_file"])
    assert m.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 100
    assert float(rows[0]["latency_ms"]) > 0 and rows[0]["split"] in ("train", "holdout")


def test_fast_ir_equals_load_graph():
    """``build_graph`` (weightless skeleton + shape inference) gives the IR of load_graph(full model)."""

    def sig(g):
        nodes = [(n.name, n.op_type, n.inputs, n.outputs, n.cost, n.param_nbytes, n.output_nbytes) for n in g.nodes]
        tensors = {k: (t.shape, t.dtype, t.kind, tuple(t.consumers)) for k, t in g.tensors.items()}
        return nodes, tensors, g.total_macs, g.param_nbytes

    cases = [("nb201", ZERO_SOURCE, "prune"), ("nb201", DEAD_CONV, "mul0"), ("fbnet", FBNET_ARCH, "prune")]
    for space, arch, mode in cases:
        s = H.Sample("x", space, 0, arch, 1.0, "train")
        assert sig(H.build_graph(s, mode)) == sig(H.build_graph(s, mode, fast=False))


@needs_data
def test_fit_smoke(capsys):
    pytest.importorskip("onnxsplit.cost.fit")
    assert H.main(["fit", "--device", "titan_rtx_1", "--samples", "40", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "holdout" in out and "nb201" in out and "fbnet" in out
