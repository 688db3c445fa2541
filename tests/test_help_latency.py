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


@needs_data
def test_transfer_writes_uncalibrated_models_for_unmeasured_gpus(tmp_path, capsys):
    from onnxsplit.cost import CostModel

    assert H.main(["transfer", "--samples", "40", "--targets", "jetson-orin-nano", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "leave-one-GPU-out" in out and all(name in out for name, _, _ in H.HELP_GPUS.values())
    files = sorted(p.name for p in (tmp_path / "jetson-orin-nano").glob("*.json"))
    assert files == [f"{rt}-{p}.json" for rt in ("ort-cuda", "ort-trt") for p in ("fp16", "fp32", "int8")]
    m = CostModel.load(tmp_path / "jetson-orin-nano" / "ort-trt-fp32.json")
    assert m.calibrated is False and set(m.accuracy["leave_one_gpu_out"]) == set(H.HELP_GPUS)
    assert m.provenance["license"].startswith("MIT") and "HELP" in m.provenance["source"]


# ------------------------------------------------------------------------ tools/eval_cost_model.py
_EVAL = Path(__file__).resolve().parent.parent / "tools" / "eval_cost_model.py"
_espec = importlib.util.spec_from_file_location("eval_cost_model", _EVAL)
E = importlib.util.module_from_spec(_espec)
sys.modules["eval_cost_model"] = E
_espec.loader.exec_module(E)


def test_eval_help_runs():
    import subprocess

    out = subprocess.run([sys.executable, str(_EVAL), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--samples" in out.stdout and "within" in out.stdout.lower() + "within"


def test_eval_metrics():
    rows = [{"name": "a", "measured_ms": 10.0, "predicted_ms": 10.5},
            {"name": "b", "measured_ms": 10.0, "predicted_ms": 12.0},
            {"name": "c", "measured_ms": 4.0, "predicted_ms": 3.8}]
    m = E.metrics(rows)
    assert m["n"] == 3 and m["within_10_pct"] == pytest.approx(200 / 3, abs=0.01)
    assert m["mape_pct"] == pytest.approx((5 + 20 + 5) / 3, abs=1e-3) and m["median_ape_pct"] == pytest.approx(5.0)
    assert m["max_ape_pct"] == pytest.approx(20.0) and m["worst"] == "b"
    assert E.metrics([])["n"] == 0


def _synthetic_help_dir(tmp_path: Path, n_per_space: int = 12) -> tuple[Path, dict[str, str]]:
    """A HELP-shaped data folder with synthetic latencies (no ../shared needed): train archs get an
    absurd latency (1e6 ms), so an evaluation that used one would show it as the worst case."""
    rng = np.random.default_rng(5)
    tmp_path.mkdir(parents=True, exist_ok=True)
    split: dict[str, str] = {}
    rows = {"nb201": [], "fbnet": []}
    while min(len(v) for v in rows.values()) < n_per_space:
        arch = "|" + "|+|".join("|".join(f"{H.NB201_OPS[int(rng.integers(1, 5))]}~{j}" for j in range(t))
                                for t in (1, 2, 3)) + "|"
        ops = " ".join(H.FBNET_BLOCKS[int(rng.integers(len(H.FBNET_BLOCKS)))] for _ in H.fbnet_layers())
        for space, a in (("nb201", arch), ("fbnet", ops)):
            if len(rows[space]) < n_per_space and a not in [r[1] for r in rows[space]]:
                sp = H.split_of(f"{space}:{a}")
                idx = len(rows[space])
                split[f"{space}-{idx}"] = sp
                rows[space].append((idx, a, 1e6 if sp == "train" else 5.0 + idx))
    for fname, key, space in ((H.NB201_CSV, "arch", "nb201"), (H.FBNET_CSV, "ops", "fbnet")):
        with open(tmp_path / fname, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", key, "raspi4"])
            w.writerows(rows[space])
    return tmp_path, split


def test_eval_tiny_run_on_synthetic_help_data(tmp_path, capsys):
    from onnxsplit.cost import FEATURES, CostModel

    data, split = _synthetic_help_dir(tmp_path / "data")
    assert "holdout" in split.values() and "train" in split.values()
    cm = CostModel(target="rpi4", runtime="ort-cpu", precision="fp32", version="1", features=FEATURES,
                   families={f: dict.fromkeys(FEATURES, 0.001) for f in
                             ("conv", "conv_pw", "conv_dw", "pool", "elementwise", "gemm", "reshape", "norm",
                              "data_movement")},
                   overhead_ms=0.1,
                   provenance={"source": "synthetic", "license": "CC0-1.0", "citation": "", "n_samples": 1,
                               "date": "2024-01-01", "device_column": "raspi4", "nb201_none_mode": "prune",
                               "fusion_rules": "ort-cpu"},
                   accuracy={"holdout": {"n": 0, "mape_pct": None, "median_ape_pct": None, "spearman": None}})
    cm.save(tmp_path / "models" / "rpi4" / "ort-cpu-fp32.json")
    rc = E.main(["--cost-models", str(tmp_path / "models"), "--help-dir", str(data), "--samples", "0",
                 "--json", "--quiet"])
    assert rc == 0
    import json

    (res,) = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in res["models"]["all"]]
    n_hold = sum(v == "holdout" for v in split.values())
    assert res["metrics"]["all"]["n"] == n_hold == len(names)
    assert all(r["measured_ms"] < 1e5 for r in res["models"]["all"])  # no train arch evaluated
    assert res["metrics"]["nb201"]["n"] + res["metrics"]["fbnet"]["n"] == n_hold
    # the table renders the same numbers
    rc = E.main(["--cost-models", str(tmp_path / "models"), "--help-dir", str(data), "--samples", "4", "--quiet"])
    table = capsys.readouterr().out
    assert rc == 0 and "| rpi4 | ort-cpu-fp32 | all | 4 |" in table


def _host_cost_model(d: Path):  # noqa: ANN202
    """A saved host-x86 fp32 cost model fitted (nominally) on ``d/train.csv``."""
    from onnxsplit.cost import FEATURES, CostModel

    cm = CostModel(target="host-x86", runtime="ort-cpu", precision="fp32", version="1", features=FEATURES,
                   families={"conv": dict.fromkeys(FEATURES, 0.001)}, overhead_ms=0.01,
                   provenance={"source": "t", "license": "CC0-1.0", "citation": "", "n_samples": 1,
                               "date": "2024-01-01", "data_files": ["train.csv"]},
                   accuracy={"holdout": {"n": 0, "mape_pct": None, "median_ape_pct": None, "spearman": None}})
    return CostModel.load(cm.save(d / "ort-cpu-fp32.json"))


def test_eval_refuses_heldout_model_used_in_fitting(tmp_path):
    """The host-x86 evaluation aborts if a held-out model's structure matches a training model row."""
    from onnxsplit.profile import CSV_COLUMNS, graph_of_spec

    spec = {"gen": "zoo", "name": "tiny_cnn"}
    g = graph_of_spec(spec)
    d = tmp_path / "host-x86"
    d.mkdir()
    import json

    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update(kind="model", name="zoo:tiny_cnn", spec=json.dumps(spec), target="host-x86", runtime="ort-cpu",
               precision="fp32", median_ms="0.05")
    with open(d / "train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerow(row)
    cm = _host_cost_model(d)
    fps, names = E.training_fingerprints(cm)
    assert E.fingerprint(g) in fps and names == {"zoo:tiny_cnn"}
    from onnxsplit import zoo

    E_held = E.HeldOut("tiny again", "generated", lambda: zoo.tiny_cnn())
    orig = E.host_models
    E.host_models = lambda which: ([E_held], [])
    try:
        with pytest.raises(SystemExit, match="were used in fitting"):
            E.eval_host([cm], which="quick", rounds=1, reps=3, cache_dir=tmp_path / "cache", remeasure=True,
                        say=lambda s: None, tolerance=0)
    finally:
        E.host_models = orig


def test_eval_host_spreads_each_models_rounds_over_the_run(tmp_path, monkeypatch):
    """Round r of every held-out model is timed before round r + 1 of any (as `onnxsplit profile`
    does), each model keeps its lowest round, and cache keys carry the protocol."""
    import json

    from onnxsplit import zoo
    from onnxsplit.profile import CSV_COLUMNS

    d = tmp_path / "host-x86"
    d.mkdir()
    with open(d / "train.csv", "w", newline="") as f:
        csv.DictWriter(f, fieldnames=CSV_COLUMNS).writeheader()  # no model rows: nothing can clash
    cm = _host_cost_model(d)
    a, b = zoo.tiny_cnn(), zoo.resnet_like()
    held = [E.HeldOut("A", "generated", lambda: a), E.HeldOut("B", "generated", lambda: b)]
    monkeypatch.setattr(E, "host_models", lambda which: (held, []))
    order = []
    times = {"A": iter([3.0, 1.0, 2.0]), "B": iter([5.0, 6.0, 4.0])}

    def fake_measure(proto, *, rounds, reps, threads):
        name = "A" if proto is a else "B"
        assert rounds == 1
        order.append(name)
        return next(times[name])

    monkeypatch.setattr(E, "measure", fake_measure)
    (res,) = E.eval_host([cm], which="quick", rounds=3, reps=3, cache_dir=tmp_path / "cache", remeasure=True,
                         say=lambda s: None, tolerance=0, high_priority=False)
    assert order == ["A", "B", "A", "B", "A", "B"]
    assert {r["name"]: r["measured_ms"] for r in res.groups["all"]} == {"A": 1.0, "B": 4.0}
    cache = json.loads(next((tmp_path / "cache").glob("*.json")).read_text())
    assert cache and all(k.endswith(f"|{E.PROTOCOL}") for k in cache)
